#!/usr/bin/env python3
"""Peer benchmark: training-step time of the five nnc benchmark models in
PyTorch eager, torch.compile and jax.jit on the CPU, at a chosen thread count.

  /work/venv-peers/bin/python bench/peers/bench.py --threads 1,2 --json out.json

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
into --json FILE), then a readable table.  A variant that fails (import error,
compile error, crash, timeout) yields a line with "status": "error" and the
rest continue.
"""

from __future__ import annotations

import argparse
import gc
import json
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
VARIANTS = ["torch-eager", "torch-compile", "jax-jit"]
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


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def run_model(model: str, variant: str, threads: int, args) -> dict:
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

    meta = {"cores": cores, "nice": os.getpriority(os.PRIO_PROCESS, 0), "python": platform.python_version()}
    try:
        meta["autogroup"] = open("/proc/self/autogroup").read().strip()
    except OSError:
        pass
    if variant.startswith("torch"):
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
        print(MARK + json.dumps(rec), flush=True)


# ----------------------------------------------------------------------------
# driver
# ----------------------------------------------------------------------------

def run_worker(variant, threads, models, args, log):
    """Runs one worker; relaunches it on the remaining models if it dies mid-way."""
    results = []
    todo = list(models)
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
           "--seed", str(args.seed), "--torch-adam", args.torch_adam, "--nice", str(args.nice)] + (["--warm-cache"] if args.warm_cache else [])
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


def table(results, models, variants, threads):
    lines = []
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
                             f"{fmt_ms(r['min_ms']):>9s} {fmt_ms(r['max_ms']):>9s} {r['steps']:6d} {r['cpu_util']:4.2f}")
    # Compact pivot: median ms per step, model x (variant, threads), best marked with *.
    lines += ["", "median ms/step (* = best peer at that thread count)"]
    cols = [(v, t) for t in threads for v in variants]
    lines.append(f"{'model':12s} " + " ".join(f"{v + '@' + str(t):>17s}" for v, t in cols))
    for m in models:
        best = {}
        for t in threads:
            ok = [key[(m, v, t)]["median_ms"] for v in variants
                  if key.get((m, v, t), {}).get("status") == "ok"]
            best[t] = min(ok) if ok else None
        cells = []
        for v, t in cols:
            r = key.get((m, v, t))
            if r is None or r["status"] != "ok":
                cells.append(f"{'FAILED' if r else '-':>17s}")
            else:
                star = "*" if r["median_ms"] == best[t] else " "
                cells.append(f"{fmt_ms(r['median_ms']) + star:>17s}")
        lines.append(f"{m:12s} " + " ".join(cells))
    return "\n".join(lines)


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
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}  {platform.processor() or platform.machine()}  "
          f"{ncpu} cores allowed  total {time.time() - t_start:.0f} s")
    print(table(results, args.models, args.variants, args.threads))
    return 0 if all(r["status"] == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
