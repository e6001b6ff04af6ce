"""Validated training configuration (TOML <-> dataclasses).

A config file has the sections ``[train]``, ``[model]``, ``[synapse]``, ``[tile]``, ``[dpu]`` and
``[device]`` (plus the task sections);
every key is optional and defaults to the values below. Unknown sections or keys, wrong types and
out-of-range values raise :class:`ConfigError` naming the key.
"""
from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from gpu_model.presets import IDEAL, PCM_PRESETS, PresetError, TilePreset, get_pcm_preset
from gpu_model.tile_config import ENGINES
from rtl.spec import DPUSpec, SpecError

# [tile] keys that are not TilePreset fields: the device-update engine (gpu_model/tile_config.py
# ENGINES; read by Config.tile_engine, used by sim/tasks/models.py tile_config)
TILE_ENGINE_KEYS = ("engine",)
DEFAULT_TILE_ENGINE = "reference"

SYNAPSE_MODES = ("fp32", "ideal", "pcm")
OPTIMIZERS = ("sgd", "momentum", "adam")
ARCHS = ("mlp", "cnn", "lstm", "gan")
INITS = ("xavier_uniform", "xavier_normal", "he_uniform", "he_normal")


class ConfigError(ValueError):
    """Invalid configuration."""


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
    epochs: int = 15                 # passes over the training set
    batch_size: int = 10             # mini-batch size (RESEARCH_NOTES prototype: 10)
    lr: float = 0.1                  # learning rate (weight units per unit gradient)
    lr_decay: float = 1.0            # multiplicative decay of lr per epoch
    lr_min: float = 0.0              # floor of the decayed lr
    optimizer: str = "sgd"           # sgd | momentum | adam (digital domain; output feeds chi)
    momentum: float = 0.9            # momentum coefficient
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    seed: int = 0
    seconds_per_batch: float = 0.001 # simulated time per mini-batch (s); drift during training. 1 ms:
                                     # the architecture's own pace (docs/training.md)
    train_subset: int = 0            # use only the first N training images (0: all)
    test_subset: int = 0             # evaluate on the first N test images (0: all)
    eval_batch: int = 1000           # test-set MVM batch
    augment: bool = True             # image datasets (NHWC): seeded random crop (4-pixel padding) and
                                     # horizontal flip, in digital; ignored for flat inputs (MNIST MLP)


@dataclass
class ModelSection:
    arch: str = "mlp"                # mlp | cnn (sim/tasks/models.py)
    hidden: list = field(default_factory=lambda: [250])   # hidden dense layer widths (cnn: after the
                                     # conv stack; may be empty)
    activation: str = "sigmoid"      # sigmoid | relu | tanh
    conv: list = field(default_factory=list)  # cnn: output channels per conv layer, "M" = 2x2 pooling,
                                     # e.g. [32, "M", 64, "M"] (VGG notation)
    kernel: int = 3                  # cnn: conv kernel size (same padding, stride 1)
    pool: str = "max"                # cnn: max | avg pooling for "M"
    batch_norm: bool = False         # digital BatchNorm after every conv / hidden dense layer
    dropout: float = 0.0             # digital dropout before dense layers (cnn: also the first)
    init: str = "xavier_uniform"     # initial weight distribution (programmed by program-and-verify)
    init_gain: float = 1.0
    output_gain: bool = False        # learned digital gain per output column on each MVM result
                                     # (y = g * (W x) + b): absorbs drift and device-range scaling
    output_gain_lr_scale: float = 1.0  # learning rate of the gains relative to train.lr


