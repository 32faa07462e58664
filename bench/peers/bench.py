#!/usr/bin/env python3
"""Peer benchmark: training-step time of the five nnc benchmark models in
nnc, PyTorch eager, torch.compile and jax.jit on the CPU, at a chosen thread count.

  /work/venv-peers/bin/python bench/peers/bench.py --threads 1,2 --nice -15 --json out.json
  /work/venv-peers/bin/python bench/report.py out.json     # Markdown for BENCHMARKS.md

Each (variant, thread count) runs in a fresh subprocess, because the thread
settings must be in place before torch / jax is imported:
  * CPU affinity of the worker restricted to N cores (os.sched_setaffinity, the
    same as `taskset`), inherited by every thread the frameworks start;
  * OMP_NUM_THREADS, MKL_NUM_THREADS, OPENBLAS_NUM_THREADS = N;
  * torch.set_num_threads(N), torch.set_num_interop_threads(N);
    TORCHINDUCTOR_COMPILE_THREADS = N (compile time on the same N cores);
  * XLA: its CPU thread pools are sized from the affinity mask; with N = 1 also
    XLA_FLAGS=--xla_cpu_multi_thread_eigen=false (single-threaded Eigen kernels).
The measured CPU utilisation (process CPU time / wall time during the timed
loop) is reported as a check that the limit holds: it can't exceed N.

The "nnc" variant (run first at each thread count) gets the same worker process,
affinity and nice value, but imports neither torch nor jax: per model it runs
`nnc bench bench/models/<model>.nn --threads N --batch B --json` as a child process
(which inherits the affinity, the nice value and the autogroup), first a 10-step
probe to estimate the step time, then the measured run with the number of steps
chosen like the peers' loop: at least --steps and --min-time seconds, at most
--max-time seconds (never fewer than 5 steps).  Its compile_ms is nnc's own
measurement of compilation alone (autodiff + scheduling + Cranelift codegen, no
step); its cpu_util is the child's CPU time (getrusage) over its wall time, for the
whole run (compilation, warm-up and a ~40 ms FMA-peak probe included).  The binary
is target/release/nnc, built with `cargo build --release` before the run if it is
missing or --build is given; --nnc PATH uses another binary instead.

Per (model, variant, threads) the worker measures
  compile_ms  wall time of the very first training step (tracing + compilation
              + one execution; for eager, the first step with its one-off
              allocations and optimizer-state creation),
  then runs warm-up steps (untimed; torch.compile may recompile once here, when the
  optimizer state exists), then times single steps until at least --steps steps
  AND --min-time seconds have been measured, stopping early at --max-time seconds
  (but never fewer than 5 steps), and reports median / min / max / mean ms per step.
Before the timed loop the Python garbage is collected and frozen (gc.freeze), so that
a full collection over the compilers' leftovers does not land in a timed step.
A step is: zero grads, forward, softmax cross-entropy, backward, Adam update
(lr 1e-3), with JAX's result waited for (block_until_ready) inside the timing.
The batch is one fixed, seeded random batch (no data loading in the timing).

Output: one JSON object per line per (model, variant, threads) on stdout (and
into --json FILE), then a readable table and a pivot of the medians with, per
thread count, nnc's median over the best peer's (nnc/best; nnc is never the best
peer).  bench/report.py turns the JSON lines into Markdown.  A variant that fails (import error,
compile error, crash, timeout) yields a line with "status": "error" and the
rest continue.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent  # the nnc repository
VARIANTS = ["nnc", "torch-eager", "torch-compile", "jax-jit"]
NNC_PROBE_STEPS = 10
MARK = "@@RESULT "  # prefix of the worker's result lines


# ----------------------------------------------------------------------------
# worker (one variant, one thread count, several models), in its own process
# ----------------------------------------------------------------------------

def thread_env(threads: int) -> dict:
    env = {
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "OPENBLAS_NUM_THREADS": str(threads),
        "TORCHINDUCTOR_COMPILE_THREADS": str(threads),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    flags = os.environ.get("XLA_FLAGS", "")
    if threads == 1 and "--xla_cpu_multi_thread_eigen" not in flags:
        flags = (flags + " --xla_cpu_multi_thread_eigen=false").strip()
    if flags:
        env["XLA_FLAGS"] = flags
    return env


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or the platform's guess)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def nnc_meta(args) -> dict:
    """Which nnc binary ran: path, `nnc --version`, build time, the repository's commit."""
    meta = {"nnc_binary": args.nnc}
    try:
        meta["nnc"] = subprocess.run([args.nnc, "--version"], capture_output=True, text=True,
                                     timeout=30).stdout.strip().removeprefix("nnc ")
        meta["nnc_built"] = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(os.stat(args.nnc).st_mtime))
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        meta["nnc_commit"] = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                                            capture_output=True, text=True, timeout=30).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    return meta


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def nnc_bench(model: str, threads: int, batch: int, steps: int, args):
    """Runs `nnc bench ... --json` once; returns (its JSON, child CPU s, child wall s)."""
    import resource

    src = Path(args.nnc_models) / f"{model}.nn"
    cmd = [args.nnc, "bench", str(src), "--threads", str(threads), "--batch", str(batch),
           "--steps", str(steps), "--warmup", str(args.warmup), "--json"]
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    w0 = time.perf_counter()
    # The child inherits this worker's affinity, nice value and autogroup.
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"nnc bench --steps {steps} killed after --timeout {args.timeout:g} s") from None
    wall = time.perf_counter() - w0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    if p.returncode != 0:
        lines = [ln for ln in (p.stderr + "\n" + p.stdout).splitlines() if ln.strip()]
        raise RuntimeError(f"nnc bench exited with {p.returncode}: " + (lines[-1] if lines else "no output"))
    js = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if not js:
        raise RuntimeError("nnc bench printed no JSON line: " + p.stdout.strip()[-200:])
    return json.loads(js[-1]), cpu, wall


