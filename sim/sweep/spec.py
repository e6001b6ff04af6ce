"""Sweep specs: TOML -> a validated list of trials (each an ordinary ``mcasim train`` command).

A spec (docs/sweeps.md has the full reference)::

    [sweep]
    arch = "mlp"                       # passed through to `mcasim train ARCH`
    dataset = "mnist"                  # mnist | digits
    config = "../mlp_mnist_pcm.toml"   # base config; relative paths are relative to the spec file
    seeds = [0, 1, 2]                  # one trial per seed and point (omitted: the config's seed)
    set = ["train.lr=0.1"]             # overrides for every trial (`--set` syntax)
    epochs = 20                        # optional (default: the config's)
    backend = "numpy"                  # optional (default: `mcasim train`'s)
    combine = "grid"                   # grid (cross the axes) | zip (walk them together)
    metric = "test_accuracy"           # per-epoch figure: best/final columns, early stopping
                                       # (default: the task's: test_accuracy, valid_bpc, fd)
    mode = "max"                       # max | min (default: max for accuracies and coverage, else min)
    retries = 1                        # re-runs of a failed trial (each resumes from its checkpoint)

    [[axis]]                           # a knob: key + values ...
    key = "synapse.refresh_threshold"
    values = [0.45, 0.9]

    [[axis]]                           # ... or a list of --set overrides (a string or a list of strings each) ...
    name = "lr"
    set = ["train.lr=0.05", ["train.lr=0.1", "train.lr_decay=0.9"]]

    [[axis]]                           # ... or named points, each with its own config and overrides
    name = "run"
    points = [{label = "fp32", config = "../mlp_mnist_fp32.toml"},
              {label = "pcm no drift", set = ["synapse.drift=false"]}]

    [search]                           # optional random search, crossed with the axes and seeds
    samples = 8
    seed = 0
    params = {"train.lr" = {low = 0.01, high = 1.0, scale = "log"}}

    [early_stop]                       # optional; Ray Tune's schedulers (needs the Ray engine)
    scheduler = "asha"                 # asha | median
    grace_epochs = 2
    reduction_factor = 2

Everything is checked before any trial starts: unknown keys, empty axes, and every trial's resolved
configuration through ``sim.config.load_config`` (so an override the config rejects fails with the
config's own message naming the key).
"""
from __future__ import annotations

import contextlib
import io
import math
import os
import random
import re
import tomllib
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path

from sim.config import ARCHS, ConfigError, load_config, parse_sets
from sim.config import toml_value as config_toml_value
from sim.tasks import epoch_metrics, metric_mode, task_class

SCHEDULERS = ("asha", "median")

SWEEP_KEYS = {"arch", "dataset", "config", "seeds", "set", "epochs", "backend", "combine", "metric", "mode",
              "retries", "name", "description"}
AXIS_KEYS = {"name", "key", "values", "set", "points"}
POINT_KEYS = {"label", "config", "set"}
SEARCH_KEYS = {"samples", "seed", "params"}
PARAM_KEYS = {"low", "high", "scale", "type", "values"}
EARLY_KEYS = {"scheduler", "grace_epochs", "reduction_factor"}
TOP_KEYS = {"sweep", "axis", "search", "early_stop"}


class SpecError(ValueError):
    """Invalid sweep spec."""


def _unknown(where: str, got: dict, known: set) -> None:
    bad = sorted(set(got) - known)
    if bad:
        raise SpecError(f"unknown key{'s' if len(bad) > 1 else ''} {', '.join(bad)} in {where}; "
                        f"known: {', '.join(sorted(known))}")


def toml_value(v) -> str:
    """A value in TOML syntax, as `--set` expects it (lists without spaces: one shell word)."""
    return config_toml_value(v, sep=",")


def _label_value(v) -> str:
    if isinstance(v, (list, tuple)):
        return ",".join(_label_value(x) for x in v)
    if isinstance(v, float):
        return f"{v:g}"
    return str(v).lower() if isinstance(v, bool) else str(v)


def _num(v):
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


@dataclass
class Point:
    """One value of one axis: a label, its `--set` overrides, optionally a config file and a number."""
    label: str
    sets: list
    config: str | None = None
    value: float | None = None       # numeric position for plots (None: categorical)
    tag: str = ""                    # the point's part of the trial folder name (default: label)