@dataclass
class SynapseSection:
    mode: str = "pcm"                # fp32 | ideal | pcm
    preset: str = "jap2018"          # PCM preset for mode "pcm"
    w_max: list = field(default_factory=lambda: [1.1, 4.4])      # per layer: w_max = beta * g_max
    epsilon_uS: list = field(default_factory=lambda: [0.5, 0.5])  # per layer device granularity (µS)
    refresh_threshold: float = 0.45  # refresh a pair when a device passes this fraction of g_max
                                     # (0.45 x 20 uS: below where the JAP-2018 mean SET step vanishes)
    refresh_tolerance_uS: float = -1.0  # program-and-verify tolerance of refresh (<0: preset's)
    common_mode_uS: float = 0.0      # >0: initial programming and refresh write both devices of a
                                     # pair at this common-mode level (no device left at RESET)
    read_noise: bool = True          # ablation switch: read noise on crossbar reads
    drift: bool = True               # ablation switch: conductance drift
    dpu: str = "golden"              # golden | rtl
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
                                     # same range, N x the devices; 1 = one differential pair


# --- task sections (model.arch = "lstm" / "gan"); each task owns its section and its checks ------
@dataclass
class LSTMSection:
    """``[lstm]``: character-level LSTM language model (model.arch = "lstm", sim/tasks/charlm.py)."""
    hidden: int = 256                # LSTM state size H
    bptt: int = 100                  # truncated backprop-through-time length (characters)
    clip_norm: float = 1.0           # digital gradient clipping: global L2 norm per mini-batch
    embedding: int = 0               # 0: one-hot inputs; > 0: learned embedding (a weight store) of that size
    forget_bias: float = 1.0         # initial forget-gate bias (engineering choice, standard practice:
                                     # the cell keeps its state at the start of training)
    input_scale: float = 1.0         # amplitude of the one-hot input on the gate crossbar's DAC (engineering
                                     # choice: > 1 shrinks the input-column weights by that factor, so they
                                     # share one w_max with the smaller recurrent weights; docs/lstm.md)
    eval_streams: int = 100          # parallel streams for valid/test BPC (evaluation batch; each stream
                                     # starts from a zero state, so more streams = more warm-up characters)


@dataclass
class GANSection:
    """``[gan]``: generator and discriminator (model.arch = "gan", sim/tasks/gan.py)."""
    latent_dim: int = 100            # generator input noise size
    generator: list = field(default_factory=lambda: [256, 512])       # generator hidden widths
    discriminator: list = field(default_factory=lambda: [512, 256])   # discriminator hidden widths
    generator_only_pcm: bool = False  # ablation: the discriminator keeps fp32 weights
    leaky_slope: float = 0.2         # LeakyReLU negative slope of both nets (DCGAN practice)
    d_lr_scale: float = 1.0          # discriminator learning rate relative to train.lr
    d_dropout: float = 0.0           # digital dropout after each hidden activation of D (the
                                     # classic MLP-GAN recipe uses ~0.3); 0 = none
    real_label: float = 1.0          # D's target for real images: < 1 is one-sided label smoothing
                                     # (Salimans et al. 2016); fakes always 0, G's target always 1
    clip_norm: float = 0.0           # digital gradient clipping per network and step: global L2
                                     # norm above clip_norm is scaled down to it; 0 = off
    conditioning: str = "none"       # "none": unconditional; "cgan": the digit's one-hot label joins z
                                     # at G's input and the image at D's input (Mirza & Osindero 2014);
                                     # "acgan": the label joins z at G's input and D has 10 extra class
                                     # logits (Odena et al. 2017, docs/gan.md); evaluation then asks for
                                     # every digit equally and reports label_match
    label_input: str = "crossbar"    # conditional GANs: "crossbar" = the one-hot label as 10 more
                                     # rows of G1 (and D1 for cgan); "digital" = the same maths as a
                                     # digital per-class bias after G1 (D1), onehot(c) W_c = W_c[c]
    aux_weight: float = 1.0          # acgan: weight of the class cross-entropy in both losses
    eval_samples: int = 10000        # generated images per evaluation (FD and coverage vs the test set)
    fd_classifier: str = ""          # FD classifier weights (sim/quality.py); "": the user cache
                                     # (~/.cache/mcasim/mnist_fd_classifier.npz), trained if missing


def _n_weight_layers_lstm(cfg) -> int:
    return (1 if cfg.lstm.embedding > 0 else 0) + 2          # [embedding], gate matrix, projection


def _n_weight_layers_gan(cfg) -> int:
    return len(cfg.gan.generator) + 1 + len(cfg.gan.discriminator) + 1


