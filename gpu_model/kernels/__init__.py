"""Fused compiled (Numba) engines beside the reference NumPy/CuPy paths.

* :mod:`.keyed_rng` — counter-based random numbers keyed by (seed, stream, kind, step, synapse,
  device, draw), NumPy and Numba versions with identical uniform bits.
* :mod:`.fused_synapses` — :class:`FusedSynapses`, the device array of one tile with the whole
  device update of a mini-batch in one compiled pass (the fast twin of
  :class:`gpu_model.synapse.DifferentialSynapses`).
* :mod:`.device_kernels` — the compiled per-synapse physics they share.
"""
from .fused_synapses import DEVICE_RECORD, FusedDeviceState, FusedSynapses
from .keyed_rng import KINDS, normal_np, stream_key, uniform_np

__all__ = ["DEVICE_RECORD", "FusedDeviceState", "FusedSynapses", "KINDS", "normal_np", "stream_key",
           "uniform_np"]