@dataclass
class Axis:
    name: str
    points: list
    log: bool = False                # plot on a log scale (search params with scale = "log")


@dataclass
class Trial:
    id: str
    point: str                       # id of the point (all knobs, no seed)
    knobs: dict                      # axis name -> label
    values: dict                     # axis name -> number or None
    seed: int                        # resolved seed (the config's when the spec has no seeds)
    pass_seed: bool
    config: str | None               # absolute path of the config file
    sets: list
    epochs: int                      # resolved number of epochs
    pass_epochs: bool
    arch: str
    dataset: str
    backend: str | None = None

    def argv(self, out: Path, data_dir: str | None = None, display: bool = False,
             epochs: int | None = None) -> list[str]:
        """`mcasim train` arguments for this trial (absolute paths; ``display``: relative to cwd).

        ``epochs``: stop after that many epochs instead (a trial stopped early)."""
        def path(p):
            p = str(p)
            if display:
                rel = os.path.relpath(p)
                return rel if not rel.startswith("..") else p
            return str(Path(p).resolve())
        a = ["train", self.arch, "--dataset", self.dataset]
        if self.config:
            a += ["--config", path(self.config)]
        if self.pass_seed:
            a += ["--seed", str(self.seed)]
        for s in self.sets:
            a += ["--set", s]
        if epochs is not None or self.pass_epochs:
            a += ["--epochs", str(epochs if epochs is not None else self.epochs)]
        if self.backend:
            a += ["--backend", self.backend]
        if data_dir:
            a += ["--data-dir", path(data_dir)]
        return a + ["--quiet", "--out", path(out)]


@dataclass
class Spec:
    path: Path
    arch: str
    dataset: str
    config: str | None
    seeds: list | None
    sets: list
    epochs: int | None
    backend: str | None
    combine: str
    metric: str
    mode: str
    retries: int
    axes: list
    search: dict | None
    early_stop: dict | None
    name: str = ""
    trials: list = field(default_factory=list)


def _str_list(where: str, v) -> list[str]:
    if isinstance(v, str):
        return [v]
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise SpecError(f"{where} must be a --set string or a list of them, got {v!r}")
    return list(v)


def _resolve(base: Path, p) -> str:
    if not isinstance(p, str) or not p:
        raise SpecError(f"config must be a path string, got {p!r}")
    q = Path(p).expanduser()
    return str(q if q.is_absolute() else (base / q).resolve())


def _set_label(sets: list[str]) -> tuple[str, float | None]:
    """Label of an override group: 'key=value' without the section; numeric value if a single number."""
    parts, value = [], None
    for s in sets:
        k, _, v = s.partition("=")
        parts.append(f"{k.split('.', 1)[-1]}={v}")
    if len(sets) == 1:
        try:
            value = _num(tomllib.loads(f"v = {sets[0].partition('=')[2]}")["v"])
        except tomllib.TOMLDecodeError:
            value = None
    return " ".join(parts), value


