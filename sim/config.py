"""Validated training configuration (TOML <-> dataclasses).

A config file has the sections ``[train]``, ``[model]``, ``[synapse]``, ``[tile]``, ``[dpu]``,
``[device]`` and ``[faults]`` (device faults, gpu_model/faults.py), plus one section per
registered task that has one (``[lstm]``, ``[gan]``: the task
registry of :mod:`sim.tasks` owns those sections, their checks and the count of weight layers;
this module names no task). Every key is optional and defaults to the values below. Unknown
sections or keys, wrong types, non-finite numbers and out-of-range values raise
:class:`ConfigError` with a one-line message naming the key. The physical range of each quantity
is documented beside its field.
"""
from __future__ import annotations

import math
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from gpu_model.faults import FaultConfig, get_fault_preset
from gpu_model.presets import IDEAL, PCM_PRESETS, PresetError, TilePreset, get_pcm_preset
from gpu_model.tile_config import ENGINES
from rtl.spec import DPUSpec, SpecError

# [tile] keys that are not TilePreset fields: the device-update engine (gpu_model/tile_config.py
# ENGINES; read by Config.tile_engine, used by sim/tasks/models.py tile_config)
TILE_ENGINE_KEYS = ("engine",)
DEFAULT_TILE_ENGINE = "reference"

SYNAPSE_MODES = ("fp32", "ideal", "pcm")
DPU_CHOICES = ("golden", "rtl", "tile-golden", "tile-rtl")   # synapse.dpu (rtl/dpu.py DPU_KINDS + WHOLE_UNIT_KINDS)
WHOLE_UNIT_DPUS = ("tile-golden", "tile-rtl")                # synapse.dpu values that are the whole unit
OPTIMIZERS = ("sgd", "momentum", "adam")
INITS = ("xavier_uniform", "xavier_normal", "he_uniform", "he_normal")
ACTIVATIONS = ("sigmoid", "relu", "tanh")
BASE_SECTIONS = ("train", "model", "synapse")     # dataclass sections every task reads
OVERRIDE_SECTIONS = ("tile", "dpu", "device")     # field overrides of TilePreset, DPUSpec, PCMPreset

# --- ranges of the sizes and physical quantities (each with its reason) --------------------------
INT64 = (-2 ** 63, 2 ** 63 - 1)   # every integer: TOML's range, so that a run's config.toml reads back
MAX_WIDTH = 65_536               # layer widths, channels, state sizes: a 65,536 x 65,536 matrix is
                                 # already 4.3 G synapses, beyond what the simulator can hold
MAX_LAYERS = 1_000               # entries of a layer list (model.hidden, model.conv, per-layer values):
                                 # the largest committed network has 6 weight layers
MAX_KERNEL = 31                  # model.kernel: odd, <= 31 (same padding; larger than any image here)
W_MAX_RANGE = (1e-3, 1e3)        # synapse.w_max (weight units): beta = w_max / g_max, the granule
                                 # w_max * epsilon / (N g_max) and the normalised reads W / w_max stay
                                 # normal float32 numbers (1e-300 underflows and trains into NaN);
                                 # 3 decades either side of the committed 0.25..4.4
EPSILON_REL_MIN = 1e-6           # synapse.epsilon_uS >= 1e-6 g_max: a smaller step is lost in the
                                 # float32 rounding of a conductance near g_max (2^-24 g_max per ULP)
MAX_DEVICES_PER_SIDE = 64        # synapse.devices_per_side: engineering bound (Boybat et al. 2018 use
                                 # up to 7; the committed configs up to 8, the sweeps 16)


class ConfigError(ValueError):
    """Invalid configuration."""


def short(v, limit: int = 60) -> str:
    """``repr(v)`` cut to ``limit`` characters (an error message stays one short line)."""
    r = repr(v)
    return r if len(r) <= limit else r[:limit - 3] + "..."


def __getattr__(name):          # ARCHS: the registered tasks (sim.tasks), imported when first asked
    if name == "ARCHS":
        from .tasks import archs
        return archs()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# [tile] fields that may be given per weight layer (a list, like synapse.w_max): the ADC range of
# a tile is a programmable gain, set per array (engineering choice; docs/analog.md)
PER_LAYER_TILE = ("adc_range", "adc_range_backward")


