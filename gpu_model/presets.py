"""Named, documented physics and peripheral presets (frozen dataclasses).

Units: conductances in µS, times in seconds. Every number cites its source.

* ``JAP2018``   — statistical PCM model of Nandakumar et al., J. Appl. Phys. 124, 152135 (2018):
  nonlinear stochastic SET steps with a pulse-history term, RESET, drift, read noise. Default for
  training.
* ``JOSHI2020`` — drift and 1/f read-noise statistics of Joshi et al., Nat. Commun. 11, 2473 (2020)
  (the model behind IBM aihwkit's ``PCMLikeNoiseModel``); SET steps re-use the JAP-2018 step model.
* ``IDEAL``     — every pulse adds exactly ``epsilon``; no noise, no drift (for ablations).
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from .device_models import (DRIFT_MODELS, JOSHI_NU_MU, JOSHI_NU_SIGMA, JOSHI_PROG,  # noqa: F401 (re-exported)
                            JOSHI_QS, PROGRAMMING_MODELS, READ_NOISE_MODELS)
from .sampling import NOISE_SAMPLERS


class PresetError(ValueError):
    """Raised for an invalid or unknown preset."""


@dataclass(frozen=True)
class PCMPreset:
    """Statistics of one PCM device kind (all conductances in µS, times in s)."""

    name: str
    g_min: float                 # µS, lower clip (RESET level)
    g_max: float                 # µS, upper clip (saturation)
    # RESET: G ~ N(reset_mean, reset_std), history P := 1
    reset_mean: float
    reset_std: float
    # SET step: P <- P*exp(-1/history_tau_pulses); dG ~ N(mu, sigma)
    #   mu    = set_mu_slope*G + set_mu_offset + set_mu_hist*P
    #   sigma = max(set_sigma_slope*G + set_sigma_offset + set_sigma_hist*P, 0)
    history_tau_pulses: float
    set_mu_slope: float
    set_mu_offset: float
    set_mu_hist: float
    set_sigma_slope: float
    set_sigma_offset: float
    set_sigma_hist: float
    # device-to-device variability of the step size: per-device multiplier ~ N(1, step_d2d_std)
    step_d2d_std: float
    # drift: G(t) = G_p * ((t - t_p)/drift_t0)^(-nu) for t - t_p > drift_t0
    drift_model: str             # "constant" (nu ~ N(nu_mean, nu_std)) or "joshi" (nu depends on g)
    drift_t0: float              # s
    nu_mean: float
    nu_std: float
    # read noise: "affine" sigma = read_sigma_slope*G + read_sigma_offset (JAP),
    #             "joshi_1f"  sigma = G_drift*Q_s*sqrt(ln((t+t_read)/(2 t_read))), "none"
    read_noise_model: str
    read_sigma_slope: float
    read_sigma_offset: float
    t_read: float                # s, read duration (1/f model)
    # programming noise of program-and-verify (target-relative), "jap" residual or "joshi" polynomial
    prog_noise_model: str
    prog_residual_std: float     # µS, residual error after program-and-verify (JAP model)
    prog_verify_max_pulses: int  # iterations allowed to program-and-verify one device
    ideal: bool = False          # ideal linear device: every pulse adds exactly ideal_step
    ideal_step: float = 0.0      # µS per pulse when ideal

    def __post_init__(self):
        validate_pcm_preset(self)

    # --- derived -------------------------------------------------------------------------------
    def mean_step_after_reset(self, n_pulses: int = 1) -> float:
        """Mean conductance change (µS) of the first ``n_pulses`` SET pulses after RESET, per pulse.

        Used to derive the device granularity epsilon (the "mean single-pulse step").
        Deterministic recursion on the mean (ignores the spread), sufficient for a granularity.
        """
        import math

        if self.ideal:
            return self.ideal_step
        g, p = self.reset_mean, 1.0
        start = g
        for _ in range(n_pulses):
            p *= math.exp(-1.0 / self.history_tau_pulses)
            mu = self.set_mu_slope * g + self.set_mu_offset + self.set_mu_hist * p
            g = min(max(g + mu, self.g_min), self.g_max)
        return (g - start) / n_pulses

    def mean_set_trajectory(self, n_pulses: int = 64):
        """Mean conductance G_k (µS) and history term P_k after k = 1..n_pulses SET pulses from RESET.

        Deterministic recursion on the means; program-and-verify uses it to estimate how many SET
        pulses reaching a target took, and so the history term a verified device is left with.
        """
        import math

        g, p = self.reset_mean, 1.0
        gs, ps = [], []
        for _ in range(n_pulses):
            p *= math.exp(-1.0 / self.history_tau_pulses)
            g = min(max(g + self.set_mu_slope * g + self.set_mu_offset + self.set_mu_hist * p, self.g_min), self.g_max)
            gs.append(g)
            ps.append(p)
        return gs, ps

    # --- the model objects (gpu_model/device_models.py) behind the names ---------------------------
    @property
    def drift(self):
        """The drift model object named by ``drift_model``."""
        return DRIFT_MODELS[self.drift_model]

    @property
    def read_noise(self):
        """The read-noise model object named by ``read_noise_model``."""
        return READ_NOISE_MODELS[self.read_noise_model]

    @property
    def programming(self):
        """The programming (program-and-verify) model object named by ``prog_noise_model``."""
        return PROGRAMMING_MODELS[self.prog_noise_model]

    @property
    def drift_free(self) -> bool:
        """True when no device of this model can drift (ideal devices, or every nu is 0)."""
        return self.ideal or self.drift.drift_free(self)

    def with_overrides(self, **kw: Any) -> "PCMPreset":
        unknown = set(kw) - {f.name for f in fields(self)}
        if unknown:
            raise PresetError(f"unknown PCM preset field(s): {', '.join(sorted(unknown))}")
        return replace(self, **kw)


def validate_pcm_preset(p: PCMPreset) -> None:
    def need(cond: bool, msg: str):
        if not cond:
            raise PresetError(f"PCM preset {p.name!r}: {msg}")

    need(p.g_max > 0, f"g_max must be > 0 µS, got {p.g_max}")
    need(0 <= p.g_min < p.g_max, f"need 0 <= g_min < g_max, got g_min={p.g_min}, g_max={p.g_max}")
    need(p.reset_std >= 0, f"reset_std must be >= 0, got {p.reset_std}")
    need(p.history_tau_pulses > 0, f"history_tau_pulses must be > 0, got {p.history_tau_pulses}")
    need(p.step_d2d_std >= 0, f"step_d2d_std must be >= 0, got {p.step_d2d_std}")
    need(p.drift_model in DRIFT_MODELS, f"drift_model must be one of {', '.join(DRIFT_MODELS)}, got {p.drift_model!r}")
    need(p.drift_t0 > 0, f"drift_t0 must be > 0 s, got {p.drift_t0}")
    need(p.nu_std >= 0, f"nu_std must be >= 0, got {p.nu_std}")
    need(p.read_noise_model in READ_NOISE_MODELS,
         f"read_noise_model must be one of {', '.join(READ_NOISE_MODELS)}, got {p.read_noise_model!r}")
    need(p.t_read > 0, f"t_read must be > 0 s, got {p.t_read}")
    need(p.prog_noise_model in PROGRAMMING_MODELS,
         f"prog_noise_model must be one of {', '.join(PROGRAMMING_MODELS)}, got {p.prog_noise_model!r}")
    need(p.prog_residual_std >= 0, f"prog_residual_std must be >= 0, got {p.prog_residual_std}")
    need(p.prog_verify_max_pulses >= 1, f"prog_verify_max_pulses must be >= 1, got {p.prog_verify_max_pulses}")
    if p.ideal:
        need(p.ideal_step > 0, f"an ideal preset needs ideal_step > 0 µS, got {p.ideal_step}")


# ---------------------------------------------------------------------------------------------
# Nandakumar et al., J. Appl. Phys. 124, 152135 (2018), "A phase-change memory model for
# neuromorphic computing" — statistical model fit to ~10,000 devices of a 90 nm PCM array, as
# published and as reimplemented openly (all µS).
JAP2018 = PCMPreset(
    name="jap2018",
    g_min=0.1,                 # JAP 2018: conductance clipped to [0.1, Gmax]
    g_max=20.0,                # JAP 2018: Gmax = 20 µS
    reset_mean=0.1,            # JAP 2018: RESET G ~ N(0.1, 0.01)
    reset_std=0.01,            # JAP 2018
    history_tau_pulses=2.6,    # JAP 2018: P <- P*exp(-1/2.6) per SET pulse
    set_mu_slope=-0.084,       # JAP 2018: mu = -0.084 G + 0.880 + 1.40 P
    set_mu_offset=0.880,
    set_mu_hist=1.40,
    set_sigma_slope=0.091,     # JAP 2018: sigma = 0.091 G + 0.260 + 2.15 P
    set_sigma_offset=0.260,
    set_sigma_hist=2.15,
    step_d2d_std=0.0,          # JAP 2018 fits sigma over many devices, so it already lumps device-to-
                               # device and cycle-to-cycle spread; extra d2d multiplier off by default
    drift_model="constant",
    drift_t0=38.6,             # JAP 2018: T0 = 38.6 s
    nu_mean=0.04,              # JAP 2018: nu = 0.04
    nu_std=0.0,                # JAP 2018 uses one exponent; set > 0 for a per-device distribution
    read_noise_model="affine",
    read_sigma_slope=0.03,     # JAP 2018: read noise sigma = 0.03 G + 0.13
    read_sigma_offset=0.13,
    t_read=250e-9,             # Joshi 2020 read duration; unused by the affine model
    prog_noise_model="jap",
    prog_residual_std=0.3,     # Nandakumar 2020 (Front. Neurosci.) / RESEARCH_NOTES: program-and-verify
                               # leaves ~0.3 µS residual error
    prog_verify_max_pulses=20, # engineering choice: iterations of the verify loop before giving up
)

# Joshi et al., Nat. Commun. 11, 2473 (2020), "Accurate deep neural network inference using
# computational phase-change memory" (Methods; PCMLikeNoiseModel in aihwkit). SET steps re-use
# the JAP-2018 step statistics scaled to this g_max (engineering choice: Joshi 2020 models
# programming to a target, not single SET pulses).
JOSHI2020 = PCMPreset(
    name="joshi2020",
    g_min=0.0,                 # Joshi 2020: conductances in [0, g_max]
    g_max=25.0,                # Joshi 2020: g_max = 25 µS
    reset_mean=0.1,            # JAP 2018 RESET (engineering choice, see above)
    reset_std=0.01,
    history_tau_pulses=2.6,    # JAP 2018 step model
    set_mu_slope=-0.084,
    set_mu_offset=0.880,
    set_mu_hist=1.40,
    set_sigma_slope=0.091,
    set_sigma_offset=0.260,
    set_sigma_hist=2.15,
    step_d2d_std=0.0,
    drift_model="joshi",       # Joshi 2020: nu ~ N(mu_nu(g), sigma_nu(g)), g = G/g_max
    drift_t0=20.0,             # Joshi 2020: t0 = 20 s
    nu_mean=0.0,               # unused by the "joshi" drift model (nu comes from g)
    nu_std=0.0,
    read_noise_model="joshi_1f",
    read_sigma_slope=0.0,
    read_sigma_offset=0.0,
    t_read=250e-9,             # Joshi 2020: t_read = 250 ns
    prog_noise_model="joshi",  # Joshi 2020: sigma = max(-1.1731 g^2 + 1.9650 g + 0.2635, 0) µS
    prog_residual_std=0.0,
    prog_verify_max_pulses=20, # engineering choice
)

# Ideal linear device for ablations: the mixed-precision algorithm alone.
IDEAL = PCMPreset(
    name="ideal",
    g_min=0.0,                 # engineering choice: full range usable
    g_max=20.0,                # same range as JAP 2018 so beta and epsilon compare directly
    reset_mean=0.0,            # exact RESET
    reset_std=0.0,
    history_tau_pulses=2.6,    # unused
    set_mu_slope=0.0, set_mu_offset=0.0, set_mu_hist=0.0,
    set_sigma_slope=0.0, set_sigma_offset=0.0, set_sigma_hist=0.0,
    step_d2d_std=0.0,
    drift_model="constant",
    drift_t0=38.6,
    nu_mean=0.0,               # no drift
    nu_std=0.0,
    read_noise_model="none",
    read_sigma_slope=0.0,
    read_sigma_offset=0.0,
    t_read=250e-9,
    prog_noise_model="none",
    prog_residual_std=0.0,
    prog_verify_max_pulses=1,
    ideal=True,
    ideal_step=0.75,           # µS per pulse; engineering choice (RESEARCH_NOTES eps 0.75 µS)
)


PCM_PRESETS: dict[str, PCMPreset] = {p.name: p for p in (JAP2018, JOSHI2020, IDEAL)}


def get_pcm_preset(name: str) -> PCMPreset:
    try:
        return PCM_PRESETS[name]
    except KeyError:
        raise PresetError(f"unknown PCM preset {name!r}; known presets: {', '.join(PCM_PRESETS)}") from None


@dataclass(frozen=True)
class TilePreset:
    """Crossbar tile peripherals.

    Inputs are scaled per vector to [-1, 1] (``dac_scaling="max"``: divide by max |x| of the
    vector; ``"fixed"``: divide by ``dac_fixed_scale``) and quantised by a signed DAC with
    2**dac_bits - 1 levels. The analog sum in normalised units y_n = (W / w_max) x_n is clipped to
    [-adc_range, adc_range] and quantised by a signed ADC with 2**adc_bits - 1 levels, then
    scaled back to weight units. Larger matrices are split over tiles of at most
    ``max_rows`` x ``max_cols``; partial sums of row tiles are ADC-converted separately and summed
    digitally.
    """

    dac_bits: int = 8            # engineering choice (8-bit input DACs, as in Nandakumar 2020's DPU study)
    dac_scaling: str = "max"     # engineering choice: per-vector dynamic input scaling
    dac_fixed_scale: float = 1.0 # used when dac_scaling == "fixed"
    adc_bits: int = 9            # engineering choice, after aihwkit IOParameters out_res = 1/(2^9-2)
    adc_range: float = 12.0      # normalised units (multiples of w_max * input scale); aihwkit out_bound = 12
    adc_range_backward: float = 0.0  # ADC range of the transposed (backward) pass; 0: same as adc_range.
                                 # Backward signals are small (errors scaled to max 1 over few rows), so
                                 # a programmable-gain ADC with a smaller range keeps their resolution
    max_rows: int = 512          # engineering choice: 512x512 arrays (Joshi 2020 chip scale)
    max_cols: int = 512
    quantize: bool = True        # False bypasses DAC and ADC (ablations)
    noise_sampler: str = "ziggurat"  # engineering choice: how the read noise's standard normals are
                                 # drawn, "ziggurat" (the generator's own) or "box_muller" (same
                                 # statistics, ~2.5x cheaper on NumPy; gpu_model/sampling.py)

    def __post_init__(self):
        def need(cond, msg):
            if not cond:
                raise PresetError(f"tile preset: {msg}")

        need(isinstance(self.dac_bits, int) and 2 <= self.dac_bits <= 24, f"dac_bits must be an integer in [2, 24], got {self.dac_bits}")
        need(isinstance(self.adc_bits, int) and 2 <= self.adc_bits <= 24, f"adc_bits must be an integer in [2, 24], got {self.adc_bits}")
        need(self.dac_scaling in ("max", "fixed"), f"dac_scaling must be 'max' or 'fixed', got {self.dac_scaling!r}")
        need(self.dac_fixed_scale > 0, f"dac_fixed_scale must be > 0, got {self.dac_fixed_scale}")
        need(self.adc_range > 0, f"adc_range must be > 0, got {self.adc_range}")
        need(self.adc_range_backward >= 0, f"adc_range_backward must be >= 0 (0: same as adc_range), got {self.adc_range_backward}")
        need(self.noise_sampler in NOISE_SAMPLERS, f"noise_sampler must be one of {', '.join(NOISE_SAMPLERS)}, got {self.noise_sampler!r}")
        need(self.max_rows >= 1 and self.max_cols >= 1, f"max_rows/max_cols must be >= 1, got {self.max_rows}x{self.max_cols}")

    @property
    def dac_levels(self) -> int:
        return 2 ** self.dac_bits - 1

    @property
    def backward_range(self) -> float:
        return self.adc_range_backward or self.adc_range

    @property
    def adc_levels(self) -> int:
        return 2 ** self.adc_bits - 1
