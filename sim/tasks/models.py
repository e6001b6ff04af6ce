"""Networks built from the ``[model]`` and ``[synapse]`` config: the MLP and the VGG-style CNN.

Every weight matrix is a weight store chosen by ``synapse.mode`` (fp32 | ideal | pcm), with its own
w_max and epsilon (``synapse.w_max`` / ``synapse.epsilon_uS``: one value, or one per weight layer
in network order). Initial weights come from one seeded generator, layer by layer, and are
programmed onto the devices by program-and-verify (clipped to the usable range first).
"""
from __future__ import annotations

import numpy as np

from gpu_model.backend import Backend
from gpu_model.presets import IDEAL
from gpu_model.tile_config import SynapseConfig, TileConfig
from ..config import Config, ConfigError
from ..nn import (ACTIVATIONS, AvgPool2d, BatchNorm, Conv2d, Dense, Dropout, Flatten, MaxPool2d,
                  Sequential, init_weights)
from ..nn.stores import AnalogWeights, FP32Weights

INIT_STREAM = 1            # SeedSequence([seed, INIT_STREAM]): initial weights
STORE_STREAM_BASE = 100    # crossbar/device random streams: 100 + weight-layer index
DROPOUT_STREAM_BASE = 500  # dropout masks: 500 + dropout-layer index


def tile_config(cfg: Config, i: int, w_max: float, eps: float) -> TileConfig:
    """The composed :class:`~gpu_model.tile_config.TileConfig` of weight layer ``i``: the device
    model of ``synapse.mode`` (with ``[device]`` overrides and the drift switch), the synapse
    section, the layer's ``[tile]`` converters, the ``[dpu]`` spec, ``tile.engine``."""
    s = cfg.synapse
    if s.mode == "ideal":
        preset = IDEAL.with_overrides(ideal_step=eps)
    else:
        preset = cfg.pcm_preset()           # synapse.preset with the [device] overrides
        if not s.drift:
            preset = preset.with_overrides(drift_model="constant", nu_mean=0.0, nu_std=0.0)
    synapse = SynapseConfig(
        w_max=w_max, epsilon_uS=eps, devices_per_side=s.devices_per_side,
        refresh_threshold=s.refresh_threshold,
        refresh_tolerance_uS=None if s.refresh_tolerance_uS < 0 else s.refresh_tolerance_uS,
        common_mode_uS=s.common_mode_uS, read_noise=s.read_noise, verified_update=s.verified_update,
        verify_gain=s.verify_gain, verify_anti_windup=s.verify_anti_windup)
    return TileConfig(device=preset, synapse=synapse, converters=cfg.tile_preset(i), dpu=cfg.dpu_spec(),
                      dpu_kind=s.dpu, engine=cfg.tile_engine(), faults=cfg.fault_config())


def make_store(cfg: Config, be: Backend, w0: np.ndarray, i: int, w_max: float, eps: float):
    """Weight store for weight layer ``i`` (fp32, or an analog tile with its digital unit)."""
    s = cfg.synapse
    if s.mode == "fp32":
        return FP32Weights(w0, be)
    np.clip(w0, -w_max * s.refresh_threshold, w_max * s.refresh_threshold, out=w0)
    return AnalogWeights(w0, be, tile_config(cfg, i, w_max, eps), stream=STORE_STREAM_BASE + i)