def validate_lstm(cfg, need) -> None:
    lc = cfg.lstm
    need(lc.hidden >= 1, f"lstm.hidden must be >= 1, got {lc.hidden}")
    need(lc.bptt >= 1, f"lstm.bptt must be >= 1, got {lc.bptt}")
    need(lc.clip_norm > 0, f"lstm.clip_norm must be > 0, got {lc.clip_norm}")
    need(lc.embedding >= 0, f"lstm.embedding must be >= 0, got {lc.embedding}")
    need(lc.input_scale > 0, f"lstm.input_scale must be > 0, got {lc.input_scale}")
    need(lc.eval_streams >= 1, f"lstm.eval_streams must be >= 1, got {lc.eval_streams}")


def validate_gan(cfg, need) -> None:
    g = cfg.gan
    need(g.latent_dim >= 1, f"gan.latent_dim must be >= 1, got {g.latent_dim}")
    for name in ("generator", "discriminator"):
        v = getattr(g, name)
        need(all(isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in v),
             f"gan.{name} must be a list of positive integers, got {v!r}")
    need(g.leaky_slope > 0, f"gan.leaky_slope must be > 0, got {g.leaky_slope}")
    need(g.d_lr_scale > 0, f"gan.d_lr_scale must be > 0, got {g.d_lr_scale}")
    need(0 <= g.d_dropout < 1, f"gan.d_dropout must be in [0, 1), got {g.d_dropout}")
    need(0.5 < g.real_label <= 1, f"gan.real_label must be in (0.5, 1], got {g.real_label}")
    need(g.conditioning in ("none", "cgan", "acgan"),
         f"gan.conditioning must be one of none, cgan, acgan, got {g.conditioning!r}")
    need(g.label_input in ("crossbar", "digital"),
         f"gan.label_input must be crossbar or digital, got {g.label_input!r}")
    need(g.aux_weight > 0, f"gan.aux_weight must be > 0, got {g.aux_weight}")
    need(g.clip_norm >= 0, f"gan.clip_norm must be >= 0 (0 = off), got {g.clip_norm}")
    need(g.eval_samples >= 2, f"gan.eval_samples must be >= 2 (a covariance), got {g.eval_samples}")


TASK_SECTIONS = {"lstm": LSTMSection, "gan": GANSection}   # section name = model.arch
N_WEIGHT_LAYERS = {"lstm": _n_weight_layers_lstm, "gan": _n_weight_layers_gan}
TASK_VALIDATORS = {"lstm": validate_lstm, "gan": validate_gan}


@dataclass
class Config:
    train: TrainSection = field(default_factory=TrainSection)
    model: ModelSection = field(default_factory=ModelSection)
    synapse: SynapseSection = field(default_factory=SynapseSection)
    lstm: LSTMSection = field(default_factory=LSTMSection)
    gan: GANSection = field(default_factory=GANSection)
    tile: dict = field(default_factory=dict)   # overrides of gpu_model.presets.TilePreset fields;
                                               # the PER_LAYER_TILE ones also as one value per weight layer
    dpu: dict = field(default_factory=dict)    # overrides of rtl.spec.DPUSpec fields
    device: dict = field(default_factory=dict) # overrides of the PCM preset's fields (synapse.preset;
                                               # gpu_model.presets.PCMPreset), for ablation studies:
                                               # e.g. set_sigma_hist = 0.0. Empty in every committed
                                               # config: device statistics stay as published

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
                                      f"{', '.join(PER_LAYER_TILE)}), got {list(v)}")
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

    def per_layer(self, name: str, n_layers: int) -> list[float]:
        return [float(x) for x in layer_values(f"synapse.{name}", getattr(self.synapse, name), n_layers)]

    def n_weight_layers(self) -> int:
        """Weight matrices of the network (conv layers, hidden dense layers, output layer)."""
        m = self.model
        if m.arch in N_WEIGHT_LAYERS:
            return N_WEIGHT_LAYERS[m.arch](self)
        n_conv = sum(1 for c in m.conv if not isinstance(c, str)) if m.arch == "cnn" else 0
        return n_conv + len(m.hidden) + 1

    def to_dict(self) -> dict:
        return asdict(self)

    def to_toml(self) -> str:
        return dump_toml(self.to_dict())


