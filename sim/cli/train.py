"""``mcasim train``: train a network and write a run folder.

Run folder: ``config.toml`` (resolved config), ``metrics.jsonl`` (a line per epoch),
``summary.json`` (final figures, event counts; written last, so a run folder with one is
finished), ``checkpoint.npz`` (resumable state, written after every epoch; ``sim/checkpoint.py``)
with ``checkpoint.prev.npz`` (the epoch before), and plots (``accuracy.png``, ``pulses.png``,
``conductance_hist.png``). Every file is replaced atomically: a run killed at any moment resumes
with ``--resume`` (``--fallback-checkpoint`` where its checkpoint was damaged).
"""
from __future__ import annotations

import json
import os
import shlex
import sys
import time
from pathlib import Path

from gpu_model.backend import BackendError, make_backend
from ..config import DPU_CHOICES, SYNAPSE_MODES, ConfigError, load_config, parse_sets
from .. import checkpoint as ckpt
from ..data import DATASETS, DatasetError, load_dataset
from ..tasks import archs, task_spec
from ..train import (CHECKPOINT, CHECKPOINT_PREV, LEGACY_CHECKPOINT, DivergedError, RunError, Trainer,
                     load_checkpoint_file, write_metrics)


def add_arguments(p):
    p.add_argument("arch", choices=list(archs()), help="network architecture (model.arch; the registered tasks)")
    p.add_argument("--dataset", choices=list(DATASETS),
                   help="dataset (default: the architecture's own: " + ", ".join(
                       f"{a} {task_spec(a).default_dataset}" for a in archs() if task_spec(a).default_dataset)
                   + "; digits: the 8x8 set bundled with scikit-learn)")
    p.add_argument("--synapse", choices=list(SYNAPSE_MODES), help="weight store (default: the config's)")
    p.add_argument("--epochs", type=int, help="training epochs (overrides the config)")
    p.add_argument("--out", required=True, help="run folder to create (or resume)")
    p.add_argument("--data-dir", help="folder holding the dataset files")
    p.add_argument("--backend", default="auto", choices=["numpy", "cupy", "auto"])
    p.add_argument("--dpu", choices=list(DPU_CHOICES),
                   help="digital unit (synapse.dpu): golden | rtl (chi/pulse lanes fed the float update), "
                        "tile-golden | tile-rtl (the whole unit: update from the factors, plain SGD only)")
    p.add_argument("--seed", type=int, help="random seed")
    p.add_argument("--config", help="TOML config file (default: the architecture's committed config for "
                   "--dataset and --synapse, configs/<arch>_<dataset>_<synapse>.toml, pcm unless --synapse "
                   "says otherwise; the built-in defaults where none is committed)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config value (TOML syntax), e.g. --set train.lr=0.05")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--fallback-checkpoint", action="store_true",
                   help="with --resume: if checkpoint.npz is missing, truncated or corrupted, resume from "
                        "checkpoint.prev.npz (one epoch earlier; the damaged file is kept as checkpoint.corrupt.npz)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder's results")
    p.add_argument("--no-fallback", action="store_true",
                   help="fail instead of using the bundled 8x8 digits when MNIST is unavailable")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(_resolve=resolve_defaults)


def resolve_defaults(args) -> None:
    """Defaults that depend on the architecture (called by the parser, sim/cli/__init__.py):
    ``--dataset`` = the task's own, ``--config`` = its committed config for that dataset and
    ``--synapse`` (pcm when not given), so that ``mcasim train cnn --out R`` trains the committed
    CNN. ``args.config_default`` records which config came from here (None: ``--config`` given, or
    no committed config: the built-in defaults); ``args.config_missing`` a committed config that
    this installation lacks (an error when the command runs)."""
    spec = task_spec(args.arch)
    if args.dataset is None:
        args.dataset = spec.default_dataset or "mnist"
    args.config_default = args.config_missing = None
    if args.config is None and not args.resume:
        path = spec.committed_config(args.dataset, args.synapse or "pcm")
        if path is not None and path.is_file():
            args.config = args.config_default = str(path)
        elif path is not None:
            args.config_missing = str(path)


EPOCH_GATE_ENV = "MCASIM_EPOCH_GATE"
GATE_POLL_S = 0.01   # engineering choice: the wait adds at most this to an epoch