class _Builder:
    def __init__(self, cfg: Config, be: Backend):
        self.cfg, self.be, self.xp = cfg, be, be.xp
        n = cfg.n_weight_layers()
        analog = cfg.synapse.mode != "fp32"            # fp32 weights have no device range
        self.w_max = cfg.per_layer("w_max", n) if analog else [None] * n
        self.eps = cfg.per_layer("epsilon_uS", n) if analog else [None] * n
        self.rng = np.random.default_rng(np.random.SeedSequence([cfg.train.seed, INIT_STREAM]))
        self.i = 0          # weight layers built so far
        self.n_drop = 0

    def store(self, n_out: int, n_in: int):
        m = self.cfg.model
        w0 = init_weights(n_out, n_in, m.init, m.init_gain, self.rng)
        st = make_store(self.cfg, self.be, w0, self.i, self.w_max[self.i], self.eps[self.i])
        self.i += 1
        return st

    def dropout(self, name: str):
        self.n_drop += 1
        return Dropout(name, self.xp, self.cfg.model.dropout, self.be.child_rng(DROPOUT_STREAM_BASE + self.n_drop))

    def dense_stack(self, n_in: int, n_classes: int) -> list:
        """Hidden dense layers (+ BatchNorm, activation) and the output layer (logits)."""
        m, xp = self.cfg.model, self.xp
        layers, sizes = [], [n_in] + list(m.hidden) + [n_classes]
        first = self.i
        for j in range(len(sizes) - 1):
            last = j == len(sizes) - 2
            k = self.i - first + 1
            if m.dropout > 0 and (m.arch == "cnn" or j > 0):
                layers.append(self.dropout(f"drop{self.n_drop + 1}"))
            st = self.store(sizes[j + 1], sizes[j])
            bn = m.batch_norm and not last
            layers.append(Dense(f"fc{k}", st, xp, bias=not bn, gain=m.output_gain))
            if m.output_gain:
                layers[-1].g.lr_scale = m.output_gain_lr_scale
            if bn:
                layers.append(BatchNorm(f"bn_fc{k}", xp, sizes[j + 1]))
            if not last:
                layers.append(ACTIVATIONS[m.activation](f"act_fc{k}" if m.arch == "cnn" else f"act{k}", xp))
        return layers


def build_mlp(cfg: Config, input_shape: tuple, n_classes: int, be: Backend) -> Sequential:
    """784-250-10 style: Dense -> activation ... Dense (logits). Input (B, F)."""
    b = _Builder(cfg, be)
    n_in = int(np.prod(input_shape))
    return Sequential(b.dense_stack(n_in, n_classes), name="mlp")


def build_cnn(cfg: Config, input_shape: tuple, n_classes: int, be: Backend) -> Sequential:
    """VGG-style: for each ``model.conv`` entry a k x k conv (same padding) -> [BatchNorm] ->
    activation, "M" a 2x2 pooling; then Flatten, ``model.hidden`` dense layers and the output layer.
    Input NHWC (B, H, W, C)."""
    m, xp = cfg.model, be.xp
    if len(input_shape) != 3:
        raise ConfigError(f"model.arch = 'cnn' needs image inputs (H, W, C), the dataset gives {input_shape}")
    b = _Builder(cfg, be)
    H, W, C = input_shape
    layers, nc, npool = [], 0, 0
    for c in m.conv:
        if isinstance(c, str):
            if H % 2 or W % 2:
                raise ConfigError(f"model.conv: pooling a {H}x{W} feature map (needs even sizes)")
            npool += 1
            Pool = MaxPool2d if m.pool == "max" else AvgPool2d
            layers.append(Pool(f"pool{npool}", xp, 2))
            H, W = H // 2, W // 2
            continue
        nc += 1
        k = m.kernel
        st = b.store(int(c), k * k * C)
        layers.append(Conv2d(f"conv{nc}", st, xp, C, k, stride=1, padding=k // 2, bias=not m.batch_norm))
        if m.batch_norm:
            layers.append(BatchNorm(f"bn{nc}", xp, int(c)))
        layers.append(ACTIVATIONS[m.activation](f"act{nc}", xp))
        C = int(c)
    layers.append(Flatten("flatten"))
    layers += b.dense_stack(H * W * C, n_classes)
    return Sequential(layers, name="cnn")


BUILDERS = {"mlp": build_mlp, "cnn": build_cnn}


def build_network(cfg: Config, input_shape: tuple, n_classes: int, be: Backend) -> Sequential:
    return BUILDERS[cfg.model.arch](cfg, input_shape, n_classes, be)