def _axis(i: int, a, base: Path) -> Axis:
    where = f"[[axis]] #{i + 1}"
    if not isinstance(a, dict):
        raise SpecError(f"{where} must be a table")
    _unknown(where, a, AXIS_KEYS)
    kinds = [k for k in ("values", "set", "points") if k in a]
    if len(kinds) != 1:
        raise SpecError(f"{where} needs exactly one of 'values' (with 'key'), 'set' or 'points', got {kinds or 'none'}")
    kind = kinds[0]
    items = a[kind]
    if not isinstance(items, list):
        raise SpecError(f"{where}.{kind} must be a list")
    name = a.get("name") or (a["key"].split(".", 1)[-1] if isinstance(a.get("key"), str) else None)
    if not name and kind == "set" and items:
        first = _str_list(f"{where}.set[0]", items[0])
        name = first[0].partition("=")[0].split(".", 1)[-1] if len(first) == 1 else None
    if not isinstance(name, str) or not name:
        raise SpecError(f"{where} needs a 'name'")
    where = f"axis {name!r}"
    if not items:
        raise SpecError(f"{where} is empty: give it at least one value")
    points = []
    if kind == "values":
        key = a.get("key")
        if not isinstance(key, str) or "." not in key:
            raise SpecError(f"{where}: 'values' needs 'key' = \"SECTION.KEY\", got {key!r}")
        for v in items:
            points.append(Point(_label_value(v), [f"{key}={toml_value(v)}"], value=_num(v),
                                tag=f"{name}={_label_value(v)}"))
    elif kind == "set":
        if "key" in a:
            raise SpecError(f"{where}: 'key' goes with 'values', not with 'set'")
        for j, v in enumerate(items):
            sets = _str_list(f"{where}.set[{j}]", v)
            label, value = _set_label(sets)
            points.append(Point(label, sets, value=value))
    else:
        if "key" in a:
            raise SpecError(f"{where}: 'key' goes with 'values', not with 'points'")
        for j, p in enumerate(items):
            pw = f"{where} point {j + 1}"
            if not isinstance(p, dict):
                raise SpecError(f"{pw} must be a table {{label = ..., config = ..., set = [...]}}")
            _unknown(pw, p, POINT_KEYS)
            if not isinstance(p.get("label"), str) or not p["label"]:
                raise SpecError(f"{pw} needs a 'label'")
            cfg = _resolve(base, p["config"]) if "config" in p else None
            points.append(Point(p["label"], _str_list(f"{pw}.set", p.get("set", [])), cfg))
    labels = [p.label for p in points]
    if len(set(labels)) != len(labels):
        raise SpecError(f"{where}: duplicate values {sorted({x for x in labels if labels.count(x) > 1})}")
    return Axis(name, points)


def _search(s, base: Path) -> tuple[dict, list[Axis]]:
    if not isinstance(s, dict):
        raise SpecError("[search] must be a table")
    _unknown("[search]", s, SEARCH_KEYS)
    n = s.get("samples")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise SpecError(f"search.samples must be a positive integer, got {n!r}")
    seed = s.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise SpecError(f"search.seed must be an integer, got {seed!r}")
    params = s.get("params")
    if not isinstance(params, dict) or not params:
        raise SpecError("search.params must be a non-empty table {\"SECTION.KEY\" = {low = ..., high = ...}}")
    rng = random.Random(seed)
    cols = {}
    logs = {}
    for key, p in params.items():
        where = f"search.params.{key!r}"
        if "." not in key:
            raise SpecError(f"{where}: the key must be SECTION.KEY")
        if not isinstance(p, dict):
            raise SpecError(f"{where} must be a table")
        _unknown(where, p, PARAM_KEYS)
        if "values" in p:
            vals = p["values"]
            if set(p) - {"values"}:
                raise SpecError(f"{where}: 'values' (a choice) takes no low/high/scale/type")
            if not isinstance(vals, list) or not vals:
                raise SpecError(f"{where}.values must be a non-empty list")
            cols[key] = [vals[rng.randrange(len(vals))] for _ in range(n)]
            logs[key] = False
            continue
        lo, hi = p.get("low"), p.get("high")
        if _num(lo) is None or _num(hi) is None or not lo < hi:
            raise SpecError(f"{where} needs numbers low < high, got low={lo!r} high={hi!r}")
        scale, typ = p.get("scale", "linear"), p.get("type", "int" if isinstance(lo, int) and isinstance(hi, int) else "float")
        if scale not in ("linear", "log"):
            raise SpecError(f"{where}.scale must be 'linear' or 'log', got {scale!r}")
        if typ not in ("float", "int"):
            raise SpecError(f"{where}.type must be 'float' or 'int', got {typ!r}")
        if scale == "log" and lo <= 0:
            raise SpecError(f"{where}: a log range needs low > 0, got {lo!r}")
        out = []
        for _ in range(n):
            u = rng.random()
            x = math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo))) if scale == "log" else lo + u * (hi - lo)
            out.append(int(round(x)) if typ == "int" else float(f"{x:.4g}"))
        cols[key] = out
        logs[key] = scale == "log"
    # one axis whose points are the samples; plots get one panel per parameter
    pts = []
    for i in range(n):
        sets = [f"{k}={toml_value(v[i])}" for k, v in cols.items()]
        pts.append(Point(f"r{i:03d}", sets))
    info = {"samples": n, "seed": seed, "params": {k: {"values": v, "log": logs[k]} for k, v in cols.items()}}
    return info, [Axis("search", pts)]