def nnc_steps(step_s: float, args) -> int:
    """Timed steps for a step of `step_s` seconds, the peers' stopping rule in advance:
    at least --steps and --min-time s, at most --max-time s, never fewer than 5."""
    step_s = max(step_s, 1e-7)
    n = max(args.steps, math.ceil(args.min_time / step_s))
    return max(5, min(n, int(args.max_time / step_s)))


def run_nnc(model: str, threads: int, args) -> dict:
    import models as M  # numpy only, no framework

    batch = M.SPECS[model].batch
    rec = {"model": model, "variant": "nnc", "threads": threads, "batch": batch}
    probe, _, _ = nnc_bench(model, threads, batch, NNC_PROBE_STEPS, args)
    rec["probe_median_ms"] = probe["median_ms"]
    rec["probe_compile_ms"] = probe["compile_ms"]
    steps = nnc_steps(probe["median_ms"] / 1e3, args)
    rec["loadavg_before"] = os.getloadavg()[0]
    out, cpu, wall = nnc_bench(model, threads, batch, steps, args)
    rec["loadavg_after"] = os.getloadavg()[0]
    if out.get("batch", batch) != batch or out.get("threads", threads) != threads:
        raise RuntimeError(f"nnc bench ran batch {out.get('batch')} threads {out.get('threads')}, "
                           f"asked for {batch} / {threads}")
    rec.update(compile_ms=out["compile_ms"], median_ms=out["median_ms"], min_ms=out["min_ms"],
               max_ms=out["max_ms"], steps=out.get("steps", steps))
    for k in ("gflops", "peak_fraction", "memory_bytes", "naive_bytes"):
        rec[k] = out.get(k)
    # Over the child's whole run: compilation, warm-up, timed steps, FMA-peak probe.
    rec["cpu_util"] = round(cpu / wall, 2) if wall > 0 else None
    rec["child_cpu_s"] = round(cpu, 3)
    rec["child_wall_s"] = round(wall, 3)
    return rec


