#!/usr/bin/env python3
"""Markdown for BENCHMARKS.md from the JSON lines of bench/peers/bench.py.

  /work/venv-peers/bin/python bench/peers/bench.py --threads 1,2 --nice -15 --json run.json
  python3 bench/report.py run.json > run.md

Prints, in this order: the run (date, machine, versions, settings, load average);
per thread count, nnc against the best peer with the targets; every measurement
(median / min / max, steps, CPU use, compile time); memory (nnc against PyTorch
eager's measured peak); nnc's GFLOP/s and share of the machine's peak.

Standard library only. A record that appears more than once (files of several runs
concatenated) counts with its last occurrence.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

# nnc's median step time over the best peer's, per model: the goal is at or below.
TARGETS = {"digits_mlp": 0.25, "mnist_mlp": 0.8, "lenet": 0.25, "resnet_mini": 0.6, "elman": 0.6}
MODELS = ["digits_mlp", "mnist_mlp", "lenet", "resnet_mini", "elman"]
VARIANTS = ["nnc", "torch-eager", "torch-compile", "jax-jit"]


def load(path):
    recs = {}
    with (sys.stdin if path == "-" else open(path)) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                r = json.loads(line)
                key = (r["model"], r["variant"], int(r["threads"]))
            except (ValueError, KeyError, TypeError) as e:
                print(f"report.py: {path}:{n}: skipped ({e})", file=sys.stderr)
                continue
            recs[key] = r
    return recs


def order(items, known):
    return sorted(items, key=lambda x: (known.index(x) if x in known else len(known), x))


def ok(r):
    return r is not None and r.get("status") == "ok"


def ms(v):
    if v is None:
        return "-"
    return f"{v:.3f}" if v < 1 else f"{v:.2f}" if v < 100 else f"{v:.1f}"


def num(v, fmt):
    return "-" if v is None else format(v, fmt)


def size(b):
    if b is None:
        return "-"
    if b >= 1 << 20:
        return f"{b / (1 << 20):.2f} MiB"
    return f"{b / 1024:.1f} KiB"


def plural(t):
    return f"{t} thread" + ("" if t == 1 else "s")


def cpuinfo():
    """(model name, 'CPU family F model M', logical CPUs, MemTotal) from /proc."""
    name = fam = mod = None
    cpus = 0
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                k, _, v = line.partition(":")
                k, v = k.strip(), v.strip()
                if k == "processor":
                    cpus += 1
                elif k == "model name" and name is None:
                    name = v
                elif k == "cpu family" and fam is None:
                    fam = v
                elif k == "model" and mod is None:
                    mod = v
    except OSError:
        pass
    mem = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem = int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return name, (f"CPU family {fam} model {mod}" if fam and mod else None), cpus or None, mem


def distinct(recs, field):
    vals = []
    for r in recs:
        v = r.get(field)
        if v is not None and v not in vals:
            vals.append(v)
    return vals


def table(header, rows, align):
    out = ["| " + " | ".join(header) + " |",
           "| " + " | ".join("---:" if a == "r" else "---" for a in align) + " |"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out


def best_peer(recs, model, threads):
    peers = [recs[k] for k in recs
             if k[0] == model and k[2] == threads and k[1] != "nnc" and ok(recs[k])]
    return min(peers, key=lambda r: r["median_ms"]) if peers else None


def run_section(path, recs, all_recs):
    lines = ["## The run", ""]
    stamps = sorted(r["time"] for r in all_recs if r.get("time"))
    if stamps:
        first, last = stamps[0], stamps[-1]
        when = first[:16].replace("T", " ")
        if last[:16] == first[:16]:
            pass
        elif last[:10] == first[:10]:
            when += "-" + last[11:16]
        else:
            when += " - " + last[:16].replace("T", " ")
        when += f" (machine clock, UTC offset {first[19:] or '?'}; when the records were written)"
    else:
        mtime = os.stat(path).st_mtime if path != "-" else time.time()
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(mtime)) + " (the file's time: the records carry none)"
    name, fam, cpus, mem = cpuinfo()
    rec_cpu = distinct(all_recs, "cpu")
    machine = ", ".join(rec_cpu) if rec_cpu else (name or "unknown CPU")
    extra = [x for x in (fam, f"{cpus} logical CPUs" if cpus else None,
                         f"{mem / (1 << 30):.0f} GiB" if mem else None) if x]
    if extra:
        machine += " (" + ", ".join(extra) + ", read from /proc when this report was made)"
    lines.append(f"* **Date**: {when}")
    lines.append(f"* **Machine**: {machine}")

    vers = []
    nnc = [r for r in all_recs if r.get("variant") == "nnc"]
    for field, label in (("nnc", "nnc"), ("nnc_commit", "commit"), ("nnc_built", "binary built")):
        vals = distinct(nnc, field)
        if vals:
            vers.append(f"{label} {' / '.join(map(str, vals))}"
                        + (" (**the binary changed during the run**)" if field == "nnc_built" and len(vals) > 1 else ""))
    for field in ("python", "torch", "jax", "jaxlib"):
        vals = distinct(all_recs, field)
        if vals:
            vers.append(f"{field} {' / '.join(map(str, vals))}")
    lines.append("* **Versions**: " + (", ".join(vers) if vers else "not recorded"))

    sets = []
    for t in sorted({k[2] for k in recs}):
        at = [r for k, r in recs.items() if k[2] == t]
        cores = distinct(at, "cores")
        sets.append(f"{plural(t)} on cores {' / '.join(','.join(map(str, c)) for c in cores) or '?'}")
    nices = distinct(all_recs, "nice")
    if nices:
        sets.append("nice " + " / ".join(map(str, nices)))
    for field, label in (("torch_adam", "torch Adam"), ("xla_flags", "XLA_FLAGS")):
        vals = [v for v in distinct(all_recs, field) if v != ""]
        if vals:
            sets.append(f"{label} {' / '.join(map(str, vals))}")
    lines.append("* **Settings**: " + "; ".join(sets))

    loads = [r[f] for r in all_recs for f in ("loadavg_before", "loadavg_after") if r.get(f) is not None]
    if loads:
        lines.append(f"* **Load average** (1 minute, around each timed loop): {min(loads):.2f}-{max(loads):.2f}"
                     + (" -- other processes were competing for the cores" if max(loads) > 1.5 * max(k[2] for k in recs) else ""))
    failed = [r for r in all_recs if not ok(r)]
    lines.append(f"* **Measurements**: {len(all_recs)}, of which {len(failed)} failed")
    for r in failed:
        lines.append(f"  * {r['model']} {r['variant']} @ {plural(r['threads'])}: {r.get('error', 'no reason given')}")
    return lines


def target_section(recs, threads, models):
    peers = order({k[1] for k in recs if k[1] != "nnc"}, VARIANTS)
    lines = ["## nnc against the best peer", "",
             "Median time of one training step. Best peer = the fastest at that thread count of the "
             f"peers measured in this run ({', '.join(peers) or 'none'}). Ratio = nnc / best peer "
             "(below 1: nnc is faster); the target is met when the ratio is at or below it.", ""]
    for t in threads:
        rows, met, total = [], 0, 0
        for m in models:
            n, b = recs.get((m, "nnc", t)), best_peer(recs, m, t)
            target = TARGETS.get(m)
            ratio = n["median_ms"] / b["median_ms"] if ok(n) and b else None
            if ratio is None:
                verdict = "nnc failed" if n is not None and not ok(n) else "no nnc" if n is None else "no peer"
            else:
                verdict = "-" if target is None else "**yes**" if ratio <= target else "no"
            if target is not None and ratio is not None:
                total += 1
                met += ratio <= target
            rows.append([m, ms(n["median_ms"]) if ok(n) else "-", b["variant"] if b else "-",
                         ms(b["median_ms"]) if b else "-", num(ratio, ".2f"), num(target, ".2f"), verdict])
        lines.append(f"### {plural(t)}")
        lines.append("")
        lines += table(["model", "nnc median ms", "best peer", "best peer median ms", "nnc / best peer",
                        "target", "met?"], rows, "lrlrrrl")
        lines += ["", f"Targets met at {plural(t)}: {met} of {total}.", ""]
    return lines


def all_section(recs, threads, models):
    lines = ["## Every measurement", "",
             "**compile s** is not the same measurement on both sides: for **nnc** it is nnc's own "
             "compile_ms, the compilation alone (autodiff + scheduling + Cranelift code generation, "
             "measured before the first step, no step executed); for the **peers** it is the wall time "
             "of the very first step (tracing + compilation + one execution; for torch-eager just a "
             "first step). **cpu** = CPU time / wall time: for the peers over the timed loop, for nnc "
             "over the whole `nnc bench` child (compilation and warm-up included). **load** = 1-minute "
             "load average after the timed loop. Bold = best peer.", ""]
    rows = []
    variants = order({k[1] for k in recs}, VARIANTS)
    for m in models:
        for t in threads:
            b = best_peer(recs, m, t)
            for v in variants:
                r = recs.get((m, v, t))
                if r is None:
                    continue
                if not ok(r):
                    rows.append([m, v, t, "FAILED: " + r.get("error", "")[:120].replace("|", "/")] + [""] * 7)
                    continue
                med = ms(r["median_ms"])
                if r is b:
                    med = f"**{med}**"
                rows.append([m, v, t, med, ms(r.get("min_ms")), ms(r.get("max_ms")), r.get("steps", "-"),
                             num(r.get("cpu_util"), ".2f"), num(r["compile_ms"] / 1e3 if r.get("compile_ms") is not None else None, ".2f"),
                             num(r.get("loadavg_after"), ".2f"), ms(r.get("warmup_max_ms"))])
    lines += table(["model", "variant", "threads", "median ms", "min ms", "max ms", "steps", "cpu",
                    "compile s", "load", "slowest warm-up ms"], rows, "llrrrrrrrrr")
    return lines + [""]


def first_ok(recs, model, variant, threads, pred):
    for t in threads:
        r = recs.get((model, variant, t))
        if ok(r) and pred(r):
            return r, t
    return None, None


def memory_section(recs, threads, models):
    lines = ["## Memory", "",
             "nnc: memory_bytes = the step's buffer arena + parameters + optimizer state, as planned "
             "(buffers reused once dead); naive = every activation and gradient in a buffer of its own "
             "(no reuse), plus the same parameters and state. PyTorch eager: peak tensor memory of one "
             "training step measured with torch.profiler's memory timeline (parameters, gradients, "
             "optimizer state, activations, temporaries; the input batch left out, as in nnc's). "
             "Taken at the lowest thread count measured.", ""]
    rows = []
    for m in models:
        n, nt = first_ok(recs, m, "nnc", threads, lambda r: r.get("memory_bytes") is not None)
        p, pt = first_ok(recs, m, "torch-eager", threads,
                         lambda r: isinstance(r.get("memory"), dict) and r["memory"].get("total"))
        if n is None and p is None:
            continue
        nb = n["memory_bytes"] if n else None
        nv = n.get("naive_bytes") if n else None
        pb = p["memory"]["total"] if p else None
        ts = str(nt or pt) if nt is None or pt is None or nt == pt else f"nnc {nt}, PyTorch {pt}"
        rows.append([m, size(nb), size(nv), num(nb / nv if nb and nv else None, ".2f"), size(pb),
                     num(nb / pb if nb and pb else None, ".2f"), ts])
    if not rows:
        return lines + ["No memory figures in this run (neither nnc nor torch-eager succeeded).", ""]
    lines += table(["model", "nnc", "nnc naive (no reuse)", "nnc / naive", "PyTorch eager peak",
                    "nnc / PyTorch", "threads"], rows, "lrrrrrr")
    return lines + [""]


def flops_section(recs, threads, models):
    ts = [t for t in threads if any(k[1] == "nnc" and k[2] == t and ok(r) for k, r in recs.items())]
    lines = ["## nnc GFLOP/s", ""]
    if not ts:
        return lines + ["No nnc measurement succeeded.", ""]
    peaks = [r["gflops"] / r["peak_fraction"] / r["threads"] for k, r in recs.items()
             if k[1] == "nnc" and ok(r) and r.get("gflops") and r.get("peak_fraction")]
    note = ("GFLOP/s = floating-point operations of one training step (those of the nodes the step "
            "computes) / median step time; % of peak = over the single-core FMA peak nnc measured "
            "(loops of independent 256-bit and 512-bit FMAs, the faster) times the threads")
    if peaks:
        note += f", here {min(peaks):.1f}-{max(peaks):.1f} GFLOP/s per core" if max(peaks) - min(peaks) > 0.05 \
            else f", here {peaks[0]:.1f} GFLOP/s per core"
    lines += [note + ".", ""]
    if 1 not in ts:
        lines += ["(No 1-thread measurement in this run.)", ""]
    header, align = ["model"], "l"
    for t in ts:
        header += [f"GFLOP/s, {plural(t)}", f"% of peak, {plural(t)}"]
        align += "rr"
    rows = []
    for m in models:
        row = [m]
        for t in ts:
            r = recs.get((m, "nnc", t))
            g = r.get("gflops") if ok(r) else None
            f = r.get("peak_fraction") if ok(r) else None
            row += [num(g, ".1f"), num(f * 100 if f is not None else None, ".1f")]
        rows.append(row)
    return lines + table(header, rows, align) + [""]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("file", help="JSON lines written by bench/peers/bench.py --json (- for stdin)")
    args = ap.parse_args()
    recs = load(args.file)
    if not recs:
        sys.exit(f"report.py: no records in {args.file}")
    all_recs = list(recs.values())
    threads = sorted({k[2] for k in recs})
    models = order({k[0] for k in recs}, MODELS)
    out = ["# nnc against PyTorch and JAX: training-step benchmark", ""]
    out += run_section(args.file, recs, all_recs) + [""]
    out += target_section(recs, threads, models)
    out += all_section(recs, threads, models)
    out += memory_section(recs, threads, models)
    out += flops_section(recs, threads, models)
    print("\n".join(out).rstrip())


if __name__ == "__main__":
    main()