def _coerce(section: str, key: str, default: Any, value: Any):
    where = f"{section}.{key}"
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    if isinstance(default, list):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return [value]
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        return value
    return value


def _section(cls, name: str, data: dict):
    if not isinstance(data, dict):
        raise ConfigError(f"[{name}] must be a table")
    obj = cls()
    known = {f.name for f in fields(cls)}
    for k, v in data.items():
        if k not in known:
            raise ConfigError(f"unknown key {name}.{k}; known keys: {', '.join(sorted(known))}")
        setattr(obj, k, _coerce(name, k, getattr(obj, k), v))
    return obj


def config_from_dict(d: dict) -> Config:
    known = {"train", "model", "synapse", "tile", "dpu", "device", *TASK_SECTIONS}
    unknown = set(d) - known
    if unknown:
        raise ConfigError(f"unknown config section(s): {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
    cfg = Config(
        train=_section(TrainSection, "train", d.get("train", {})),
        model=_section(ModelSection, "model", d.get("model", {})),
        synapse=_section(SynapseSection, "synapse", d.get("synapse", {})),
        **{name: _section(cls, name, d.get(name, {})) for name, cls in TASK_SECTIONS.items()},
        tile=dict(d.get("tile", {})),
        dpu=dict(d.get("dpu", {})),
        device=dict(d.get("device", {})),
    )
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
            d = tomllib.loads(p.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{p}: invalid TOML: {exc}") from exc
    for sec, kv in (overrides or {}).items():
        d.setdefault(sec, {}).update({k: v for k, v in kv.items() if v is not None})
    return config_from_dict(d)


def validate(cfg: Config) -> None:
    t, m, s = cfg.train, cfg.model, cfg.synapse

    def need(cond, msg):
        if not cond:
            raise ConfigError(msg)

    need(t.epochs >= 1, f"train.epochs must be >= 1, got {t.epochs}")
    need(t.batch_size >= 1, f"train.batch_size must be >= 1, got {t.batch_size}")
    need(t.lr > 0, f"train.lr must be > 0, got {t.lr}")
    need(0 < t.lr_decay <= 1, f"train.lr_decay must be in (0, 1], got {t.lr_decay}")
    need(t.lr_min >= 0, f"train.lr_min must be >= 0, got {t.lr_min}")
    need(t.optimizer in OPTIMIZERS, f"train.optimizer must be one of {OPTIMIZERS}, got {t.optimizer!r}")
    need(0 <= t.momentum < 1, f"train.momentum must be in [0, 1), got {t.momentum}")
    need(0 <= t.adam_beta1 < 1 and 0 <= t.adam_beta2 < 1, "train.adam_beta1/2 must be in [0, 1)")
    need(t.adam_eps > 0, f"train.adam_eps must be > 0, got {t.adam_eps}")
    need(t.seed >= 0, f"train.seed must be >= 0, got {t.seed}")
    need(t.seconds_per_batch >= 0, f"train.seconds_per_batch must be >= 0, got {t.seconds_per_batch}")
    need(t.train_subset >= 0 and t.test_subset >= 0, "train.train_subset/test_subset must be >= 0")
    need(t.eval_batch >= 1, f"train.eval_batch must be >= 1, got {t.eval_batch}")
    need(m.arch in ARCHS, f"model.arch must be one of {ARCHS}, got {m.arch!r}")
    need((len(m.hidden) >= 1 or m.arch != "mlp") and all(isinstance(h, int) and not isinstance(h, bool) and h >= 1
                                                         for h in m.hidden),
         f"model.hidden must be a list of positive integers (mlp: at least one), got {m.hidden!r}")
    need(m.activation in ("sigmoid", "relu", "tanh"), f"model.activation must be sigmoid, relu or tanh, got {m.activation!r}")
    need(m.init in INITS, f"model.init must be one of {INITS}, got {m.init!r}")
    if m.arch == "cnn":
        need(any(not isinstance(c, str) for c in m.conv), "model.conv: a cnn needs at least one conv layer")
    need(all(c == "M" or (isinstance(c, int) and not isinstance(c, bool) and c >= 1) for c in m.conv),
         f'model.conv must list positive channel counts and "M" (pooling), got {m.conv!r}')
    if m.arch in TASK_VALIDATORS:
        TASK_VALIDATORS[m.arch](cfg, need)
    need(m.kernel >= 1 and m.kernel % 2 == 1, f"model.kernel must be an odd size >= 1 (same padding), got {m.kernel}")
    need(m.pool in ("max", "avg"), f"model.pool must be max or avg, got {m.pool!r}")
    need(0 <= m.dropout < 1, f"model.dropout must be in [0, 1), got {m.dropout}")
    need(m.init_gain > 0, f"model.init_gain must be > 0, got {m.init_gain}")
    need(m.output_gain_lr_scale >= 0, f"model.output_gain_lr_scale must be >= 0, got {m.output_gain_lr_scale}")
    need(s.mode in SYNAPSE_MODES, f"synapse.mode must be one of {SYNAPSE_MODES}, got {s.mode!r}")
    need(s.preset in PCM_PRESETS, f"synapse.preset: unknown preset {s.preset!r}; known: {', '.join(PCM_PRESETS)}")
    need(s.dpu in ("golden", "rtl"), f"synapse.dpu must be 'golden' or 'rtl', got {s.dpu!r}")
    need(0 < s.refresh_threshold <= 1, f"synapse.refresh_threshold must be in (0, 1], got {s.refresh_threshold}")
    need(0 < s.verify_gain <= 1, f"synapse.verify_gain must be in (0, 1], got {s.verify_gain}")
    need(isinstance(s.devices_per_side, int) and not isinstance(s.devices_per_side, bool) and s.devices_per_side >= 1,
         f"synapse.devices_per_side must be an integer >= 1, got {s.devices_per_side!r}")
    need(not cfg.device or s.mode == "pcm",
         f"[device] overrides the PCM preset and needs synapse.mode = \"pcm\" (mode is {s.mode!r}); "
         f"got {', '.join(sorted(cfg.device))}")
    try:
        pcm = cfg.pcm_preset()
    except (PresetError, TypeError) as exc:
        raise ConfigError(f"[device]: {exc}") from exc
    g_max = (IDEAL if s.mode == "ideal" else pcm).g_max
    need(0 <= s.common_mode_uS < s.refresh_threshold * g_max,
         f"synapse.common_mode_uS must be >= 0 and below the refresh threshold "
         f"({s.refresh_threshold * g_max:g} µS), got {s.common_mode_uS}")
    n_layers = cfg.n_weight_layers()
    for name in ("w_max", "epsilon_uS") if s.mode != "fp32" else ():   # fp32 weights have no devices
        vals = cfg.per_layer(name, n_layers)
        need(all(v > 0 for v in vals), f"synapse.{name} must be > 0, got {vals}")
    cfg.tile_engine()
    try:
        for i in range(n_layers):
            cfg.tile_preset(i)
    except (PresetError, TypeError) as exc:
        raise ConfigError(f"[tile]: {exc}") from exc
    try:
        cfg.dpu_spec()
    except (SpecError, TypeError) as exc:
        raise ConfigError(f"[dpu]: {exc}") from exc


def toml_value(v, sep: str = ", ") -> str:
    """A scalar or (nested) list in TOML syntax; ``sep`` between list items."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
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
        if "=" not in it or "." not in it.split("=", 1)[0]:
            raise ConfigError(f"--set expects SECTION.KEY=VALUE, got {it!r}")
        key, val = it.split("=", 1)
        sec, k = key.split(".", 1)
        try:
            v = tomllib.loads(f"v = {val}")["v"]
        except tomllib.TOMLDecodeError:
            v = val   # bare string
        out.setdefault(sec, {})[k] = v
    return out
