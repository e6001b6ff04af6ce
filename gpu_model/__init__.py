"""Analog side of mcasim: PCM device physics, differential synapses and crossbar tiles (NumPy/CuPy)."""
from .backend import Backend, BackendError, make_backend
from .presets import (IDEAL, JAP2018, JOSHI2020, PCM_PRESETS, PCMPreset, PresetError, TilePreset,
                      get_pcm_preset)
from .devices import PCMArray, ProgramStats
from .synapse import DifferentialSynapses, SynapseCounters
from .pulses import PulseList, UpdateReport, VerifyReadout
from .tile import AnalogMatrix, AnalogTile, TileEvents
from .tile_config import ENGINES, SynapseConfig, TileConfig

__all__ = ["Backend", "BackendError", "make_backend", "IDEAL", "JAP2018", "JOSHI2020", "PCM_PRESETS",
           "PCMPreset", "PresetError", "TilePreset", "get_pcm_preset", "PCMArray", "ProgramStats",
           "DifferentialSynapses", "SynapseCounters", "AnalogMatrix", "AnalogTile", "TileEvents",
           "PulseList", "UpdateReport", "VerifyReadout", "ENGINES", "SynapseConfig", "TileConfig"]