def layer_values(key: str, v, n_layers: int) -> list:
    """``v`` as one value per weight layer: a scalar or a 1-list is repeated; else it needs n_layers."""
    vals = list(v) if isinstance(v, (list, tuple)) else [v]
    if len(vals) == 1:
        vals = vals * n_layers
    if len(vals) != n_layers:
        raise ConfigError(f"{key}: need 1 or {n_layers} values (one per layer), got {len(vals)}")
    return vals


@dataclass
class TrainSection:
    epochs: int = 15                 # passes over the training set (>= 1)
    batch_size: int = 10             # mini-batch size (RESEARCH_NOTES prototype: 10; >= 1)
    lr: float = 0.1                  # learning rate (weight units per unit gradient; > 0)
    lr_decay: float = 1.0            # multiplicative decay of lr per epoch, in (0, 1]
    lr_min: float = 0.0              # floor of the decayed lr (>= 0)
    optimizer: str = "sgd"           # sgd | momentum | adam (digital domain; output feeds chi)
    momentum: float = 0.9            # momentum coefficient, in [0, 1)
    adam_beta1: float = 0.9          # Adam first-moment decay, in [0, 1) (Kingma & Ba 2015: 0.9)
    adam_beta2: float = 0.999        # Adam second-moment decay, in [0, 1) (Kingma & Ba 2015: 0.999)
    adam_eps: float = 1e-8           # Adam denominator offset (> 0; Kingma & Ba 2015)
    seed: int = 0                    # seed of every random stream, in [0, 2^63 - 1]
    seconds_per_batch: float = 0.001 # simulated time per mini-batch (s, >= 0); drift during training.
                                     # 1 ms: the architecture's own pace (docs/training.md)
    train_subset: int = 0            # use only the first N training images (0: all)
    test_subset: int = 0             # evaluate on the first N test images (0: all)
    eval_batch: int = 1000           # test-set MVM batch (>= 1)
    augment: bool = True             # image datasets (NHWC): seeded random crop (4-pixel padding) and
                                     # horizontal flip, in digital; ignored for flat inputs (MNIST MLP)


@dataclass
class ModelSection:
    arch: str = "mlp"                # a registered task (sim.tasks: mlp | cnn | lstm | gan)
    hidden: list = field(default_factory=lambda: [250])   # hidden dense layer widths, each in
                                     # [1, MAX_WIDTH] (cnn: after the conv stack; may be empty)
    activation: str = "sigmoid"      # sigmoid | relu | tanh
    conv: list = field(default_factory=list)  # cnn: output channels per conv layer, "M" = 2x2 pooling,
                                     # e.g. [32, "M", 64, "M"] (VGG notation)
    kernel: int = 3                  # cnn: conv kernel size, odd, 1..MAX_KERNEL (same padding, stride 1)
    pool: str = "max"                # cnn: max | avg pooling for "M"
    batch_norm: bool = False         # digital BatchNorm after every conv / hidden dense layer
    dropout: float = 0.0             # digital dropout before dense layers (cnn: also the first), [0, 1)
    init: str = "xavier_uniform"     # initial weight distribution (programmed by program-and-verify)
    init_gain: float = 1.0           # scale of the initial distribution (> 0)
    output_gain: bool = False        # learned digital gain per output column on each MVM result
                                     # (y = g * (W x) + b): absorbs drift and device-range scaling
    output_gain_lr_scale: float = 1.0  # learning rate of the gains relative to train.lr (>= 0)


