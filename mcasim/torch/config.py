"""Weight stores for torch layers from the CLI's config (``sim.config``), one per converted layer.

Layer ``i`` of ``n`` converted layers gets what the native builders give weight layer ``i``
(``sim.tasks.models.make_store``): ``synapse.w_max`` / ``epsilon_uS`` (one value or one per layer),
the ``[tile]`` converters (per-layer lists resolved for layer ``i``), the device model, the DPU and
``tile.engine`` (``sim.tasks.models.tile_config``), random stream ``STORE_STREAM_BASE + i``; the
initial weights are clipped to ``+-w_max * refresh_threshold`` and programmed onto the devices.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from gpu_model.backend import Backend, make_backend
from gpu_model.tile_config import TileConfig
from sim.config import Config, ConfigError, config_from_dict, layer_values, load_config
from sim.nn.stores import AnalogWeights, FP32Weights
from sim.tasks.models import STORE_STREAM_BASE, tile_config


def resolve_config(config) -> Config | TileConfig:
    """A :class:`sim.config.Config` from a Config, a TOML path or a dict; a TileConfig as it is."""
    if isinstance(config, (Config, TileConfig)):
        return config
    if isinstance(config, (str, Path)):
        return load_config(config)
    if isinstance(config, dict):
        return config_from_dict(config)
    raise ConfigError(f"config must be a sim.config.Config, a TOML path, a dict or a TileConfig, "
                      f"got {type(config).__name__}")


def config_seed(config) -> int:
    return config.train.seed if isinstance(config, Config) else 0


def config_backend(config, backend) -> Backend:
    """``backend`` as a :class:`Backend` (a name is built with the config's ``train.seed``)."""
    if isinstance(backend, Backend):
        return backend
    return make_backend(backend or "numpy", config_seed(config))


def layer_config(cfg: Config, i: int, n_layers: int) -> Config:
    """``cfg`` with every per-layer ``[tile]`` list resolved to layer ``i`` of ``n_layers``."""
    tile = {k: (layer_values(f"tile.{k}", v, n_layers)[i] if isinstance(v, (list, tuple)) else v)
            for k, v in cfg.tile.items()}
    return dataclasses.replace(cfg, tile=tile)


def make_layer_store(config, backend: Backend, w0: np.ndarray, i: int, n_layers: int):
    """The weight store of converted layer ``i`` (of ``n_layers``): fp32, or an analog tile.

    ``w0``: (out, in) float32 initial weights in the tile's column order (copied; clipped to the
    usable range and programmed onto the devices for an analog store)."""
    w0 = np.array(w0, dtype=np.float32, copy=True)
    if isinstance(config, TileConfig):
        s = config.synapse
        np.clip(w0, -s.w_max * s.refresh_threshold, s.w_max * s.refresh_threshold, out=w0)
        return AnalogWeights(w0, backend, config, stream=STORE_STREAM_BASE + i)
    s = config.synapse
    if s.mode == "fp32":
        return FP32Weights(w0, backend)
    w_max = config.per_layer("w_max", n_layers)[i]
    eps = config.per_layer("epsilon_uS", n_layers)[i]
    np.clip(w0, -w_max * s.refresh_threshold, w_max * s.refresh_threshold, out=w0)
    tc = tile_config(layer_config(config, i, n_layers), i, w_max, eps)
    return AnalogWeights(w0, backend, tc, stream=STORE_STREAM_BASE + i)