def _epoch_gate(epochs: int):
    """Lockstep with a sweep's early-stopping scheduler (``MCASIM_EPOCH_GATE=FILE``).

    After each epoch but the last, the run waits until FILE holds a number >= that epoch: the sweep
    writes it once the scheduler has let the trial continue, so a trial the scheduler stops after
    epoch k has trained exactly k epochs. Unset (every ordinary run): no waiting.
    """
    path = os.environ.get(EPOCH_GATE_ENV)
    if not path:
        return None
    gate = Path(path)

    def wait(rec):
        if rec["epoch"] >= epochs:
            return
        while True:
            try:
                if int(gate.read_text().strip() or 0) >= rec["epoch"]:
                    return
            except (OSError, ValueError):
                pass
            time.sleep(GATE_POLL_S)
    return wait


def _check_arch(path, arch: str) -> None:
    """A config file written for another architecture is an error, not silently overridden."""
    import tomllib
    try:
        d = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return   # load_config reports it
    file_arch = d.get("model", {}).get("arch") if isinstance(d.get("model"), dict) else None
    if file_arch is not None and file_arch != arch:
        raise ConfigError(f"{path} sets model.arch = {file_arch!r} but the command trains {arch!r}")


def command_overrides(args) -> dict:
    """``{section: {key: value}}`` that a train command's options put on top of its config file
    (``--set``, the architecture, ``--synapse``, ``--dpu``, ``--epochs``, ``--seed``)."""
    overrides = parse_sets(args.set)
    overrides.setdefault("synapse", {})
    overrides.setdefault("train", {})
    overrides.setdefault("model", {})
    if overrides["model"].get("arch", args.arch) != args.arch:
        raise ConfigError(f"--set model.arch={overrides['model']['arch']!r}: the architecture is the "
                          f"command's ARCH ({args.arch!r})")
    overrides["model"]["arch"] = args.arch
    if args.synapse:
        overrides["synapse"]["mode"] = args.synapse
    if args.dpu:
        overrides["synapse"]["dpu"] = args.dpu
    if args.epochs is not None:
        overrides["train"]["epochs"] = args.epochs
    if args.seed is not None:
        overrides["train"]["seed"] = args.seed
    return overrides


def _no_config_hint(args) -> str:
    """Where a config error comes from the built-in defaults (no committed config for this
    architecture and dataset, and the defaults alone do not make its network): what exists."""
    spec = task_spec(args.arch)
    if args.config is not None or args.resume or not spec.configs:
        return ""
    try:
        load_config(None, {"model": {"arch": args.arch}})
        return ""
    except ConfigError:
        pass
    have = ", ".join(f"{d} (configs/{stem}_*.toml)" for d, stem in spec.configs.items())
    return f" [no committed {args.arch} config for --dataset {args.dataset}; committed: {have}; pass --config]"


RUN_LOCK = ".mcasim_train.lock"


def lock_run_folder(out: Path):
    """``(lock, None)``: an exclusive POSIX record lock on the run folder ``out`` for this process,
    released when ``lock`` is closed or the process ends (SIGKILL included); ``(None, pid)`` where
    another process holds it. Two processes never train into one folder (e.g. a sweep restarted
    beside a surviving child); the same process may take it again (in-process ``main`` calls)."""
    try:
        import fcntl
    except ImportError:   # pragma: no cover - not POSIX: no lock
        return open(os.devnull), None
    f = open(out / RUN_LOCK, "a+")
    try:
        fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        holder = f.read().strip()
        f.close()
        return None, holder
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    return f, None


def run(args) -> int:
    try:
        return _run(args)
    finally:     # the run folder's lock goes with the command (in-process callers: tests, sweeps)
        while _HELD_LOCKS:
            _HELD_LOCKS.pop().close()


_HELD_LOCKS: list = []