@dataclass
class SynapseSection:
    mode: str = "pcm"                # fp32 | ideal | pcm
    preset: str = "jap2018"          # PCM preset for mode "pcm" (gpu_model/presets.py)
    w_max: list = field(default_factory=lambda: [1.1, 4.4])      # per layer: w_max = beta * g_max
                                     # (weight units), each in W_MAX_RANGE
    epsilon_uS: list = field(default_factory=lambda: [0.5, 0.5])  # per layer device granularity (µS)
                                     # assumed by the digital unit: in [1e-6 g_max, g_max) of the
                                     # device (a step of the whole range or more is no granularity:
                                     # inf would never pulse)
    refresh_threshold: float = 0.45  # refresh a pair when a device passes this fraction of g_max, in (0, 1]
                                     # (0.45 x 20 uS: below where the JAP-2018 mean SET step vanishes)
    refresh_tolerance_uS: float = -1.0  # program-and-verify tolerance of refresh (µS, < g_max; <0: preset's)
    common_mode_uS: float = 0.0      # >0: initial programming and refresh write both devices of a
                                     # pair at this common-mode level (no device left at RESET);
                                     # in [0, refresh_threshold x g_max)
    read_noise: bool = True          # ablation switch: read noise on crossbar reads
    drift: bool = True               # ablation switch: conductance drift
    dpu: str = "golden"              # the digital unit (rtl/dpu.py; docs/dpu.md), one of DPU_CHOICES:
                                     # golden: chi/pulse lanes (golden model) fed the optimizer's float update
                                     # rtl: the same lanes as their Verilator model (bit-identical to golden)
                                     # tile-golden: the whole unit (WholeUnitDigital on GoldenTile): -lr d^T x from the batch's factors
                                     # tile-rtl: the whole unit as the Verilator model of rtl/tile.py (bit-identical to tile-golden)
                                     # (tile-*: plain SGD, no verified updates, NumPy backend, classifier tasks)
    verified_update: bool = False    # the digital unit reads each pulsed device before and after its
                                     # pulses and returns (asked - measured change) to chi with the
                                     # next update (sim/nn/stores.py AnalogWeights); 2 reads per
                                     # pulsed device (+1 per refresh), counted as update_verify_reads
    verify_gain: float = 1.0         # share of (asked - measured) returned to chi, in (0, 1]: below 1
                                     # damps the corrections (fewer corrective pulses; the rest of
                                     # each error stays in the weight). Engineering knob
    verify_anti_windup: bool = False # verified updates: no correction returned for a synapse whose
                                     # refresh cut its weight at the range edge (sim/nn/stores.py);
                                     # false (the default) keeps runs made before it as they were.
                                     # Like verify_gain, no effect without verified_update (so that
                                     # --set synapse.verified_update=false ablates a verified config)
    devices_per_side: int = 1        # N PCM devices per side of a synapse (multi-memristive synapse,
                                     # Boybat et al. 2018): steps of w_max / (N g_max) per pulse over the
                                     # same range, N x the devices; 1 = one differential pair;
                                     # 1..MAX_DEVICES_PER_SIDE


def _task_sections() -> dict:
    from .tasks import registry
    return {arch: spec.section() for arch, spec in registry().items() if spec.section is not None}


