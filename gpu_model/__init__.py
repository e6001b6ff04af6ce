"""Analog side of mcasim: PCM device physics, differential synapses and crossbar tiles (NumPy/CuPy)."""
from .backend import Backend, BackendError, make_backend
from .presets import (IDEAL, JAP2018, JOSHI2020, PCM_PRESETS, PCMPreset, PresetError, TilePreset,
                      get_pcm_preset)
from .devices import PCMArray, ProgramStats
from .synapse import DifferentialSynapses, SynapseCounters
from .tile import AnalogMatrix

__all__ = ["Backend", "BackendError", "make_backend", "IDEAL", "JAP2018", "JOSHI2020", "PCM_PRESETS",
           "PCMPreset", "PresetError", "TilePreset", "get_pcm_preset", "PCMArray", "ProgramStats",
           "DifferentialSynapses", "SynapseCounters", "AnalogMatrix"]