def _early(e) -> dict:
    if not isinstance(e, dict):
        raise SpecError("[early_stop] must be a table")
    _unknown("[early_stop]", e, EARLY_KEYS)
    sch = e.get("scheduler", "asha")
    if sch not in SCHEDULERS:
        raise SpecError(f"early_stop.scheduler must be one of {SCHEDULERS}, got {sch!r}")
    g = e.get("grace_epochs", 1)
    r = e.get("reduction_factor", 2)
    if not isinstance(g, int) or isinstance(g, bool) or g < 1:
        raise SpecError(f"early_stop.grace_epochs must be a positive integer, got {g!r}")
    if _num(r) is None or r <= 1:
        raise SpecError(f"early_stop.reduction_factor must be a number > 1, got {r!r}")
    return {"scheduler": sch, "grace_epochs": g, "reduction_factor": r}


def slug(s: str) -> str:
    s = re.sub(r"[^A-Za-z0-9.=,+-]+", "_", s).strip("_")
    return s or "x"


def parse_spec(d: dict, path: Path) -> Spec:
    """Validate a spec dict (from TOML) and expand it into trials."""
    base = path.parent
    _unknown("the spec (top level)", d, TOP_KEYS)
    sw = d.get("sweep")
    if not isinstance(sw, dict):
        raise SpecError("the spec needs a [sweep] table (with at least arch and dataset)")
    _unknown("[sweep]", sw, SWEEP_KEYS)
    arch, dataset = sw.get("arch", "mlp"), sw.get("dataset", "mnist")
    for k, v in (("arch", arch), ("dataset", dataset)):
        if not isinstance(v, str) or not v:
            raise SpecError(f"sweep.{k} must be a string, got {v!r}")
    config = _resolve(base, sw["config"]) if "config" in sw else None
    seeds = sw.get("seeds")
    if seeds is not None:
        if not isinstance(seeds, list) or not seeds:
            raise SpecError(f"sweep.seeds must be a non-empty list of integers, got {seeds!r}")
        if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
            raise SpecError(f"sweep.seeds must be non-negative integers, got {seeds!r}")
        if len(set(seeds)) != len(seeds):
            raise SpecError(f"sweep.seeds has duplicates: {seeds!r}")
    sets = _str_list("sweep.set", sw.get("set", []))
    epochs = sw.get("epochs")
    if epochs is not None and (not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1):
        raise SpecError(f"sweep.epochs must be a positive integer, got {epochs!r}")
    backend = sw.get("backend")
    if backend is not None and not isinstance(backend, str):
        raise SpecError(f"sweep.backend must be a string, got {backend!r}")
    combine = sw.get("combine", "grid")
    if combine not in ("grid", "zip"):
        raise SpecError(f"sweep.combine must be 'grid' or 'zip', got {combine!r}")
    try:
        metrics = epoch_metrics(arch)
    except ValueError:
        raise SpecError(f"sweep.arch must be one of {', '.join(ARCHS)}, got {arch!r}") from None
    metric = sw.get("metric", task_class(arch).metric)
    if metric not in metrics:
        raise SpecError(f"sweep.metric for {arch} runs must be one of {', '.join(metrics)} (a per-epoch "
                        f"figure of metrics.jsonl), got {metric!r}")
    mode = sw.get("mode", metric_mode(arch, metric))
    if mode not in ("max", "min"):
        raise SpecError(f"sweep.mode must be 'max' or 'min', got {mode!r}")
    retries = sw.get("retries", 1)
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise SpecError(f"sweep.retries must be an integer >= 0, got {retries!r}")
    raw_axes = d.get("axis", [])
    if not isinstance(raw_axes, list):
        raise SpecError("axes are written [[axis]] (an array of tables)")
    axes = [_axis(i, a, base) for i, a in enumerate(raw_axes)]
    names = [a.name for a in axes]
    if len(set(names)) != len(names):
        raise SpecError(f"duplicate axis names: {names}")
    if combine == "zip" and len({len(a.points) for a in axes}) > 1:
        raise SpecError("combine = 'zip' needs axes of equal length, got "
                        + ", ".join(f"{a.name}: {len(a.points)}" for a in axes))
    search, search_axes = (None, [])
    if "search" in d:
        search, search_axes = _search(d["search"], base)
    early = _early(d["early_stop"]) if "early_stop" in d else None
    spec = Spec(path, arch, dataset, config, seeds, sets, epochs, backend, combine, metric, mode, retries,
                axes, search, early, name=str(sw.get("name", path.stem)))
    spec.trials = expand(spec, search_axes)
    return spec