@dataclass
class Config:
    train: TrainSection = field(default_factory=TrainSection)
    model: ModelSection = field(default_factory=ModelSection)
    synapse: SynapseSection = field(default_factory=SynapseSection)
    sections: dict = field(default_factory=_task_sections)   # every registered task's section by
                                               # name, read as cfg.<name> (sim.tasks)
    tile: dict = field(default_factory=dict)   # overrides of gpu_model.presets.TilePreset fields;
                                               # the PER_LAYER_TILE ones also as one value per weight layer
    dpu: dict = field(default_factory=dict)    # overrides of rtl.spec.DPUSpec fields
    device: dict = field(default_factory=dict) # overrides of the PCM preset's fields (synapse.preset;
                                               # gpu_model.presets.PCMPreset), for ablation studies:
                                               # e.g. set_sigma_hist = 0.0. Empty in every committed
                                               # config: device statistics stay as published
    faults: dict = field(default_factory=dict) # [faults]: ``preset`` (gpu_model.faults.FAULT_PRESETS,
                                               # default "none") and overrides of its FaultConfig
                                               # fields (rates, endurance, exclusion policy; each
                                               # field's unit and range: gpu_model/faults.py). Empty:
                                               # no faults, the tiles run exactly as without it

    def __getattr__(self, name):               # cfg.<task section name>.<key>
        sections = self.__dict__.get("sections")
        if sections is not None and name in sections:
            return sections[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # --- derived --------------------------------------------------------------------------------
    def tile_preset(self, layer: int | None = None) -> TilePreset:
        """The tile peripherals of weight layer ``layer`` (a list in ``[tile]`` for one of
        ``PER_LAYER_TILE`` gives one value per weight layer; None: every list must be uniform)."""
        kw = {}
        for k, v in self.tile.items():
            if k in TILE_ENGINE_KEYS:
                continue                     # not a peripheral: read by tile_engine()
            if isinstance(v, (list, tuple)):
                if k not in PER_LAYER_TILE:
                    raise ConfigError(f"tile.{k}: one value expected (per-layer lists only for "
                                      f"{', '.join(PER_LAYER_TILE)}), got {short(list(v))}")
                vals = layer_values(f"tile.{k}", v, self.n_weight_layers())
                if layer is None and len(set(vals)) > 1:
                    raise ConfigError(f"tile.{k} differs per layer: ask for one layer's tile preset")
                v = vals[0 if layer is None else layer]
            kw[k] = v
        return TilePreset(**kw)

    def tile_engine(self) -> str:
        """``tile.engine``: which engine runs the tiles' device-update path (gpu_model/engines.py):
        "reference" (the array code that made every published table; the default) or "fused".
        (Kept by the tile's owner: the AnalogTile of sim/tasks/models.py reads it.)"""
        e = self.tile.get("engine", DEFAULT_TILE_ENGINE)
        if e not in ENGINES:
            raise ConfigError(f"tile.engine must be one of {', '.join(ENGINES)}, got {e!r}")
        return e

    def pcm_preset(self):
        """The device model of ``synapse.mode = "pcm"``: ``synapse.preset`` with the ``[device]``
        overrides applied (validated by the preset; a bad field or value raises PresetError)."""
        base = get_pcm_preset(self.synapse.preset)
        return base.with_overrides(**self.device) if self.device else base

    def dpu_spec(self) -> DPUSpec:
        return DPUSpec(**self.dpu)

    def fault_config(self) -> FaultConfig:
        """The tiles' device faults: ``faults.preset`` with the other ``[faults]`` keys as overrides
        (gpu_model/faults.py; validated there, a bad value raises PresetError)."""
        return fault_config_from(self.faults)

    def per_layer(self, name: str, n_layers: int) -> list[float]:
        return [float(x) for x in layer_values(f"synapse.{name}", getattr(self.synapse, name), n_layers)]

    def n_weight_layers(self) -> int:
        """Weight matrices of the network, in the order of the per-layer lists (the task's count,
        ``TaskSpec.n_weight_layers``; ``make_task`` checks it against the built network)."""
        from .tasks import task_spec
        return task_spec(self.model.arch).n_weight_layers(self)

    def to_dict(self) -> dict:
        d = {name: asdict(getattr(self, name)) for name in BASE_SECTIONS}
        d.update({name: asdict(sec) for name, sec in self.sections.items()})
        d.update({name: dict(getattr(self, name)) for name in OVERRIDE_SECTIONS})
        if self.faults:                       # written only when set: fault-free configs read as before
            d[FAULTS_SECTION] = dict(self.faults)
        return d

    def to_toml(self) -> str:
        return dump_toml(self.to_dict())


# --- reading values ----------------------------------------------------------------------------
def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _finite(where: str, v) -> float:
    try:
        x = float(v)
    except OverflowError:
        x = math.inf
    if not math.isfinite(x):
        raise ConfigError(f"{where} must be a finite number, got {short(v)}")
    return x


def _coerce(section: str, key: str, default: Any, value: Any):
    """``value`` as the type of ``default`` (the field's), or ConfigError naming ``section.key``."""
    where = f"{section}.{key}"
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {short(value)}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {short(value)}")
        if not INT64[0] <= value <= INT64[1]:
            raise ConfigError(f"{where} must be an integer within +-2^63 (TOML's range), got {short(value)}")
        return value
    if isinstance(default, float):
        if not _is_number(value):
            raise ConfigError(f"{where} must be a number, got {short(value)}")
        return _finite(where, value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {short(value)}")
        return value
    if isinstance(default, list):
        if _is_number(value):
            return [value]
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a list, got {short(value)}")
        if len(value) > MAX_LAYERS:
            raise ConfigError(f"{where}: at most {MAX_LAYERS} entries (one per layer), got {len(value)}")
        return list(value)
    return value


def _table(name: str, data) -> dict:
    if not isinstance(data, dict):
        raise ConfigError(f"[{name}] must be a table of keys, got {short(data)}")
    return data


def _unknown(name: str, k, known) -> ConfigError:
    return ConfigError(f"unknown key {name}.{k}; known keys: {', '.join(sorted(known))}")


def _section(cls, name: str, data):
    data = _table(name, data)
    obj = cls()
    known = {f.name for f in fields(cls)}
    for k, v in data.items():
        if k not in known:
            raise _unknown(name, k, known)
        setattr(obj, k, _coerce(name, k, getattr(obj, k), v))
    return obj


def _overrides(name: str, reference, data, per_layer: tuple = (), extra: dict | None = None) -> dict:
    """``[tile]`` / ``[dpu]`` / ``[device]``: overrides of the dataclass ``reference``'s fields,
    each of its field's type (the keys in ``per_layer`` also as a list of numbers, one per layer);
    ``extra``: more known keys with their defaults (``[tile]``: the engine, TILE_ENGINE_KEYS)."""
    data = _table(name, data)
    known = {f.name: getattr(reference, f.name) for f in fields(reference)}
    known.update(extra or {})
    out = {}
    for k, v in data.items():
        if k not in known:
            raise _unknown(name, k, known)
        if k in per_layer and isinstance(v, list):
            out[k] = _numbers(f"{name}.{k}", v)
        elif per_layer and isinstance(v, list) and not isinstance(known[k], list):
            raise ConfigError(f"{name}.{k}: one value expected (per-layer lists only for "
                              f"{', '.join(per_layer)}), got {short(v)}")
        else:
            out[k] = _coerce(name, k, known[k], v)
    return out


def _numbers(where: str, v: list) -> list:
    """A per-layer list: 1..MAX_LAYERS finite numbers (not nested, not strings)."""
    if not v:
        raise ConfigError(f"{where}: need 1 value or one per layer, got an empty list")
    if len(v) > MAX_LAYERS:
        raise ConfigError(f"{where}: at most {MAX_LAYERS} entries (one per layer), got {len(v)}")
    for i, x in enumerate(v):
        if not _is_number(x):
            raise ConfigError(f"{where}[{i}] must be a number, got {short(x)} (in {short(v)})")
        _finite(f"{where}[{i}]", x)
    return v


FAULTS_SECTION = "faults"


def fault_config_from(kw: dict) -> FaultConfig:
    """``[faults]`` as a :class:`~gpu_model.faults.FaultConfig`: its preset with the other keys."""
    kw = dict(kw)
    base = get_fault_preset(kw.pop("preset", "none"))
    return base.with_overrides(**kw) if kw else base


def _faults_section(data) -> dict:
    """``[faults]``: ``preset`` and FaultConfig fields (not ``name``), each of its field's type;
    the stuck levels (unset by default) as numbers (µS)."""
    data = _table(FAULTS_SECTION, data)
    ref = FaultConfig()
    known = {f.name: getattr(ref, f.name) for f in fields(ref) if f.name != "name"}
    known["preset"] = ref.name
    out = {}
    for k, v in data.items():
        if k not in known:
            raise _unknown(FAULTS_SECTION, k, known)
        if known[k] is None:
            if not _is_number(v):
                raise ConfigError(f"faults.{k} must be a number (µS), got {short(v)}")
            out[k] = _finite(f"faults.{k}", v)
        else:
            out[k] = _coerce(FAULTS_SECTION, k, known[k], v)
    return out


def config_from_dict(d: dict) -> Config:
    from .tasks import registry
    task_secs = {arch: spec.section for arch, spec in registry().items() if spec.section is not None}
    if not isinstance(d, dict):
        raise ConfigError(f"a config is a table of sections, got {short(d)}")
    known = {*BASE_SECTIONS, *OVERRIDE_SECTIONS, FAULTS_SECTION, *task_secs}
    unknown = set(d) - known
    if unknown:
        raise ConfigError(f"unknown config section(s): {', '.join(sorted(map(str, unknown)))}; "
                          f"known: {', '.join(sorted(known))}")
    train = _section(TrainSection, "train", d.get("train", {}))
    model = _section(ModelSection, "model", d.get("model", {}))
    synapse = _section(SynapseSection, "synapse", d.get("synapse", {}))
    sections = {name: _section(cls, name, d.get(name, {})) for name, cls in task_secs.items()}
    tile = _overrides("tile", TilePreset(), d.get("tile", {}), PER_LAYER_TILE,
                      extra={"engine": DEFAULT_TILE_ENGINE})   # tile.engine: kept by the tile's owner
    dpu = _overrides("dpu", DPUSpec(), d.get("dpu", {}))
    device = _table("device", d.get("device", {}))
    if device and synapse.mode == "pcm" and synapse.preset in PCM_PRESETS:
        device = _overrides("device", get_pcm_preset(synapse.preset), device)
    faults = _faults_section(d.get(FAULTS_SECTION, {}))
    cfg = Config(train=train, model=model, synapse=synapse, sections=sections, tile=tile, dpu=dpu,
                 device=dict(device), faults=faults)
    validate(cfg)
    return cfg


def load_config(path: str | Path | None, overrides: dict | None = None) -> Config:
    """Read a TOML config (or defaults when None) and apply ``{section: {key: value}}`` overrides."""
    d: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            d = tomllib.loads(p.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config {p}: invalid TOML: {exc}") from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(f"config {p}: not a UTF-8 text file ({exc.reason} at byte {exc.start})") from exc
        except OSError as exc:
            raise ConfigError(f"config {p}: cannot be read: {exc.strerror or exc}") from exc
    for sec, kv in (overrides or {}).items():
        _table(sec, d.setdefault(sec, {})).update({k: v for k, v in kv.items() if v is not None})
    return config_from_dict(d)


def validate(cfg: Config) -> None:
    from .tasks import registry
    t, m, s = cfg.train, cfg.model, cfg.synapse

    def need(cond, msg):
        if not cond:
            raise ConfigError(msg)

    def positive_ints(v, allow=()):
        return all(c in allow or (isinstance(c, int) and not isinstance(c, bool) and 1 <= c <= MAX_WIDTH)
                   for c in v)

    need(t.epochs >= 1, f"train.epochs must be >= 1, got {t.epochs}")
    need(t.batch_size >= 1, f"train.batch_size must be >= 1, got {t.batch_size}")
    need(t.lr > 0, f"train.lr must be > 0, got {t.lr}")
    need(0 < t.lr_decay <= 1, f"train.lr_decay must be in (0, 1], got {t.lr_decay}")
    need(t.lr_min >= 0, f"train.lr_min must be >= 0, got {t.lr_min}")
    need(t.optimizer in OPTIMIZERS, f"train.optimizer must be one of {', '.join(OPTIMIZERS)}, got {short(t.optimizer)}")
    need(0 <= t.momentum < 1, f"train.momentum must be in [0, 1), got {t.momentum}")
    need(0 <= t.adam_beta1 < 1, f"train.adam_beta1 must be in [0, 1), got {t.adam_beta1}")
    need(0 <= t.adam_beta2 < 1, f"train.adam_beta2 must be in [0, 1), got {t.adam_beta2}")
    need(t.adam_eps > 0, f"train.adam_eps must be > 0, got {t.adam_eps}")
    need(t.seed >= 0, f"train.seed must be >= 0, got {t.seed}")
    need(t.seconds_per_batch >= 0, f"train.seconds_per_batch must be >= 0, got {t.seconds_per_batch}")
    need(t.train_subset >= 0, f"train.train_subset must be >= 0 (0: all), got {t.train_subset}")
    need(t.test_subset >= 0, f"train.test_subset must be >= 0 (0: all), got {t.test_subset}")
    need(t.eval_batch >= 1, f"train.eval_batch must be >= 1, got {t.eval_batch}")

    tasks = registry()
    need(m.arch in tasks, f"model.arch must be one of {', '.join(tasks)}, got {short(m.arch)}")
    need(positive_ints(m.hidden),
         f"model.hidden must be a list of integers in [1, {MAX_WIDTH}], got {short(m.hidden)}")
    need(positive_ints(m.conv, allow=("M",)),
         f'model.conv must list channel counts in [1, {MAX_WIDTH}] and "M" (pooling), got {short(m.conv)}')
    need(m.activation in ACTIVATIONS, f"model.activation must be sigmoid, relu or tanh, got {short(m.activation)}")
    need(m.init in INITS, f"model.init must be one of {', '.join(INITS)}, got {short(m.init)}")
    need(1 <= m.kernel <= MAX_KERNEL and m.kernel % 2 == 1,
         f"model.kernel must be an odd size in [1, {MAX_KERNEL}] (same padding), got {m.kernel}")
    need(m.pool in ("max", "avg"), f"model.pool must be max or avg, got {short(m.pool)}")
    need(0 <= m.dropout < 1, f"model.dropout must be in [0, 1), got {m.dropout}")
    need(m.init_gain > 0, f"model.init_gain must be > 0, got {m.init_gain}")
    need(m.output_gain_lr_scale >= 0, f"model.output_gain_lr_scale must be >= 0, got {m.output_gain_lr_scale}")
    spec = tasks[m.arch]
    if spec.validate is not None:
        spec.validate(cfg, need)

    need(s.mode in SYNAPSE_MODES, f"synapse.mode must be one of {', '.join(SYNAPSE_MODES)}, got {short(s.mode)}")
    need(s.preset in PCM_PRESETS, f"synapse.preset: unknown preset {short(s.preset)}; known: {', '.join(PCM_PRESETS)}")
    need(s.dpu in DPU_CHOICES, f"synapse.dpu must be one of {', '.join(DPU_CHOICES)}, got {short(s.dpu)}")
    if s.dpu in WHOLE_UNIT_DPUS:
        # the whole unit computes Delta w = -lr d^T x from this mini-batch's factors (x, d) itself
        why = (f"synapse.dpu = {s.dpu!r} is the whole digital unit: it computes the plain-SGD update "
               f"-lr d^T x from this mini-batch's factors")
        need(t.optimizer == "sgd", f"{why}; train.optimizer = {t.optimizer!r} is not a product of them "
                                   f"(it has no optimizer state): set train.optimizer = \"sgd\" or synapse.dpu "
                                   f"= \"golden\"")
        need(not s.verified_update, f"{why} and has no verify-feedback input: set synapse.verified_update = "
                                    f"false or synapse.dpu = \"golden\"")
        need(spec.whole_unit, f"{why}; model.arch = {m.arch!r} does not hand them over (its layers do not keep "
                              f"them, or it rescales gradients before the update): use synapse.dpu = \"golden\"")
    need(0 < s.refresh_threshold <= 1, f"synapse.refresh_threshold must be in (0, 1], got {s.refresh_threshold}")
    need(0 < s.verify_gain <= 1, f"synapse.verify_gain must be in (0, 1], got {s.verify_gain}")
    need(s.devices_per_side >= 1, f"synapse.devices_per_side must be an integer >= 1, got {s.devices_per_side!r}")
    need(s.devices_per_side <= MAX_DEVICES_PER_SIDE,
         f"synapse.devices_per_side must be <= {MAX_DEVICES_PER_SIDE} (engineering bound), got {s.devices_per_side!r}")
    need(not cfg.device or s.mode == "pcm",
         f"[device] overrides the PCM preset and needs synapse.mode = \"pcm\" (mode is {s.mode!r}); "
         f"got {short(', '.join(sorted(map(str, cfg.device))))}")
    pcm = _build("device", lambda **kw: get_pcm_preset(s.preset).with_overrides(**kw), cfg.device)
    g_max = (IDEAL if s.mode == "ideal" else pcm).g_max
    need(0 <= s.common_mode_uS < s.refresh_threshold * g_max,
         f"synapse.common_mode_uS must be >= 0 and below the refresh threshold "
         f"({s.refresh_threshold * g_max:g} µS), got {s.common_mode_uS}")
    need(s.refresh_tolerance_uS < g_max,
         f"synapse.refresh_tolerance_uS must be below g_max ({g_max:g} µS; < 0: the preset's), got {s.refresh_tolerance_uS}")

    # per-layer values: numbers always; one per weight layer (or one) where the weights are devices
    lo, hi = W_MAX_RANGE
    bounds = {"w_max": (lo, hi, f"in [{lo:g}, {hi:g}] weight units (beta = w_max / g_max stays finite "
                                 "in float32)"),
              "epsilon_uS": (EPSILON_REL_MIN * g_max, g_max,
                             f"in [{EPSILON_REL_MIN * g_max:g}, {g_max:g}) µS (below the device's g_max)")}
    for name, (vlo, vhi, why) in bounds.items():
        vals = _numbers(f"synapse.{name}", getattr(s, name))
        bad = [v for v in vals if not (vlo <= v <= vhi) or (name == "epsilon_uS" and v >= vhi)]
        need(not bad, f"synapse.{name} must be {why}, got {short(bad[0] if bad else None)}"
                      + (f" (in {short(vals)})" if len(vals) > 1 else ""))
    n_layers = cfg.n_weight_layers()
    need(1 <= n_layers <= MAX_LAYERS, f"model: {n_layers} weight layers; at most {MAX_LAYERS}")
    if s.mode != "fp32":                                           # fp32 weights have no devices
        for name in ("w_max", "epsilon_uS"):
            cfg.per_layer(name, n_layers)
    cfg.tile_engine()
    peripherals = {k: v for k, v in cfg.tile.items() if k not in TILE_ENGINE_KEYS}
    per_layer = {k: layer_values(f"tile.{k}", v, n_layers) for k, v in peripherals.items() if isinstance(v, list)}
    for i in range(n_layers):      # what cfg.tile_preset(i) builds (lists: PER_LAYER_TILE keys only)
        _build("tile", TilePreset, {k: per_layer[k][i] if k in per_layer else v for k, v in peripherals.items()})
    _build("dpu", DPUSpec, cfg.dpu)
    if s.dpu in WHOLE_UNIT_DPUS and s.mode != "fp32":       # the unit's x codes are the DAC's
        for i in range(n_layers):
            dac = cfg.tile_preset(i).dac_bits
            need(2 <= dac <= 18, f"synapse.dpu = {s.dpu!r}: the whole unit takes the DAC codes as x and needs "
                                 f"tile.dac_bits in [2, 18] (rtl/spec.py TileSpec.x_bits), got {dac}")
    fc = _build(FAULTS_SECTION, lambda **kw: fault_config_from(kw), cfg.faults)
    for k in ("stuck_low_uS", "stuck_high_uS"):
        v = getattr(fc, k)
        need(v is None or v <= g_max, f"faults.{k} must be in [0, g_max = {g_max:g}] µS of the device, got {v}")
    if fc.enabled:
        need(s.mode != "fp32", f"faults: device faults need analog synapses (synapse.mode = \"pcm\" or "
                               f"\"ideal\"), mode is {s.mode!r}")
        need(cfg.tile_engine() == "reference", f"faults: device faults run on the reference engine only; "
                                               f"set tile.engine = \"reference\" (got {cfg.tile_engine()!r})")
        need(not fc.exclude or s.common_mode_uS == 0,
             f"faults.exclude needs synapse.common_mode_uS = 0, got {s.common_mode_uS}")


def _build(name: str, make, overrides: dict):
    """``make(**overrides)`` (a TilePreset, DPUSpec or PCM preset: each checks its own fields); its
    error as a ConfigError naming ``name.key``: the first override that fails on its own, else the
    section (a rule between fields, e.g. dpu.pmax against dpu.chi_bits)."""
    errors = (PresetError, SpecError, TypeError, ValueError)
    try:
        return make(**overrides)
    except ConfigError:
        raise
    except errors as exc:
        for k, v in overrides.items():
            try:
                make(**{k: v})
            except ConfigError:
                raise
            except errors as one:
                raise ConfigError(f"[{name}]: {one} (key {name}.{k})") from exc
        raise ConfigError(f"[{name}]: {exc}") from exc


# --- writing -----------------------------------------------------------------------------------
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _toml_string(v: str) -> str:
    return '"' + "".join(_ESCAPES.get(c, c if ord(c) >= 0x20 and ord(c) != 0x7F else f"\\u{ord(c):04x}")
                         for c in v) + '"'


def toml_value(v, sep: str = ", ") -> str:
    """A scalar or (nested) list in TOML syntax; ``sep`` between list items."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return _toml_string(v)
    if isinstance(v, (list, tuple)):
        return "[" + sep.join(toml_value(x, sep) for x in v) + "]"
    return repr(v)


def dump_toml(d: dict) -> str:
    """Minimal TOML writer for the config (tables of scalars and lists)."""
    lines = []
    for sec, kv in d.items():
        lines.append(f"[{sec}]")
        for k, v in kv.items():
            lines.append(f"{k} = {toml_value(v)}")
        lines.append("")
    return "\n".join(lines)


def parse_sets(items) -> dict:
    """``--set SECTION.KEY=VALUE`` items (VALUE in TOML syntax, else a bare string) -> overrides dict."""
    out: dict = {}
    for it in items:
        key = it.split("=", 1)[0]
        sec, _, k = key.partition(".")
        if "=" not in it or not sec.strip() or not k.strip():
            raise ConfigError(f"--set expects SECTION.KEY=VALUE, got {short(it)}")
        val = it.split("=", 1)[1]
        try:
            parsed = tomllib.loads(f"v = {val}")
        except tomllib.TOMLDecodeError:
            parsed = {"v": val}   # bare string
        if set(parsed) != {"v"}:
            raise ConfigError(f"--set {sec.strip()}.{k.strip()}: one TOML value expected, got {short(val)}")
        v = parsed["v"]
        out.setdefault(sec.strip(), {})[k.strip()] = v
    return out
