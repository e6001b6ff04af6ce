"""Run every benchmark module ``benchmarks/bench_<name>.py`` (``make bench``).

A benchmark module exposes ``run() -> dict`` and optionally ``table(result) -> str`` for a
human-readable table (otherwise the result is printed flattened, one ``key = value`` a line).
Modules are discovered by glob, so adding a benchmark needs no change here. Results of all modules
go to ``build/bench/results.json`` (``{name: result}``; a module that fails records
``{"error": ...}`` and the exit status becomes 1).

    python -m benchmarks.run            # all modules
    python -m benchmarks.run analog     # only bench_analog
    python -m benchmarks.run --list
    python -m benchmarks.run gan --set synapse.devices_per_side=16   # PCM config overridden
    python -m benchmarks.run --from-run runs/cnn/pcm_v_s0            # a trained PCM state
    python -m benchmarks.run cnn --backend cupy                       # on the GPU

``--set SECTION.KEY=VALUE`` (as ``mcasim train --set``) goes to the benchmarks whose ``run`` takes
``pcm_overrides``: the training benchmarks apply it to the PCM configuration they time.
``--from-run RUN`` times the PCM run folder ``RUN`` at its last checkpoint (its config and trained
device state: drift, late-training pulse and refresh rates) against the fp32 config, in the training
benchmark of its model (the modules whose ``ARCH`` is the run's ``model.arch``).
``--backend numpy|cupy`` (default numpy) goes to the benchmarks whose ``run`` takes ``backend``; the
others are skipped with a note when it is cupy.
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import json
import platform
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "build" / "bench" / "results.json"


def discover() -> list[str]:
    return sorted(p.stem[len("bench_"):] for p in HERE.glob("bench_*.py"))


def _flatten(obj, prefix=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _flatten(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, (list, tuple)) and obj and isinstance(obj[0], (dict, list)):
        for i, v in enumerate(obj):
            yield from _flatten(v, f"{prefix}[{i}]")
    else:
        yield prefix, obj


def _fmt(v):
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help="benchmarks to run (default: all discovered)")
    ap.add_argument("--list", action="store_true", help="list discovered benchmarks and exit")
    ap.add_argument("--out", default=str(OUT), help=f"results file (default {OUT.relative_to(HERE.parent)})")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="override of the PCM config timed by the training benchmarks that take it (repeatable)")
    ap.add_argument("--from-run", metavar="RUN",
                    help="time this PCM run folder at its checkpoint instead of a fresh PCM config")
    ap.add_argument("--backend", default="numpy", choices=["numpy", "cupy"],
                    help="array backend of the benchmarks that take one (default numpy)")
    args = ap.parse_args(argv)
    overrides = None
    if args.set:
        from sim.config import ConfigError, parse_sets
        try:
            overrides = parse_sets(args.set)
        except ConfigError as exc:
            ap.error(str(exc))
    names = discover()
    if args.list:
        print("\n".join(names))
        return 0
    unknown = sorted(set(args.names) - set(names))
    if unknown:
        ap.error(f"unknown benchmark(s) {', '.join(unknown)}; available: {', '.join(names)}")
    selected = args.names or names
    if overrides:
        takes = [n for n in selected
                 if "pcm_overrides" in inspect.signature(importlib.import_module(f"benchmarks.bench_{n}").run).parameters]
        if not takes:
            ap.error(f"--set: none of {', '.join(selected)} takes PCM overrides")
        selected = takes
    if args.from_run:
        if overrides:
            ap.error("--from-run times the run's own config; --set cannot change it")
        from benchmarks.common import run_config
        from sim.train import RunError
        try:
            arch = run_config(args.from_run).model.arch
        except RunError as exc:
            ap.error(f"--from-run: {exc}")
        takes = [n for n in selected if getattr(importlib.import_module(f"benchmarks.bench_{n}"), "ARCH", None) == arch]
        if not takes:
            ap.error(f"--from-run: {args.from_run} is a {arch!r} run; none of {', '.join(selected)} times {arch!r} runs")
        selected = takes
    if args.backend != "numpy":
        from gpu_model.backend import BackendError, make_backend
        try:
            make_backend(args.backend)
        except BackendError as exc:
            ap.error(f"--backend {args.backend}: {exc}")
        takes = [n for n in selected
                 if "backend" in inspect.signature(importlib.import_module(f"benchmarks.bench_{n}").run).parameters]
        for n in sorted(set(selected) - set(takes)):
            print(f"bench_{n}: takes no backend; skipped with --backend {args.backend}", file=sys.stderr)
        if not takes:
            ap.error(f"--backend: none of {', '.join(selected)} takes a backend")
        selected = takes
    results = {"_meta": {"python": sys.version.split()[0], "machine": platform.machine(), "pcm_overrides": overrides, "from_run": args.from_run,
                         "backend": args.backend,
                         "processor": platform.processor(), "time": time.strftime("%Y-%m-%d %H:%M:%S")}}
    rc = 0
    for name in selected:
        print(f"\n=== bench_{name} ===", flush=True)
        t0 = time.perf_counter()
        try:
            mod = importlib.import_module(f"benchmarks.bench_{name}")
            kw = {"backend": args.backend} if args.backend != "numpy" else {}
            if args.from_run:
                res = mod.run(from_run=args.from_run, **kw)
            else:
                res = mod.run(pcm_overrides=overrides, **kw) if overrides else mod.run(**kw)
        except Exception as exc:  # report and go on with the other benchmarks
            traceback.print_exc()
            results[name] = {"error": f"{exc.__class__.__name__}: {exc}"}
            rc = 1
            continue
        results[name] = res
        table = getattr(mod, "table", None)
        if table is not None:
            print(table(res))
        else:
            for k, v in _flatten(res):
                print(f"  {k} = {_fmt(v)}")
        print(f"  ({time.perf_counter() - t0:.1f} s)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, default=str))
    print(f"\nwrote {out}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
