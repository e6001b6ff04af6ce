"""``mcasim sweep SPEC.toml --out DIR``: many `mcasim train` runs — a grid or zip of axes, seeds, a
random search with early stopping — on Ray (a local instance, or a cluster with ``--address``), or
one after another when Ray is not installed (or ``--engine local``).

Every trial is an ordinary run folder ``DIR/trials/<trial>/`` (``report``, ``energy`` and
``evaluate`` work on it). At the end: ``DIR/results.csv``, ``DIR/results.md`` (per trial; mean ±
std over seeds per point; failures with their error) and ``DIR/results.png``. Started again on the
same DIR, a sweep skips finished trials and resumes the others from their checkpoints.
See docs/sweeps.md.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

from ..checkpoint import write_text_atomic
from .engines import RayStartError
from .spec import SpecError, load_spec
from .trial import read_state

PROG = "mcasim sweep"


def add_arguments(p):
    p.add_argument("spec", help="sweep spec (TOML); see docs/sweeps.md and configs/sweeps/")
    p.add_argument("--out", required=True, help="sweep folder: trials/<trial>/ run folders and the results")
    p.add_argument("--engine", default="auto", choices=["auto", "ray", "local"],
                   help="ray: Ray Tune; local: one trial after another in this process; auto (default): ray "
                        "when it is installed")
    p.add_argument("--address", help="attach to an existing Ray cluster (e.g. auto or HOST:6379); default: "
                   "start a local Ray instance with this machine's cores")
    p.add_argument("--cpus-per-trial", type=int, default=1,
                   help="CPUs reserved per trial; also its BLAS threads (OMP/OPENBLAS/MKL_NUM_THREADS); default 1")
    p.add_argument("--gpus-per-trial", type=float, default=0,
                   help="GPUs per trial (CuPy trials: set backend = \"cupy\" in the spec); default 0")
    p.add_argument("--num-cpus", type=int, help="size of the local Ray instance (default: all cores)")
    p.add_argument("--max-concurrent", type=int, help="at most this many trials at once")
    p.add_argument("--retries", type=int, help="re-runs of a failed trial (default: the spec's, else 1)")
    p.add_argument("--data-dir", help="dataset folder passed to every trial")
    p.add_argument("--dry-run", action="store_true", help="validate the spec and list the trials; run nothing")
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def _err(msg) -> int:
    print(f"{PROG}: error: {msg}", file=sys.stderr)
    return 2


def run(args) -> int:
    out = Path(args.out)
    try:
        spec = load_spec(args.spec)
    except SpecError as exc:
        return _err(exc)
    trials = spec.trials
    if args.cpus_per_trial < 1:
        return _err("--cpus-per-trial must be >= 1")
    if args.gpus_per_trial < 0:
        return _err("--gpus-per-trial must be >= 0")
    if args.retries is not None and args.retries < 0:
        return _err("--retries must be >= 0")
    # a folder left by a different spec must not be mixed up with this one
    def key(argv):   # the command without its --out folder (a sweep folder may be moved)
        return [a for i, a in enumerate(argv) if a != "--out" and (i == 0 or argv[i - 1] != "--out")]

    for t in trials:
        st = read_state(out / "trials" / t.id)
        if st.get("argv") and key(st["argv"]) != key(t.argv(out / "trials" / t.id, args.data_dir)):
            return _err(f"{out / 'trials' / t.id} was made by a different command "
                        f"({st.get('command')}); use another --out for a changed spec")
    if args.dry_run:
        for t in trials:
            print(f"{t.id}: mcasim {' '.join(_q(a) for a in t.argv(out / 'trials' / t.id, args.data_dir, display=True))}")
        print(f"{len(trials)} trials", file=sys.stderr)
        return 0

    from .engines import ray_available
    engine = args.engine
    if engine == "auto":
        engine = "ray" if ray_available() else "local"
        if engine == "local" and not args.quiet:
            print(f"{PROG}: Ray is not installed (pip install 'mcasim[sweep]'): running the {len(trials)} "
                  f"trial{'s' if len(trials) != 1 else ''} one after another from this process", file=sys.stderr)
    elif engine == "ray" and not ray_available():
        return _err("--engine ray: Ray is not installed; pip install 'mcasim[sweep]' (or use --engine local)")
    if engine == "local":
        if args.address:
            return _err("--address needs the Ray engine")
        if spec.early_stop and not args.quiet:
            print(f"{PROG}: note: early stopping ([early_stop]) needs Ray Tune's schedulers; without Ray every "
                  "trial runs to its last epoch", file=sys.stderr)

    out.mkdir(parents=True, exist_ok=True)
    (out / "trials").mkdir(exist_ok=True)
    if spec.path.resolve() != (out / "spec.toml").resolve():
        shutil.copyfile(spec.path, out / "spec.toml")
    info = {"engine": engine, "spec": str(spec.path), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "cpus_per_trial": args.cpus_per_trial, "gpus_per_trial": args.gpus_per_trial,
            "address": args.address, "trials": [t.id for t in trials]}
    t0 = time.perf_counter()
    rc = 0
    try:
        if engine == "ray":
            from .engines import run_ray
            status = run_ray(spec, trials, out, address=args.address, cpus_per_trial=args.cpus_per_trial,
                             gpus_per_trial=args.gpus_per_trial, data_dir=args.data_dir, retries=args.retries,
                             max_concurrent=args.max_concurrent, quiet=args.quiet, num_cpus=args.num_cpus, info=info)
        else:
            from .engines import run_local
            status = run_local(spec, trials, out, cpus_per_trial=args.cpus_per_trial, data_dir=args.data_dir,
                               retries=args.retries, quiet=args.quiet)
    except RayStartError as exc:
        return _err(f"could not start or reach Ray: {exc} (--engine local runs without it)")
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; run the same command again to resume (finished trials are skipped)",
              file=sys.stderr)
        status, rc = {}, 130
    info["wall_s"] = time.perf_counter() - t0
    info["status"] = status
    write_text_atomic(out / "sweep.json", json.dumps(info, indent=1))
    from .results import write_all
    rows = write_all(spec, trials, out, info)
    failed = [r for r in rows if r["status"] == "failed"]
    unfinished = [r for r in rows if r["status"] in ("interrupted", "pending")]
    if not args.quiet or failed:
        n_ok = sum(r["status"] in ("done", "stopped") for r in rows)
        print(f"{PROG}: {n_ok}/{len(rows)} trials finished, {len(failed)} failed"
              + (f", {len(unfinished)} unfinished" if unfinished else "")
              + f" ({info['wall_s']:.1f} s, engine {engine}); results in {out}/results.md, results.csv, results.png",
              file=sys.stderr)
        for r in failed:
            print(f"  failed: {r['trial']}: {r['error']}", file=sys.stderr)
    if rc:
        return rc
    return 1 if failed or unfinished else 0


def _q(a: str) -> str:
    import shlex
    return shlex.quote(a)
