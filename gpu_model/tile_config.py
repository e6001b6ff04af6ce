"""One composed, frozen configuration per analog tile: every knob of a tile, validated once.

A :class:`TileConfig` composes the device model (a :class:`~gpu_model.presets.PCMPreset`), the
synapse (:class:`SynapseConfig`: weight range, granularity, devices per side, refresh, verified
updates), the converters (a :class:`~gpu_model.presets.TilePreset`: DAC/ADC, tile size, noise
sampler), the digital unit (an :class:`rtl.spec.DPUSpec` and which implementation runs it), the
engine that runs the device-update path and the device faults (a
:class:`~gpu_model.faults.FaultConfig`; none by default). :class:`gpu_model.tile.AnalogTile` is built from one of
these and nothing else; ``sim`` builds it from the TOML config (``sim/tasks/models.py``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from rtl.dpu import DPU_KINDS, WHOLE_UNIT_KINDS
from rtl.spec import DPUSpec

from .faults import NO_FAULTS, FaultConfig
from .presets import PCMPreset, PresetError, TilePreset

ENGINES = ("reference", "fused")
"""Device-update engines (:mod:`gpu_model.engines`): ``reference`` — the readable NumPy/CuPy array
code whose random streams made every published table; ``fused`` — compiled kernels (Numba on
CPU) drawing from counter-based keys: same physics, same statistics, other random numbers."""

W_MAX_RANGE = (1e-6, 1e6)
"""Weight units: bounds of ``w_max`` (engineering choice: beyond them beta = w_max / (N g_max) is
so small or large that float32 weights lose the device's µS resolution or overflow)."""


@dataclass(frozen=True)
class SynapseConfig:
    """The synapse: how weights map onto the devices and how updates reach them."""

    w_max: float                        # weight units: w_max = beta * g_max * devices_per_side
    epsilon_uS: float | None = None     # µS per pulse granule of chi; None: the preset's mean first
                                        # SET step after RESET (PCMPreset.mean_step_after_reset)
    devices_per_side: int = 1           # N devices per side (Boybat et al. 2018); 1 = one pair
    refresh_threshold: float = 0.9      # fraction of g_max: a pulsed device past it refreshes its synapse
    refresh_tolerance_uS: float | None = None  # µS, program-and-verify tolerance of refresh; None: preset's
    common_mode_uS: float = 0.0         # µS: > 0 programs both sides at this level (no device left at RESET)
    drift_cache_rtol: float = 1e-3      # relative drift allowed before the cached W/Var is recomputed
                                        # (engineering choice, gpu_model/synapse.py sync)
    read_noise: bool = True             # ablation switch: read noise on crossbar reads and verify reads
    verified_update: bool = False       # the digital unit reads each pulsed device before and after
    verify_gain: float = 1.0            # share of (asked - measured) returned to chi, (0, 1]
    verify_anti_windup: bool = False    # no correction for a synapse whose refresh hit the range edge

    def __post_init__(self):
        def need(cond, msg):
            if not cond:
                raise PresetError(f"synapse: {msg}")
        need(isinstance(self.w_max, (int, float)) and math.isfinite(self.w_max)
             and W_MAX_RANGE[0] <= self.w_max <= W_MAX_RANGE[1],
             f"w_max must be a finite number in [{W_MAX_RANGE[0]:g}, {W_MAX_RANGE[1]:g}] weight units, got {self.w_max!r}")
        need(self.epsilon_uS is None or (isinstance(self.epsilon_uS, (int, float)) and math.isfinite(self.epsilon_uS)
                                         and self.epsilon_uS > 0),
             f"epsilon_uS must be a finite number > 0 µS, got {self.epsilon_uS!r}")
        need(isinstance(self.devices_per_side, int) and not isinstance(self.devices_per_side, bool)
             and self.devices_per_side >= 1, f"devices_per_side must be an integer >= 1, got {self.devices_per_side!r}")
        need(0 < self.refresh_threshold <= 1, f"refresh_threshold must be in (0, 1] (fraction of g_max), got {self.refresh_threshold}")
        need(self.refresh_tolerance_uS is None or self.refresh_tolerance_uS >= 0,
             f"refresh_tolerance_uS must be >= 0 µS or None, got {self.refresh_tolerance_uS}")
        need(self.common_mode_uS >= 0, f"common_mode_uS must be >= 0 µS, got {self.common_mode_uS}")
        need(self.drift_cache_rtol >= 0, f"drift_cache_rtol must be >= 0, got {self.drift_cache_rtol}")
        need(0 < self.verify_gain <= 1, f"verify_gain must be in (0, 1], got {self.verify_gain}")


@dataclass(frozen=True)
class TileConfig:
    """Everything that defines one analog tile (one weight matrix on crossbars)."""

    device: PCMPreset                   # the device model (gpu_model/presets.py), with its sources
    synapse: SynapseConfig              # range, granularity, devices per side, refresh, verify
    converters: TilePreset = field(default_factory=TilePreset)   # DAC/ADC and tile size
    dpu: DPUSpec = field(default_factory=DPUSpec)                # the digital unit's fixed-point spec
    dpu_kind: str = "golden"            # which implementation runs the spec: golden | rtl (rtl/dpu.py),
                                        # or the whole unit: tile-golden | tile-rtl (WholeUnitDigital)
    engine: str = "reference"           # device-update engine: reference | fused (ENGINES)
    faults: FaultConfig = NO_FAULTS     # device faults, endurance, exclusion policy (gpu_model/faults.py);
                                        # default: none (the tile runs exactly as without the field)

    def __post_init__(self):
        if not isinstance(self.device, PCMPreset):
            raise PresetError(f"tile: device must be a PCMPreset, got {type(self.device).__name__}")
        if self.dpu_kind not in DPU_KINDS + WHOLE_UNIT_KINDS:
            raise PresetError(f"tile: dpu_kind must be one of {', '.join(DPU_KINDS + WHOLE_UNIT_KINDS)}, "
                              f"got {self.dpu_kind!r}")
        if self.engine not in ENGINES:
            raise PresetError(f"tile: engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        s = self.synapse
        cap = s.refresh_threshold * self.device.g_max
        if not s.common_mode_uS < cap:
            raise PresetError(f"synapse: common_mode_uS must be below the refresh threshold "
                              f"({cap:g} µS), got {s.common_mode_uS}")
        if not isinstance(self.faults, FaultConfig):
            raise PresetError(f"tile: faults must be a FaultConfig, got {type(self.faults).__name__}")
        if self.faults.enabled and self.engine != "reference":
            raise PresetError(f"faults: device faults run on the reference engine only; set tile.engine = "
                              f"\"reference\" (got tile.engine = {self.engine!r})")
        for k in ("stuck_low_uS", "stuck_high_uS"):
            v = getattr(self.faults, k)
            if v is not None and not v <= self.device.g_max:
                raise PresetError(f"faults: {k} must be in [0, g_max = {self.device.g_max:g}] µS of the device, got {v}")
        if self.faults.exclude and s.common_mode_uS > 0:
            raise PresetError("faults: exclude needs synapse.common_mode_uS = 0 (the exclusion policy "
                              "writes a weight on one side)")
        if s.epsilon_uS is not None and not s.epsilon_uS < self.device.g_max:
            raise PresetError(f"synapse: epsilon_uS must be below the device's g_max "
                              f"({self.device.g_max:g} µS), got {s.epsilon_uS}")

    @property
    def read_noise(self) -> bool:
        """Read noise is drawn only where the switch is on and the device model has any."""
        return self.synapse.read_noise and not self.device.read_noise.silent

    def with_synapse(self, **kw) -> "TileConfig":
        """This config with some synapse fields replaced (validated again)."""
        return replace(self, synapse=replace(self.synapse, **kw))
