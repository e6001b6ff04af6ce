"""FusedSynapses: the device array of one tile with the whole device update in compiled passes.

The fast twin of :class:`gpu_model.synapse.DifferentialSynapses` (the "reference" engine, which
stays as it is): the same physics for every preset of :mod:`gpu_model.presets` — JAP-2018 SET steps
with history term and d2d multiplier on the drifted conductance, RESET, constant/Joshi drift,
affine/Joshi-1f/no read noise, JAP/Joshi/no programming noise, program-and-verify, N devices per
side with the round-robin arbiter, refresh at ``refresh_threshold * g_max``, common-mode writes,
the W/Var cache with its ``drift_cache_rtol`` policy and verified-update reads — with

* one compiled Numba pass over the pulsed synapses per update (:func:`device_kernels.update_one`
  per synapse: arbiter, all its SET pulses, state, cache entry, refresh check, refresh, verify
  reads), work proportional to the pulsed devices, each pulsed device's record touched once;
* keyed random numbers (:mod:`gpu_model.kernels.keyed_rng`): every draw is a function of
  (seed, stream, kind, step, synapse, device, draw), so results do not depend on the order of the
  synapses, on the thread count, or on a checkpoint/resume in between;
* a packed device record (``DEVICE_RECORD``, 40 bytes: all fields of one device in one cache line
  or two, the 2N devices of a synapse adjacent): a SET pulse is bound by scattered reads of the
  pulsed device, and the record turns ~8 scattered arrays into one line. ``layout="soa"`` keeps
  one array per field instead (for the benchmark's comparison).

* certified fast normals (device_kernels: results computed from cheap approximations of the keyed
  normals are kept only when an error bound proves them equal to the exact ones, else recomputed;
  many draws made in vectorised passes): the outcomes are those of the keys, bit for bit
  (``python -m benchmarks.bench_fused_update --fingerprint``).

Not bit-identical to the reference (different random numbers, float64 arithmetic on float32
state), identical in distribution (tests/test_fused_engine.py compares the statistics).

Units: conductance µS, time s, weights in weight units; beta in weight units per µS.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numba
import numpy as np

from ..presets import PCMPreset, PresetError
from ..pulses import PulseList, UpdateReport, VerifyReadout
from ..synapse import SynapseCounters
from . import device_kernels as K
from . import keyed_rng as R

FLOAT = np.float32
DEVICE_RECORD = np.dtype([          # one device; 40 bytes (t_prog 8-byte aligned)
    ("g_prog", np.float32),         # µS, conductance right after the last programming event
    ("hist", np.float32),           # pulse-history term P
    ("nu", np.float32),             # drift exponent
    ("step_mult", np.float32),      # device-to-device SET-step multiplier
    ("z_nu", np.float32),           # standard-normal place in the drift-exponent distribution
    ("n_set", np.int32),            # SET pulses received (int32: 2^31 pulses per device is far off)
    ("t_prog", np.float64),         # s, time of the last programming event
    ("n_reset", np.int32),          # RESET pulses received
    ("_pad", np.int32),
])
DEVICE_FIELDS = ("g_prog", "hist", "nu", "step_mult", "z_nu", "t_prog", "n_set", "n_reset")  # kernel order
PARALLEL_MIN_ITEMS = 8192           # engineering choice: pulse lists shorter than this run on one
                                    # thread (a parallel launch costs ~10 µs per call)
LOOKAHEAD = 8                       # engineering choice: pulse-list items prefetched ahead (0: off)
UNDRIFTED_MARGIN = 1e-6             # relative margin of the "no device past t0" shortcut (as
                                    # gpu_model/devices.py, PCMArray.undrifted)
TRAJ_PULSES = 64                    # pulses of the mean SET trajectory (PCMPreset.mean_set_trajectory)
TRAJ_RISE = 1e-6                    # µS: the trajectory's increasing prefix (as PCMArray._trajectory)


def _kinds(slots: dict) -> np.ndarray:
    a = np.zeros(K.N_K, np.int64)
    for slot, kind in slots.items():
        a[slot] = kind
    return a


# the keyed-RNG kind of each key slot of device_kernels (K_*), for an update and for program()
UPDATE_KINDS = _kinds({K.K_SET: R.KIND_SET_STEP, K.K_VB: R.KIND_VERIFY_BEFORE, K.K_VA: R.KIND_VERIFY_AFTER,
                       K.K_VR: R.KIND_VERIFY_REFRESHED, K.K_REF_READ: R.KIND_REFRESH_READ,
                       K.K_RESET: R.KIND_RESET, K.K_ATT: R.KIND_PROG_ATTEMPT, K.K_VER: R.KIND_PROG_VERIFY})
PROGRAM_KINDS = _kinds({K.K_SET: R.KIND_SET_STEP, K.K_VB: R.KIND_VERIFY_BEFORE, K.K_VA: R.KIND_VERIFY_AFTER,
                        K.K_VR: R.KIND_VERIFY_REFRESHED, K.K_REF_READ: R.KIND_REFRESH_READ,
                        K.K_RESET: R.KIND_INIT_RESET, K.K_ATT: R.KIND_INIT_ATTEMPT, K.K_VER: R.KIND_INIT_VERIFY})
CUPY_MESSAGE = "the fused engine runs on NumPy (Numba); on CuPy use tile engine 'reference'"


@dataclass
class FusedDeviceState:
    """Everything of a FusedSynapses that a checkpoint holds, as arrays.

    Device fields are ``(n_syn, 2N)`` arrays (device d < N: G+_d, d >= N: G-_(d-N)); with the packed
    layout they are strided views of one record array.
    """

    g_prog: np.ndarray      # float32, µS
    t_prog: np.ndarray      # float64, s
    hist: np.ndarray        # float32
    z_nu: np.ndarray        # float32
    step_mult: np.ndarray   # float32
    nu: np.ndarray          # float32
    n_set: np.ndarray       # int32
    n_reset: np.ndarray     # int32
    arbiter: np.ndarray     # int32 (n_syn,), next device of each synapse (round robin)
    cache_w: np.ndarray     # float32 (n_syn,), cached drifted W (weight units)
    cache_var: np.ndarray   # float32 (n_syn,), cached Var[W read] (weight units^2)


def _check_int(name, v, lo=0):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise PresetError(f"{name} must be an integer >= {lo}, got {v!r}")
    return int(v)


class FusedSynapses:
    """A ``(rows, cols)`` array of differential PCM synapses, N devices per side, updated by
    compiled kernels. Interface of :class:`gpu_model.synapse.DifferentialSynapses` (module docstring).

    beta: weight units per µS, ``w_max = beta * g_max * devices_per_side``; epsilon_uS: µS per pulse
    (default: the preset's mean single-pulse step after RESET); ``epsilon_w = beta * epsilon_uS``.
    seed, stream: the keyed RNG's key fields (:mod:`gpu_model.kernels.keyed_rng`).
    layout: "packed" (one record per device, default) or "soa" (one array per field).
    """

    def __init__(self, shape, preset: PCMPreset, backend, *, w_max: float,
                 epsilon_uS: float | None = None, refresh_threshold: float = 0.9,
                 refresh_tolerance_uS: float | None = None, drift_cache_rtol: float = 1e-3,
                 common_mode_uS: float = 0.0, devices_per_side: int = 1, seed: int = 0,
                 stream: int = 0, t: float = 0.0, layout: str = "packed"):
        name = getattr(backend, "name", "numpy")
        if name != "numpy":
            raise NotImplementedError(CUPY_MESSAGE)
        if not isinstance(devices_per_side, int) or isinstance(devices_per_side, bool) or devices_per_side < 1:
            raise PresetError(f"devices_per_side must be an integer >= 1, got {devices_per_side!r}")
        if 2 * devices_per_side > R.MAX_DEVICE:
            raise PresetError(f"devices_per_side must be <= {R.MAX_DEVICE // 2} for the fused engine "
                              f"(keyed RNG device field), got {devices_per_side}")
        if w_max <= 0:
            raise PresetError(f"w_max must be > 0 weight units, got {w_max}")
        if not 0 < refresh_threshold <= 1:
            raise PresetError(f"refresh_threshold must be in (0, 1] (fraction of g_max), got {refresh_threshold}")
        if drift_cache_rtol < 0:
            raise PresetError(f"drift_cache_rtol must be >= 0, got {drift_cache_rtol}")
        if layout not in ("packed", "soa"):
            raise PresetError(f"layout must be 'packed' or 'soa', got {layout!r}")
        self.seed = _check_int("seed", seed)
        self.stream = _check_int("stream", stream)
        self.shape = tuple(int(s) for s in shape)
        if len(self.shape) != 2 or min(self.shape) < 1:
            raise PresetError(f"shape must be (rows, cols) with positive sizes, got {shape!r}")
        self.preset = preset
        self.be = backend
        self.xp = np
        self.w_max = float(w_max)
        self.n_dev = devices_per_side
        self.beta = self.w_max / (preset.g_max * self.n_dev)
        if epsilon_uS is None:
            epsilon_uS = preset.mean_step_after_reset(1)
        if epsilon_uS <= 0:
            raise PresetError(f"epsilon_uS must be > 0, got {epsilon_uS}")
        self.epsilon_uS = float(epsilon_uS)
        self.epsilon_w = self.beta * self.epsilon_uS
        self.refresh_threshold = float(refresh_threshold)
        if not 0 <= common_mode_uS < refresh_threshold * preset.g_max:
            raise PresetError(f"common_mode_uS must be in [0, refresh threshold = "
                              f"{refresh_threshold * preset.g_max:g} µS), got {common_mode_uS}")
        self.common_mode_uS = float(common_mode_uS)
        if refresh_tolerance_uS is not None and refresh_tolerance_uS < 0:
            raise PresetError(f"refresh_tolerance_uS must be >= 0 µS, got {refresh_tolerance_uS}")
        self.refresh_tolerance_uS = refresh_tolerance_uS
        self.drift_cache_rtol = float(drift_cache_rtol)
        self.layout = layout
        self.n_syn = int(math.prod(self.shape))
        self.t = float(t)
        self.counters = SynapseCounters()
        self.program_calls = 0           # the "step" key field of program()'s draws
        self._P, self._M = self._parameters()
        self._traj_g, self._traj_p = self._trajectory()
        self.state = self._allocate()
        self._cache_t = None             # time of the last full cache recompute (None: never)
        self._nu_max = None              # cache of nu.max(); None: recompute
        self._tp_floor = float(t)        # lower bound of t_prog (s)
        self._prefix = R.key_prefix(self.seed, self.stream)
        keys = [R.stream_key(self.seed, self.stream, k, 0)
                for k in (R.KIND_FAB_RESET, R.KIND_Z_NU, R.KIND_STEP_MULT)]
        K.fabricate(self.t, *keys, self._dev, self._P, self._M)

    # --- construction helpers ---------------------------------------------------------------------
    def _parameters(self):
        p = self.preset
        P = np.zeros(K.N_P, np.float64)
        P[K.P_G_MIN], P[K.P_G_MAX] = p.g_min, p.g_max
        P[K.P_RESET_MEAN], P[K.P_RESET_STD] = p.reset_mean, p.reset_std
        P[K.P_DECAY] = math.exp(-1.0 / p.history_tau_pulses)          # P <- P e^{-1/tau}
        P[K.P_MU_A], P[K.P_MU_B], P[K.P_MU_C] = p.set_mu_slope, p.set_mu_offset, p.set_mu_hist
        P[K.P_SG_A], P[K.P_SG_B], P[K.P_SG_C] = p.set_sigma_slope, p.set_sigma_offset, p.set_sigma_hist
        P[K.P_D2D] = p.step_d2d_std
        P[K.P_T0], P[K.P_NU_MEAN], P[K.P_NU_STD] = p.drift_t0, p.nu_mean, p.nu_std
        P[K.P_INV_T0] = 1.0 / p.drift_t0
        P[K.P_RD_A], P[K.P_RD_B], P[K.P_T_READ] = p.read_sigma_slope, p.read_sigma_offset, p.t_read
        P[K.P_IDEAL_STEP] = p.ideal_step
        P[K.P_BETA] = self.beta
        P[K.P_CAP] = self.refresh_threshold * p.g_max
        P[K.P_CM] = self.common_mode_uS
        P[K.P_ZERR] = R.NORMAL_FAST_ERR      # the fast normals' bound (device_kernels: certification)
        P[K.P_ZPERT] = 0.0
        M = np.zeros(K.N_M, np.int64)
        for code, table, value, opt in ((K.M_DRIFT, K.DRIFT_CODES, p.drift_model, "drift_model"),
                                        (K.M_READ, K.READ_CODES, p.read_noise_model, "read_noise_model"),
                                        (K.M_PROG, K.PROG_CODES, p.prog_noise_model, "prog_noise_model")):
            if value not in table:
                raise PresetError(f"the fused engine does not support {opt}={value!r} "
                                  f"(supported: {', '.join(table)})")
            M[code] = table[value]
        M[K.M_IDEAL] = int(bool(p.ideal))
        M[K.M_DRIFT_FREE] = int(self._drift_free())
        M[K.M_N] = self.n_dev
        M[K.M_MAX_PULSES] = p.prog_verify_max_pulses
        M[K.M_D2D] = int(p.step_d2d_std > 0)
        M[K.M_EXACT] = 0                     # certified fast normals (1: every normal by normal_nb)
        return P, M

    def _trajectory(self):
        """Mean SET trajectory from RESET (G_k, P_k), its increasing prefix, float32 (PCMArray._trajectory)."""
        gs, ps = self.preset.mean_set_trajectory(TRAJ_PULSES)
        n = 1
        while n < len(gs) and gs[n] > gs[n - 1] + TRAJ_RISE:
            n += 1
        return np.asarray(gs[:n], np.float32), np.asarray(ps[:n], np.float32)

    def _allocate(self) -> FusedDeviceState:
        shp = (self.n_syn, 2 * self.n_dev)
        if self.layout == "packed":
            self._rec = np.zeros(shp, DEVICE_RECORD)
            dev = {f: self._rec[f] for f in DEVICE_FIELDS}
        else:
            self._rec = None
            dev = {f: np.zeros(shp, DEVICE_RECORD.fields[f][0]) for f in DEVICE_FIELDS}
        dev["hist"][...] = 1.0
        st = FusedDeviceState(**dev, arbiter=np.zeros(self.n_syn, np.int32),
                              cache_w=np.zeros(self.n_syn, FLOAT), cache_var=np.zeros(self.n_syn, FLOAT))
        self._bind(st)
        return st

    def _bind(self, st: FusedDeviceState):
        self._dev = tuple(getattr(st, f) for f in DEVICE_FIELDS)
        self._w2d = st.cache_w.reshape(self.shape)
        self._var2d = st.cache_var.reshape(self.shape)

    def _keys(self, step, kinds):
        """The keyed-RNG keys of one call: slot -> kind (``kinds``: int64 array of N_K kinds)."""
        return R.stream_keys_nb(self._prefix, kinds, step)

    # --- clock, drift and the cache ---------------------------------------------------------------
    def _drift_free(self) -> bool:
        p = self.preset
        return p.ideal or (p.drift_model == "constant" and p.nu_mean == 0 and p.nu_std == 0)

    def nu_max(self) -> float:
        """Largest drift exponent of the array (cached until a programming event changes nu)."""
        if self._nu_max is None:
            self._nu_max = float(K.max_of(self.state.nu))
        return self._nu_max

    def undrifted(self, t: float) -> bool:
        """True when no device can have drifted at ``t`` (s): t - min(t_prog) <= t0 (1 - 1e-6)."""
        return t - self._tp_floor <= self.preset.drift_t0 * (1.0 - UNDRIFTED_MARGIN)

    def _programmed_at(self, t: float):
        if t < self._tp_floor:
            self._tp_floor = float(t)
        if self.preset.drift_model == "joshi":
            self._nu_max = None          # nu follows G_p

    def _recompute(self):
        K.recompute_all(self.t, self._dev, self._P, self._M, self.state.cache_w, self.state.cache_var)
        self._cache_t = self.t

    def sync(self, force: bool = False):
        """Bring the cache up to ``self.t`` (the policy of DifferentialSynapses.sync): a full
        recompute when (1 + dt/t0)^nu_max - 1 > drift_cache_rtol (the 1/f model: when > 0)."""
        p = self.preset
        onef = p.read_noise_model == "joshi_1f"
        if self._cache_t is None or force:
            self._recompute()
            return
        if self._cache_t == self.t or self._drift_free() and not onef:
            return
        dt = self.t - self._cache_t
        if dt < 0:                       # the clock was set back: recompute
            self._recompute()
            return
        nu_max = self.nu_max()
        if nu_max == 0 and not onef:
            return
        change = (1.0 + dt / p.drift_t0) ** nu_max - 1.0
        if change > self.drift_cache_rtol or onef and change > 0:
            if not onef and self.undrifted(self.t):
                self._cache_t = self.t   # every drift factor still exactly 1: only the stamp moves
            else:
                self._recompute()

    def advance(self, dt: float):
        """Advance this array's clock by ``dt`` seconds."""
        if dt < 0:
            raise ValueError(f"time cannot run backwards (dt={dt})")
        self.t += float(dt)

    def set_time(self, t: float):
        self.t = float(t)

    # --- reads -----------------------------------------------------------------------------------
    def weights(self):
        """Noise-free drifted weights (weight units), float32 ``(rows, cols)``; the cache itself."""
        self.sync()
        return self._w2d

    def read_variance(self):
        """Per-synapse variance (weight units^2) of one read at the current time."""
        self.sync()
        return self._var2d

    def read_weights(self, step: int):
        """One explicit noisy read of every synapse (weight units), keyed by ``step``
        (KIND_READ_WEIGHTS): W = beta sum_k ((G+_k + n+_k) - (G-_k + n-_k))."""
        step = _check_int("step", step)
        out = np.empty(self.n_syn, FLOAT)
        K.read_all(self.t, R.stream_key(self.seed, self.stream, R.KIND_READ_WEIGHTS, step),
                   self._dev, self._P, self._M, out)
        return out.reshape(self.shape)

    def conductances(self):
        """(G+, G-): drifted conductances (µS) at ``t``, each float32 ``(n_dev, rows, cols)``."""
        g = np.empty((self.n_syn, 2 * self.n_dev), FLOAT)
        K.drifted_all(self.t, self._dev, self._P, self._M, g)
        n = self.n_dev
        gp = np.ascontiguousarray(g[:, :n].T).reshape(n, *self.shape)
        gm = np.ascontiguousarray(g[:, n:].T).reshape(n, *self.shape)
        return gp, gm

    def device_counts(self):
        """(n_set, n_reset): pulses received per device, each int64 ``(2, n_dev, rows, cols)``
        (axis 0: side, 0 = G+, 1 = G-)."""
        n = self.n_dev

        def split(a):
            a = a.astype(np.int64)
            return np.stack([a[:, :n].T, a[:, n:].T]).reshape(2, n, *self.shape)
        return split(self.state.n_set), split(self.state.n_reset)

    # --- programming -----------------------------------------------------------------------------
    def program(self, w_target, tolerance_uS: float | None = None):
        """Initial programming: RESET all 2N devices of every synapse (counted), write |w| by
        program-and-verify (DifferentialSynapses._write; counted in counters.init_*)."""
        w = np.asarray(w_target, dtype=FLOAT).reshape(-1)
        if w.shape[0] != self.n_syn:
            raise ValueError(f"target has {w.shape[0]} weights, array holds {self.n_syn}")
        if not np.all(np.isfinite(w)):
            raise ValueError("target weights must be finite")
        tol = self.preset.prog_residual_std if tolerance_uS is None else float(tolerance_uS)
        keys = self._keys(self.program_calls, PROGRAM_KINDS)
        pulses = np.zeros(self.n_syn, np.int64)
        reads = np.zeros(self.n_syn, np.int64)
        K.program_all(w, tol, self.t, keys, self._dev, self._P, self._M, self._traj_g, self._traj_p,
                      self.state.cache_w, self.state.cache_var, pulses, reads)
        self.program_calls += 1
        self._programmed_at(self.t)
        self._cache_t = self.t
        self.counters.init_prog_pulses += int(pulses.sum())
        self.counters.init_verify_reads += int(reads.sum())

    # --- training updates ------------------------------------------------------------------------
    def _check_list(self, pulses: PulseList):
        """(idx int64, counts int64, SET pulses) of a PulseList, checked; zero counts dropped."""
        if not isinstance(pulses, PulseList):
            raise TypeError(f"apply takes a gpu_model.pulses.PulseList, got {type(pulses).__name__}")
        idx, counts = pulses.idx, pulses.counts
        for name, a in (("idx", idx), ("counts", counts)):
            if not isinstance(a, np.ndarray):
                raise TypeError(f"PulseList.{name} must be a NumPy array for the fused engine "
                                f"(got {type(a).__module__}.{type(a).__name__}); {CUPY_MESSAGE}")
            if a.ndim != 1:
                raise ValueError(f"PulseList.{name} must be 1-D, got shape {a.shape}")
        if idx.shape != counts.shape:
            raise ValueError(f"PulseList idx has shape {idx.shape}, counts {counts.shape}")
        if idx.dtype.kind not in "iu":
            raise TypeError(f"PulseList.idx must be an integer array, got dtype {idx.dtype}")
        if counts.dtype.kind == "f":
            if not bool(np.all(counts == np.rint(counts))):
                raise ValueError("pulse counts must be integers (got non-integer floats)")
        elif counts.dtype.kind not in "iu":
            raise TypeError(f"pulse counts must be an integer array, got dtype {counts.dtype}")
        idx = idx.astype(np.int64, copy=False)
        counts = counts.astype(np.int64, copy=False)
        verdict, total, zeros = K.scan_list(idx, counts, self.n_syn, R.MAX_DRAW)
        if verdict == K.LIST_RANGE:
            raise ValueError(f"synapse indices must lie in [0, {self.n_syn}), got {idx.min()}..{idx.max()}")
        if verdict == K.LIST_ORDER:
            raise ValueError("PulseList.idx must be unique and ascending")
        if verdict == K.LIST_COUNT:
            raise ValueError(f"pulse counts must be < {R.MAX_DRAW} in magnitude")
        if zeros:
            keep = counts != 0
            idx, counts = idx[keep], counts[keep]
        return idx, counts, int(total)

    def apply(self, pulses: PulseList, step: int, verify: bool = False,
              verify_read_noise: bool = True) -> UpdateReport:
        """Apply one mini-batch's pulse list (DifferentialSynapses.apply_pulse_list's semantics).

        ``step``: the tile's update counter (key field of this update's draws; one update per step
        value). ``verify``: also measure what the pulses did (pulsed device read before and after
        its pulses; a refreshed synapse read once more after its refresh, the refresh's read of W
        counting as its "before"), returned as ``report.verify``; ``verify_read_noise=False``:
        exact verify reads (the refresh's own read of W keeps the device's read noise).
        An empty list returns zero counts (and an empty VerifyReadout when ``verify``).
        """
        step = _check_int("step", step)
        idx, counts, set_pulses = self._check_list(pulses)
        n = int(idx.shape[0])
        if n == 0:
            empty = VerifyReadout(idx, counts, np.zeros(0, FLOAT), np.zeros(0, bool)) if verify else None
            return UpdateReport(0, 0, empty)
        self.sync()
        keys = self._keys(step, UPDATE_KINDS)
        tol = self.preset.prog_residual_std if self.refresh_tolerance_uS is None else float(self.refresh_tolerance_uS)
        kern = K.apply_parallel if n >= PARALLEL_MIN_ITEMS and numba.get_num_threads() > 1 else K.apply_serial
        out_ref, out_pulses, out_reads, out_meas, out_capped = kern(
            idx, counts, self.t, tol, bool(verify), bool(verify_read_noise), keys, self._dev,
            self.state.arbiter, self._P, self._M, self._traj_g, self._traj_p, self.state.cache_w,
            self.state.cache_var, LOOKAHEAD)
        self._programmed_at(self.t)
        n_ref = int(out_ref.sum(dtype=np.int64))
        c = self.counters
        c.set_pulses += set_pulses
        if n_ref:
            c.refreshes += n_ref
            c.refresh_resets += 2 * self.n_dev * n_ref
            c.refresh_prog_pulses += int(out_pulses.sum())
            c.refresh_verify_reads += int(out_reads.sum()) + n_ref   # + the read of W
        readout = None
        if verify:
            c.update_verify_reads += 2 * n + n_ref
            readout = VerifyReadout(idx, counts, out_meas, out_capped)
        return UpdateReport(set_pulses, n_ref, readout)

    # --- checkpoints -----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Plain dict of NumPy arrays and scalars (the FusedDeviceState fields, contiguous copies)."""
        out = {f.name: np.array(getattr(self.state, f.name)) for f in dataclasses.fields(FusedDeviceState)}
        out.update(t=self.t, cache_t=np.nan if self._cache_t is None else float(self._cache_t),
                   tp_floor=self._tp_floor, program_calls=self.program_calls, seed=self.seed,
                   stream=self.stream, devices_per_side=self.n_dev,
                   **{f"counters.{k}": v for k, v in self.counters.as_dict().items()})
        return out

    def load_state_dict(self, st: dict):
        """Restore what :meth:`state_dict` returned, bit-exactly (devices, arbiter and cache)."""
        if int(st["devices_per_side"]) != self.n_dev:
            raise ValueError(f"checkpoint has {st['devices_per_side']} devices per side, array {self.n_dev}")
        for f in dataclasses.fields(FusedDeviceState):
            dst = getattr(self.state, f.name)
            src = np.asarray(st[f.name])
            if src.shape != dst.shape or src.dtype != dst.dtype:
                raise ValueError(f"checkpoint field {f.name}: {src.dtype}{src.shape}, array {dst.dtype}{dst.shape}")
            dst[...] = src
        self.t = float(st["t"])
        ct = float(st["cache_t"])
        self._cache_t = None if math.isnan(ct) else ct
        self._tp_floor = float(st["tp_floor"])
        self.program_calls = int(st["program_calls"])
        self.seed, self.stream = int(st["seed"]), int(st["stream"])
        self._prefix = R.key_prefix(self.seed, self.stream)
        self.counters = SynapseCounters(**{k.split(".", 1)[1]: int(v) for k, v in st.items()
                                           if k.startswith("counters.")})
        self._nu_max = None