def run_model(model: str, variant: str, threads: int, args) -> dict:
    if variant == "nnc":
        return run_nnc(model, threads, args)
    import models as M

    rec = {"model": model, "variant": variant, "threads": threads, "batch": M.SPECS[model].batch}
    if variant.startswith("torch"):
        import torch

        step, x, y, mod = M.torch_setup(model, compiled=(variant == "torch-compile"),
                                        seed=args.seed, adam_impl=args.torch_adam)
        rec["params"] = M.count_params_torch(mod)

        def one():
            return step(x, y)

        def value(loss):
            return float(loss.detach())
    else:
        import jax

        jstep, state, x, y = M.jax_setup(model, seed=args.seed)
        rec["params"] = M.count_params_jax(state[0])
        box = list(state)

        def one():
            p, o, loss = jstep(box[0], box[1], x, y)
            jax.block_until_ready((p, o, loss))
            box[0], box[1] = p, o
            return loss

        def value(loss):
            return float(loss)

    t0 = time.perf_counter()
    loss = one()
    rec["compile_ms"] = (time.perf_counter() - t0) * 1e3
    rec["loss_first"] = value(loss)

    warm = []
    for _ in range(args.warmup):
        t0 = time.perf_counter()
        one()
        warm.append((time.perf_counter() - t0) * 1e3)
    # A recompilation after the first step (torch.compile, once the optimizer state exists)
    # shows up here as one slow warm-up step.
    rec["warmup_max_ms"] = max(warm) if warm else None
    rec["loadavg_before"] = os.getloadavg()[0]
    # Compilation leaves ~10^6 Python objects behind (torch.compile's graphs and guards);
    # a full GC pass over them takes ~0.6 s and would land in some timed step. Collect
    # now and freeze the survivors so that only the steps' own garbage is collected.
    gc.collect()
    gc.freeze()

    times = []
    c0, w0 = cpu_seconds(), time.perf_counter()
    while True:
        t0 = time.perf_counter()
        loss = one()
        times.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - w0
        if len(times) >= args.steps and elapsed >= args.min_time:
            break
        if elapsed >= args.max_time and len(times) >= 5:
            break
    wall = time.perf_counter() - w0
    rec["cpu_util"] = round((cpu_seconds() - c0) / wall, 2)
    rec["loadavg_after"] = os.getloadavg()[0]
    rec["loss_last"] = value(loss)
    ms = [t * 1e3 for t in times]
    rec.update(steps=len(ms), median_ms=statistics.median(ms), min_ms=min(ms), max_ms=max(ms),
               mean_ms=statistics.fmean(ms))
    rec["os_threads"] = len(os.listdir("/proc/self/task"))
    if variant == "torch-eager":
        # After the timing: the profiler's hooks must not slow the timed steps.
        rec["memory"] = M.torch_training_memory(step, x, y)
    return rec