def expand(spec: Spec, search_axes: list[Axis]) -> list[Trial]:
    if spec.combine == "zip" and spec.axes:
        combos = [tuple(a.points[i] for a in spec.axes) for i in range(len(spec.axes[0].points))]
    else:
        combos = list(product(*[a.points for a in spec.axes]))
    if search_axes:
        combos = [c + (p,) for c in combos for p in search_axes[0].points]
    all_axes = spec.axes + search_axes
    trials, seen = [], {}
    for combo in combos:
        knobs = {a.name: p.label for a, p in zip(all_axes, combo)}
        values = {a.name: p.value for a, p in zip(all_axes, combo)}
        if spec.search:
            for k, info in spec.search["params"].items():
                i = int(combo[-1].label[1:])
                v = info["values"][i]
                knobs[k] = _label_value(v)
                values[k] = _num(v)
        config = spec.config
        sets = list(spec.sets)
        for p in combo:
            if p.config:
                config = p.config
            sets += p.sets
        point = "_".join(slug(p.tag or p.label) for p in combo) or "base"
        if len(point) > 80:
            import hashlib
            point = point[:70] + "-" + hashlib.sha1(point.encode()).hexdigest()[:8]
        if point in seen:
            seen[point] += 1
            point = f"{point}-{seen[point]}"
        else:
            seen[point] = 0
        for seed in (spec.seeds if spec.seeds is not None else [None]):
            t = Trial(id="", point=point, knobs=knobs, values=values, seed=-1, pass_seed=seed is not None,
                      config=config, sets=sets, epochs=spec.epochs or 0, pass_epochs=spec.epochs is not None,
                      arch=spec.arch, dataset=spec.dataset, backend=spec.backend)
            cfg = _check(t, seed)
            t.seed = cfg.train.seed
            t.epochs = cfg.train.epochs
            t.id = f"{point}_seed{t.seed}" if point != "base" else f"seed{t.seed}"
            trials.append(t)
    ids = [t.id for t in trials]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise SpecError(f"two trials would share a folder ({', '.join(dup)}): the spec repeats a point or a seed")
    return trials


def _check(t: Trial, seed):
    """Resolve the trial's configuration exactly as `mcasim train` will; ConfigError -> SpecError."""
    try:
        ov = parse_sets(t.sets)
        ov.setdefault("train", {})
        if seed is not None:
            ov["train"]["seed"] = seed
        if t.pass_epochs:
            ov["train"]["epochs"] = t.epochs
        cfg = load_config(t.config, ov)
    except ConfigError as exc:
        where = ", ".join(f"{k}={v}" for k, v in t.knobs.items())
        raise SpecError(f"{exc}" + (f" (in the trial {where})" if where else "")) from exc
    _check_argv(t, seed)
    return cfg


def _check_argv(t: Trial, seed) -> None:
    """Let `mcasim train`'s own argument parser judge arch, dataset and backend (if it is importable)."""
    try:
        from sim.cli import build_parser
        parser = build_parser()
    except Exception:  # pragma: no cover - only the main() entry point is a stable interface
        return
    probe = Trial(**{**t.__dict__, "seed": seed if seed is not None else 0})
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            parser.parse_args(probe.argv(Path("/nonexistent/probe")))
    except SystemExit:
        msg = [ln for ln in err.getvalue().splitlines() if ln.strip()]
        raise SpecError(msg[-1] if msg else "`mcasim train` rejected the trial's arguments") from None


def load_spec(path: str | Path) -> Spec:
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"sweep spec not found: {p}")
    try:
        d = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{p}: invalid TOML: {exc}") from exc
    return parse_spec(d, p.resolve())