def _run(args) -> int:
    out = Path(args.out)
    try:
        if getattr(args, "config_missing", None):
            raise ConfigError(f"the committed config {args.config_missing} is not in this installation "
                              "(it lives in the repository's configs/): pass --config")
        if out.exists() and not out.is_dir():
            raise RunError(f"--out {out} is a file, not a run folder")
        overrides = command_overrides(args)
        if args.config and not args.resume:
            _check_arch(args.config, args.arch)
        if args.fallback_checkpoint and not args.resume:
            raise RunError("--fallback-checkpoint goes with --resume")
        if args.resume:
            state, state_file = load_checkpoint_file(out, fallback=args.fallback_checkpoint)
            cfg = load_config(out / "config.toml", overrides)
        else:
            try:
                cfg = load_config(args.config, overrides)
            except ConfigError as exc:
                raise ConfigError(f"{exc}{_no_config_hint(args)}") from exc
            if out.exists() and any(out.iterdir()) and not args.overwrite:
                raise RunError(f"run folder {out} exists and is not empty; use --resume to continue "
                               "it or --overwrite to replace its results")
        be = make_backend(args.backend, cfg.train.seed)
        ds = load_dataset(args.dataset, args.data_dir, allow_fallback=not args.no_fallback)
        try:     # the network(s) are built before the run folder is touched
            tr = Trainer(cfg, ds, be, out, progress=not args.quiet)
        except ValueError as exc:      # ConfigError, or a task that cannot train on this dataset
            raise ConfigError(str(exc)) from exc
    except (ConfigError, RunError, BackendError, DatasetError) as exc:
        print(f"mcasim train: error: {exc}", file=sys.stderr)
        return 2
    # bad input is reported above; the run folder is written only from here on
    out.mkdir(parents=True, exist_ok=True)
    lock, holder = lock_run_folder(out)
    if lock is None:
        print(f"mcasim train: error: run folder {out} is in use by another mcasim train (pid {holder or '?'}); "
              "wait for it to end", file=sys.stderr)
        return 2
    _HELD_LOCKS.append(lock)
    if not args.resume:
        for name in ("summary.json", "metrics.jsonl", CHECKPOINT, CHECKPOINT_PREV, LEGACY_CHECKPOINT):
            (out / name).unlink(missing_ok=True)      # --overwrite
    out.mkdir(parents=True, exist_ok=True)
    ckpt.write_text_atomic(out / "config.toml", cfg.to_toml())
    if args.resume:
        try:
            tr.load_state(state)
        except (RunError, KeyError, ValueError) as exc:
            print(f"mcasim train: error: {state_file}: cannot resume from it ({exc})", file=sys.stderr)
            return 2
        if state_file.name != CHECKPOINT:        # fell back: the previous checkpoint becomes the current one
            if (out / CHECKPOINT).is_file():
                os.replace(out / CHECKPOINT, out / "checkpoint.corrupt.npz")
            ckpt.link_or_copy(state_file, out / CHECKPOINT)
        write_metrics(out, tr.metrics)    # exactly the checkpointed epochs (none duplicated, none half-written)
        if str(cfg.synapse.dpu).startswith("tile-"):   # docs/dpu.md: the units' generators restart
            print(f"mcasim train: warning: synapse.dpu = {cfg.synapse.dpu!r}: the whole unit's rounding-bit "
                  "generators restart on resume, so this run continues statistically, not bit for bit as an "
                  "uninterrupted one (docs/dpu.md)", file=sys.stderr)
    elif (out / "metrics.jsonl").exists():
        (out / "metrics.jsonl").unlink()
    if not args.quiet:
        src = (f", config {args.config}" + (" (the committed default)" if getattr(args, "config_default", None) else "")
               if args.config and not args.resume else "")
        print(f"training {cfg.model.arch} on {ds.name} ({ds.source}), synapse={cfg.synapse.mode}, "
              f"backend={be.name}, dpu={cfg.synapse.dpu}{src} -> {out}", file=sys.stderr)
    try:
        summary = tr.run(on_epoch=_epoch_gate(cfg.train.epochs))
    except DivergedError as exc:
        print(f"mcasim train: error: {exc}", file=sys.stderr)
        return 1
    summary["command"] = "mcasim " + shlex.join(getattr(args, "_argv", []))
    try:
        from ..plots import plot_run
        plot_run(out, tr)
    except Exception as exc:  # plots must never lose a finished run
        print(f"warning: plotting failed: {exc}", file=sys.stderr)
    ckpt.crash_point("summary")
    # last and atomically: a run folder with a summary.json is finished
    ckpt.write_text_atomic(out / "summary.json", json.dumps(summary, indent=2))
    m = summary["metric"]
    print(f"{m.replace('_', ' ')} {summary[m]:.4f} (best {summary['best_' + m]:.4f} at epoch "
          f"{summary['best_epoch']}); results in {out}/summary.json")
    return 0
