"""Which implementation runs a tile's device array: chosen by (engine, backend).

| engine | backend | device array | random numbers |
| --- | --- | --- | --- |
| ``reference`` | numpy, cupy | :class:`gpu_model.synapse.DifferentialSynapses` over :class:`gpu_model.devices.PCMArray` (array passes, readable) | generator streams (``backend.child_rng``): every published table |
| ``fused`` | numpy | :class:`gpu_model.kernels.fused_synapses.FusedSynapses` (Numba, one compiled pass per update) | counter-based keys (seed, stream, step, synapse, device, attempt) |

Every device model of :mod:`gpu_model.presets` runs on both engines; the device model is part of the
:class:`~gpu_model.tile_config.TileConfig` the device array is built from. Stream numbers of one
tile with stream ``s``: devices ``s``, verify reads ``VERIFY_STREAM_OFFSET + s`` (reads:
``gpu_model.tile.READ_STREAM_OFFSET + s``).
"""
from __future__ import annotations

from .presets import PresetError

VERIFY_STREAM_OFFSET = 30_000   # backend child stream of a tile's verify reads: 30,000 + its stream


def _reference(config, shape, backend, stream: int, t: float):
    from .synapse import DifferentialSynapses
    s = config.synapse
    return DifferentialSynapses(
        shape, config.device, backend, w_max=s.w_max, epsilon_uS=s.epsilon_uS,
        refresh_threshold=s.refresh_threshold, refresh_tolerance_uS=s.refresh_tolerance_uS,
        drift_cache_rtol=s.drift_cache_rtol, common_mode_uS=s.common_mode_uS,
        devices_per_side=s.devices_per_side, stream=stream, t=t,
        verify_stream=VERIFY_STREAM_OFFSET + stream if s.verified_update else None,
        faults=config.faults if config.faults.enabled else None)    # gpu_model/faults.py


def _fused(config, shape, backend, stream: int, t: float):
    from .kernels.fused_synapses import FusedSynapses
    if config.faults.enabled:      # TileConfig refuses it too; a config built around it lands here
        raise PresetError("faults: device faults run on the reference engine only; set tile.engine = \"reference\"")
    s = config.synapse
    return FusedSynapses(
        shape, config.device, backend, w_max=s.w_max, epsilon_uS=s.epsilon_uS,
        refresh_threshold=s.refresh_threshold, refresh_tolerance_uS=s.refresh_tolerance_uS,
        drift_cache_rtol=s.drift_cache_rtol, common_mode_uS=s.common_mode_uS,
        devices_per_side=s.devices_per_side, seed=backend.seed, stream=stream, t=t)


DEVICE_ARRAYS = {
    ("reference", "numpy"): _reference,
    ("reference", "cupy"): _reference,
    ("fused", "numpy"): _fused,
}


def make_device_array(config, shape, backend, stream: int, t: float = 0.0):
    """The device array of a tile: the registered implementation for (config.engine, backend)."""
    key = (config.engine, backend.name)
    if key not in DEVICE_ARRAYS:
        have = ", ".join(f"{e} on {b}" for e, b in DEVICE_ARRAYS)
        raise PresetError(f"tile engine {config.engine!r} does not run on the {backend.name} backend "
                          f"(available: {have}); set tile.engine = \"reference\" there")
    return DEVICE_ARRAYS[key](config, shape, backend, stream, t)