def worker(args):
    threads = args.threads[0]
    variant = args.variants[0]
    # Affinity first: every thread started later (OpenMP, Eigen, XLA pools) inherits it.
    allowed = sorted(os.sched_getaffinity(0))
    cores = allowed[:threads]
    os.sched_setaffinity(0, cores)
    if args.nice:
        # Scheduling priority for the worker and every thread it starts (they inherit it).
        os.setpriority(os.PRIO_PROCESS, 0, args.nice)
        # With CFS autogroups (sched_autogroup_enabled=1) nice only ranks threads inside
        # one session's group; the worker has a session of its own, whose group gets the
        # same nice value so that it also wins against other sessions' processes.
        try:
            with open("/proc/self/autogroup", "w") as f:
                f.write(str(args.nice))
        except OSError:
            pass
    os.environ.update(thread_env(threads))
    sys.path.insert(0, str(HERE))

    meta = {"cores": cores, "nice": os.getpriority(os.PRIO_PROCESS, 0), "python": platform.python_version(),
            "cpu": cpu_model()}
    try:
        meta["autogroup"] = open("/proc/self/autogroup").read().strip()
    except OSError:
        pass
    if variant == "nnc":
        meta.update(nnc_meta(args))
    elif variant.startswith("torch"):
        import torch

        torch.set_num_threads(threads)
        try:
            torch.set_num_interop_threads(threads)
        except RuntimeError:
            pass
        meta.update(torch=torch.__version__, torch_threads=torch.get_num_threads(),
                    torch_adam=args.torch_adam)
    else:
        import jax
        import jaxlib

        meta.update(jax=jax.__version__, jaxlib=jaxlib.__version__,
                    xla_flags=os.environ.get("XLA_FLAGS", ""),
                    device=str(jax.devices()[0]))

    for model in args.models:
        print(MARK + json.dumps({"started": model}), flush=True)
        try:
            rec = run_model(model, variant, threads, args)
            rec["status"] = "ok"
        except Exception as e:  # noqa: BLE001 - report and go on with the next model
            rec = {"model": model, "variant": variant, "threads": threads, "status": "error",
                   "error": f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}"}
        gc.unfreeze()
        rec.update(meta)
        rec["time"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        print(MARK + json.dumps(rec), flush=True)


# ----------------------------------------------------------------------------
# driver
# ----------------------------------------------------------------------------

def run_worker(variant, threads, models, args, log):
    """Runs one worker; relaunches it on the remaining models if it dies mid-way."""
    results = []
    todo = list(models)
    if variant == "nnc" and args.nnc_error:
        # No usable binary (the build failed): every model fails the same way.
        for m in todo:
            obj = {"model": m, "variant": variant, "threads": threads, "status": "error",
                   "error": args.nnc_error}
            results.append(obj)
            emit(obj, args, log)
        return results
    cache = None
    if variant == "torch-compile" and not args.warm_cache:
        # Cold compilation: a private, empty Inductor cache for this worker, removed afterwards.
        cache = tempfile.mkdtemp(prefix="nnc-peers-inductor-")
    try:
        while todo:
            todo = _run_worker_once(variant, threads, todo, args, log, results, cache)
    finally:
        if cache:
            shutil.rmtree(cache, ignore_errors=True)
    return results


def _run_worker_once(variant, threads, todo, args, log, results, cache):
    """One worker process over `todo`; returns the models still to run if it died."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker",
           "--variants", variant, "--threads", str(threads), "--models", ",".join(todo),
           "--steps", str(args.steps), "--min-time", str(args.min_time),
           "--max-time", str(args.max_time), "--warmup", str(args.warmup),
           "--seed", str(args.seed), "--torch-adam", args.torch_adam, "--nice", str(args.nice),
           "--timeout", str(args.timeout), "--nnc", args.nnc, "--nnc-models", str(args.nnc_models)] \
        + (["--warm-cache"] if args.warm_cache else [])
    env = dict(os.environ)
    env.update(thread_env(threads))
    env["PYTHONWARNINGS"] = "ignore"
    if cache:
        env["TORCHINDUCTOR_CACHE_DIR"] = cache
    started, done = None, set()
    timeout = args.timeout * len(todo)
    timed_out = []

    def kill():
        timed_out.append(True)
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the worker and e.g. Inductor's compile workers
        except ProcessLookupError:
            pass

    with tempfile.TemporaryFile("w+") as errf:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=errf, text=True,
                                start_new_session=True)
        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            for line in proc.stdout:  # results stream in as each model finishes
                if not line.startswith(MARK):
                    continue
                obj = json.loads(line[len(MARK):])
                if "started" in obj:
                    started = obj["started"]
                    print(f"#   {obj['started']} ...", file=sys.stderr, flush=True)
                else:
                    results.append(obj)
                    done.add(obj["model"])
                    started = None
                    emit(obj, args, log)
            rc = proc.wait()
        finally:
            timer.cancel()
            if proc.poll() is None:
                kill()
                proc.wait()
        errf.seek(0)
        err = errf.read()
    if timed_out:
        rc, err = "timeout", f"killed after {timeout:.0f} s"
    todo = [m for m in todo if m not in done]
    if not todo:
        return todo
    tail = " | ".join(err.strip().splitlines()[-3:])[-400:]
    # The worker died (crash/timeout) while on `started`, or before any model (e.g. the
    # framework does not import): then every remaining model fails the same way.
    victims = [started] if started else list(todo)
    for victim in victims:
        obj = {"model": victim, "variant": variant, "threads": threads, "status": "error",
               "error": f"worker exited ({rc}) " + ("during this model" if started else "before any model")
                        + f": {tail}"}
        results.append(obj)
        emit(obj, args, log)
        todo.remove(victim)
    return todo


def emit(obj, args, log):
    line = json.dumps(obj)
    print(line, flush=True)
    if log:
        log.write(line + "\n")
        log.flush()


def fmt_ms(v):
    if v is None:
        return "-"
    return f"{v:.3f}" if v < 1 else f"{v:.2f}" if v < 100 else f"{v:.1f}"


def fmt_util(v):
    return "-" if v is None else f"{v:4.2f}"


def table(results, models, variants, threads):
    lines = ["compile s: for nnc its compilation alone (autodiff + scheduling + codegen), "
             "for the peers the first step (tracing + compilation + one step)"]
    hdr = f"{'model':12s} {'variant':14s} {'thr':>3s} {'compile s':>9s} {'median ms':>10s} {'min ms':>9s} {'max ms':>9s} {'steps':>6s} {'cpu':>4s}"
    lines += [hdr, "-" * len(hdr)]
    key = {(r["model"], r["variant"], r["threads"]): r for r in results}
    for m in models:
        for v in variants:
            for t in threads:
                r = key.get((m, v, t))
                if r is None:
                    continue
                if r["status"] != "ok":
                    lines.append(f"{m:12s} {v:14s} {t:3d} FAILED: {r.get('error', '')[:90]}")
                    continue
                lines.append(f"{m:12s} {v:14s} {t:3d} {r['compile_ms'] / 1e3:9.2f} {fmt_ms(r['median_ms']):>10s} "
                             f"{fmt_ms(r['min_ms']):>9s} {fmt_ms(r['max_ms']):>9s} {r['steps']:6d} {fmt_util(r.get('cpu_util')):>4s}")
    # Compact pivot: median ms per step, model x (variant, threads), best marked with *.
    # nnc/best@t: nnc's median over the best peer's (nnc itself is never the "best peer").
    lines += ["", "median ms/step (* = best peer at that thread count; nnc/best = nnc median / best peer median)"]
    cols = [(v, t) for t in threads for v in variants]
    ratio_cols = [t for t in threads if "nnc" in variants]
    labels = [f"{v}@{t}" for v, t in cols] + [f"nnc/best@{t}" for t in ratio_cols]
    widths = [max(len(lb), 8) for lb in labels]
    lines.append(f"{'model':12s} " + " ".join(f"{lb:>{w}s}" for lb, w in zip(labels, widths)))

    def ok(m, v, t):
        r = key.get((m, v, t))
        return r if r is not None and r["status"] == "ok" else None

    for m in models:
        best = {}
        for t in threads:
            peers = [ok(m, v, t)["median_ms"] for v in variants if v != "nnc" and ok(m, v, t)]
            best[t] = min(peers) if peers else None
        cells = []
        for v, t in cols:
            r = key.get((m, v, t))
            if r is None or r["status"] != "ok":
                cells.append("FAILED" if r else "-")
            else:
                star = "*" if v != "nnc" and r["median_ms"] == best[t] else " "
                cells.append(fmt_ms(r["median_ms"]) + star)
        for t in ratio_cols:
            r = ok(m, "nnc", t)
            cells.append(f"{r['median_ms'] / best[t]:.2f}" if r and best[t] else "-")
        lines.append(f"{m:12s} " + " ".join(f"{c:>{w}s}" for c, w in zip(cells, widths)))
    return "\n".join(lines)


def ensure_nnc(args):
    """Resolves the nnc binary; builds target/release/nnc if it is missing or --build.
    Sets args.nnc (path) and args.nnc_error (None, or why the nnc variant cannot run)."""
    args.nnc_error = None
    if args.nnc:
        found = shutil.which(args.nnc) if os.sep not in args.nnc else None
        args.nnc = found or str(Path(args.nnc).resolve())
        if args.build:
            print("# --build ignored: --nnc names the binary", file=sys.stderr, flush=True)
        return
    binary = ROOT / "target" / "release" / "nnc"
    args.nnc = str(binary)
    if binary.exists() and not args.build:
        return
    cmd = ["cargo", "build", "--release"]
    print(f"# building nnc: {' '.join(cmd)} (in {ROOT})", file=sys.stderr, flush=True)
    t0 = time.time()
    try:
        # cargo's output goes to stderr as it comes (stdout carries only the JSON lines);
        # its last lines are kept for the error records.
        p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    except OSError as e:
        args.nnc_error = f"cargo build --release could not start: {e}"
        return
    tail = []
    for line in p.stdout:
        sys.stderr.write(line)
        tail = (tail + [line.strip()])[-3:]
    rc = p.wait()
    if rc != 0:
        args.nnc_error = f"cargo build --release failed ({rc}): " + " | ".join(tail)[-400:]
    elif not binary.exists():
        args.nnc_error = f"cargo build --release did not produce {binary}"
    else:
        print(f"# built {binary} in {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    if args.nnc_error:
        print("# " + args.nnc_error, file=sys.stderr, flush=True)


def csv_list(s):
    return [x.strip() for x in s.split(",") if x.strip()]


def main():
    sys.path.insert(0, str(HERE))
    from models import MODELS

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=csv_list, default=MODELS, help=f"comma list of {','.join(MODELS)}")
    ap.add_argument("--variants", type=csv_list, default=VARIANTS, help=f"comma list of {','.join(VARIANTS)}")
    ap.add_argument("--threads", type=lambda s: [int(x) for x in csv_list(s)], default=[1, 2],
                    help="thread counts, e.g. 1 or 2 or 1,2 (default 1,2)")
    ap.add_argument("--steps", type=int, default=50, help="minimum timed steps (default 50)")
    ap.add_argument("--min-time", type=float, default=2.0, help="minimum timed seconds (default 2)")
    ap.add_argument("--max-time", type=float, default=8.0,
                    help="stop timing after this many seconds even below --steps (default 8)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps after the first (default 5)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--torch-adam", choices=["default", "foreach", "fused"], default="default",
                    help="torch.optim.Adam implementation (default: as constructed by default)")
    ap.add_argument("--timeout", type=float, default=300, help="seconds per model before a worker is killed")
    ap.add_argument("--warm-cache", action="store_true",
                    help="let torch.compile use its persistent cache (default: a fresh empty cache, "
                         "so compile_ms is a cold compilation)")
    ap.add_argument("--nice", type=int, default=0,
                    help="run the workers at this nice value; negative (root only, e.g. -15) keeps "
                         "other processes on a shared machine from disturbing the timings")
    ap.add_argument("--json", metavar="FILE", help="also write the JSON lines to FILE")
    ap.add_argument("--nnc", metavar="PATH",
                    help="nnc binary for the nnc variant (default: target/release/nnc of this "
                         "repository, built with cargo build --release if missing)")
    ap.add_argument("--build", action="store_true",
                    help="run cargo build --release before starting (default: only if the binary is missing)")
    ap.add_argument("--nnc-models", metavar="DIR", default=str(ROOT / "bench" / "models"),
                    help="directory of the nnc models <model>.nn (default: bench/models)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()

    bad = [m for m in args.models if m not in MODELS] + [v for v in args.variants if v not in VARIANTS]
    if bad:
        ap.error(f"unknown model/variant: {', '.join(bad)}")
    if args.worker:
        return worker(args)

    ncpu = len(os.sched_getaffinity(0))
    for t in args.threads:
        if not 1 <= t <= ncpu:
            ap.error(f"--threads {t}: this process may use {ncpu} cores")
    # nnc runs first at each thread count; the peers in the order given.
    args.variants = sorted(dict.fromkeys(args.variants), key=lambda v: v != "nnc")
    if "nnc" in args.variants:
        ensure_nnc(args)
    else:
        args.nnc, args.nnc_error = args.nnc or "", None

    log = open(args.json, "w") if args.json else None
    results = []
    t_start = time.time()
    for t in args.threads:
        for v in args.variants:
            print(f"# {v} threads={t} ...", file=sys.stderr, flush=True)
            results += run_worker(v, t, args.models, args, log)
    if log:
        log.close()
    print()
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}  {cpu_model()}  "
          f"{ncpu} cores allowed  total {time.time() - t_start:.0f} s"
          + (f"  nnc: {args.nnc}" if "nnc" in args.variants else ""))
    print(table(results, args.models, args.variants, args.threads))
    return 0 if all(r["status"] == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
