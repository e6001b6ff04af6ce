"""PCM device arrays: state, SET/RESET programming, drift, read noise, program-and-verify.

Every operation is vectorised over the array (NumPy or CuPy via :class:`~gpu_model.backend.Backend`);
pulse application works on the flat indices of the devices that receive pulses, so its cost scales
with the number of pulsed devices, not with the array size. The only Python loops run over the
*pulse index* (at most the largest pulse count in one call) or verify iterations, never over devices.

Units: conductance µS, time s.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .backend import Backend
from .presets import PCMPreset

FLOAT = "float32"   # conductances: float32 is ample against µS-scale noise, and halves GPU traffic
VERIFY_BLOCK_ELEMENTS = 4_000_000   # engineering choice: attempts per program-and-verify block on a GPU
                                    # (two float32 (b, m) arrays of 16 MB each, plus temporaries)


_SET_STEP_KERNEL = None


def _set_step_kernel(xp):
    """One SET pulse on the active devices as one CuPy elementwise kernel (in place on g, h).

    The arithmetic of :meth:`PCMArray.apply_set_pulses`'s loop body, in the same order:
    P <- P e^{-1/tau}; mu = a_mu G + b_mu + c_mu P; sigma = max(a_s G + b_s + c_s P, 0);
    G <- clip(G + (mu + sigma z) * mult, g_min, g_max). On a GPU the loop is launch-bound (about a
    dozen small kernels per pulse index); this is one. NumPy keeps the unfused lines.
    """
    global _SET_STEP_KERNEL
    if _SET_STEP_KERNEL is None:
        _SET_STEP_KERNEL = xp.ElementwiseKernel(
            "float32 z, float32 mult, float32 decay, float32 mu_a, float32 mu_b, float32 mu_c, "
            "float32 sg_a, float32 sg_b, float32 sg_c, float32 g_min, float32 g_max",
            "float32 g, float32 h",
            """
            h = h * decay;
            float mu = mu_a * g + mu_b + mu_c * h;
            float sg = fmaxf(sg_a * g + sg_b + sg_c * h, 0.0f);
            float gn = g + (mu + sg * z) * mult;
            g = fminf(fmaxf(gn, g_min), g_max);
            """,
            "mcasim_set_step")
    return _SET_STEP_KERNEL


@dataclass
class ProgramStats:
    """Counts of one program-and-verify call."""

    pulses: int = 0        # programming attempts (pulses) sent
    verify_reads: int = 0  # verify reads made
    failed: int = 0        # devices still outside tolerance after the last iteration


class PCMArray:
    """State of ``shape`` PCM devices.

    Per device: ``g_prog`` (µS, conductance right after the last programming event), ``t_prog``
    (s, time of that event), ``z_nu`` (standard-normal draw fixing the device's place in the drift
    exponent distribution), ``nu`` (drift exponent), ``hist`` (pulse-history term P),
    ``step_mult`` (device-to-device step multiplier), ``n_set`` / ``n_reset`` (pulse counters).
    """

    def __init__(self, shape, preset: PCMPreset, backend: Backend, rng=None, t: float = 0.0):
        self.preset = preset
        self.be = backend
        self.xp = backend.xp
        self.rng = rng if rng is not None else backend.rng
        self.shape = tuple(int(s) for s in shape)
        xp = self.xp
        n = int(math.prod(self.shape))
        self.size = n
        self.g_prog = xp.zeros(n, dtype=FLOAT)
        self.t_prog = xp.full(n, float(t), dtype="float64")
        self.hist = xp.ones(n, dtype=FLOAT)
        self.z_nu = self.rng.standard_normal(n, dtype=FLOAT)
        self.step_mult = (1.0 + preset.step_d2d_std * self.rng.standard_normal(n, dtype=FLOAT)).astype(FLOAT)
        xp.maximum(self.step_mult, 0.0, out=self.step_mult)
        self.nu = xp.zeros(n, dtype=FLOAT)
        self.n_set = xp.zeros(n, dtype="int64")
        self.n_reset = xp.zeros(n, dtype="int64")
        self.faults = None        # gpu_model.faults.DeviceFaults when the tile has faults (place_faults)
        # program-and-verify a block of attempts at a time on a GPU (_verify_blocked); NumPy keeps
        # the one-attempt loop (the same distribution, and its random stream as it always was)
        self.blocked_verify = backend.name != "numpy"
        self._nu_fixed = False
        self._nu_max = None       # cache of nu.max(); dropped by nu_changed()
        self._tp_floor = float(t) # lower bound of t_prog (s); see t_prog_changed() / undrifted()
        self.reset(None, t)
        self._nu_fixed = True
        self.n_reset[:] = 0  # the initial RESET is the fabrication state, not a counted pulse
        self.n_set[:] = 0    # write every page now: NumPy's zeros are untouched calloc pages, and
                             # the first pulses into each page would pay its fault inside a
                             # training step (measured: a fifth of the first 20 mini-batches of a
                             # GAN with 16 devices per side; a one-off cost over a long run)

    @property
    def _trajectory(self):
        """Mean SET trajectory from RESET as backend arrays (G increasing part, P), cached."""
        if getattr(self, "_traj", None) is None:
            gs, ps = self.preset.mean_set_trajectory()
            # keep the monotonically increasing prefix (the mean saturates where mu -> 0)
            n = 1
            while n < len(gs) and gs[n] > gs[n - 1] + 1e-6:
                n += 1
            self._traj = (self.xp.asarray(gs[:n], dtype=FLOAT), self.xp.asarray(ps[:n], dtype=FLOAT))
        return self._traj

    # --- helpers --------------------------------------------------------------------------------
    def _all(self):
        return self.xp.arange(self.size)

    def _update_nu(self, idx):
        """nu of the devices ``idx`` (flat indices) from their programmed conductance.

        The "constant" model's nu depends only on the device (z_nu), not on G: computed once at
        construction, later calls are no-ops.
        """
        p, xp = self.preset, self.xp
        drift = p.drift                                     # gpu_model/device_models.py
        if not drift.nu_depends_on_g and getattr(self, "_nu_fixed", False):
            return
        z = self.z_nu[idx]
        nu = drift.nu(p, z, None if not drift.nu_depends_on_g else self.g_prog[idx], xp)
        self.nu[idx] = xp.maximum(nu, 0.0).astype(FLOAT)
        self.nu_changed()

    def nu_changed(self):
        """Drop the cached largest drift exponent (call after writing ``nu`` from outside)."""
        self._nu_max = None

    def nu_max(self) -> float:
        """Largest drift exponent of the array (cached until ``nu`` changes through this class)."""
        if self._nu_max is None:
            self._nu_max = float(self.nu.max())
        return self._nu_max

    def _programmed_at(self, t: float):
        """Keep the lower bound of ``t_prog`` (s) after devices were programmed at time ``t``."""
        if t < self._tp_floor:
            self._tp_floor = float(t)

    def t_prog_changed(self):
        """Recompute the lower bound of ``t_prog`` (call after writing ``t_prog`` from outside)."""
        self._tp_floor = float(self.t_prog.min()) if self.size else math.inf

    def undrifted(self, t: float) -> bool:
        """True when no device can have drifted at time ``t`` (s): t - t_prog <= t0 for all of them,
        so every drift factor is exactly 1 (max(ratio, 1) = 1, exp(-nu log 1) = 1).

        Decided from the lower bound of ``t_prog`` alone (no pass over the devices). The margin of
        1e-6 t0 covers the float32 rounding of the ratio (t - t_p)/t0 (< 2e-7 relative), so that the
        ratio computed by :meth:`drift_factor` is <= 1 whenever this says True.
        """
        return t - self._tp_floor <= self.preset.drift_t0 * (1.0 - 1e-6)

    # --- programming ----------------------------------------------------------------------------
    def reset(self, idx, t: float) -> None:
        """RESET devices ``idx`` (flat indices, or None for all) at time ``t``: G ~ N(reset), P = 1."""
        p, xp = self.preset, self.xp
        if idx is None:
            idx = self._all()
        n = int(idx.shape[0])
        if n == 0:
            return
        g = p.reset_mean + p.reset_std * self.rng.standard_normal(n, dtype=FLOAT)
        self.g_prog[idx] = xp.clip(g, p.g_min, p.g_max)
        self.t_prog[idx] = t
        self._programmed_at(t)
        self.hist[idx] = 1.0
        self.n_reset[idx] += 1
        self._update_nu(idx)
        if self.faults is not None:          # wear, onset and stuck devices (gpu_model/faults.py)
            self.faults.after_write(self, idx)

    def apply_set_pulses(self, idx, counts, t: float) -> int:
        """Apply ``counts[k]`` SET pulses to device ``idx[k]`` at time ``t``; returns pulses applied.

        ``idx`` must be unique flat indices; ``counts`` non-negative integers. The pulse acts on the
        drifted conductance at ``t``. Loop runs over the pulse index j (active devices: counts > j).
        """
        p, xp = self.preset, self.xp
        n = int(idx.shape[0])
        if n == 0:
            return 0
        counts = counts.astype("int64", copy=False)
        counts_host = self.be.asnumpy(counts)
        cmin, max_count = int(counts_host.min()), int(counts_host.max())
        if cmin < 0:
            raise ValueError(f"SET pulse counts must be >= 0, got {cmin}")
        total = int(counts_host.sum())
        if p.ideal:
            # ideal linear device: G += n * step exactly (clipped)
            g = self.conductance_at(t, idx)
            step = counts.astype(FLOAT) * p.ideal_step
            if self.faults is not None and self.faults.set_scale is not None:
                step *= self.faults.set_scale[idx]                           # weak devices
            g = xp.clip(g + step, p.g_min, p.g_max)
            self.g_prog[idx] = g
        else:
            if max_count > 1:
                # Sort (descending count) so that the devices still active at pulse j form a prefix
                # and each step works on contiguous slices. Sorting idx/counts before gathering the
                # state saves re-ordering four state arrays. Counts are small integers: a stable sort
                # on int16 keys is a radix sort in NumPy (O(n)); CuPy sorts with CUB radix sort.
                if self.be.name == "numpy" and max_count < 32767:
                    order = np.argsort((-counts_host).astype(np.int16), kind="stable")
                    counts_host = counts_host[order]
                else:
                    order = xp.argsort(-counts)
                    # the sorted counts on the host without a device-to-host copy of counts[order]
                    # (equal counts are interchangeable: only how many exceed each j is used below)
                    counts_host = -np.sort(-counts_host)
                idx, counts = idx[order], counts[order]
                # number of devices with count > j, for j = 0..max_count-1 (counts sorted descending)
                active_n = np.searchsorted(-counts_host, -np.arange(1, max_count + 1), side="right")
            else:
                active_n = np.array([n])
            g = self.conductance_at(t, idx)      # pulses act on the drifted conductance at t
            hist = self.hist[idx]
            mult = self.step_mult[idx] if p.step_d2d_std > 0 else None
            if self.faults is not None and self.faults.set_scale is not None:   # weak devices
                scale = self.faults.set_scale[idx]
                mult = scale if mult is None else mult * scale
            decay = math.exp(-1.0 / p.history_tau_pulses)
            fused = _set_step_kernel(xp) if self.be.name == "cupy" else None
            if fused is not None:   # the kernel's scalar arguments, once per call
                consts = tuple(np.float32(v) for v in (
                    decay, p.set_mu_slope, p.set_mu_offset, p.set_mu_hist,
                    p.set_sigma_slope, p.set_sigma_offset, p.set_sigma_hist, p.g_min, p.g_max))
            for j in range(max_count):
                m = int(active_n[j])
                gj, hj = g[:m], hist[:m]
                if fused is not None:
                    # the same step in one GPU kernel (_set_step_kernel), on the same normal draws
                    z = self.rng.standard_normal(m, dtype=FLOAT)
                    fused(z, mult[:m] if mult is not None else np.float32(1.0), *consts, gj, hj)
                    continue
                hj *= decay                                                  # P <- P e^{-1/tau}
                mu = p.set_mu_slope * gj + p.set_mu_offset + p.set_mu_hist * hj
                sigma = xp.maximum(p.set_sigma_slope * gj + p.set_sigma_offset + p.set_sigma_hist * hj, 0.0)
                dg = mu + sigma * self.rng.standard_normal(m, dtype=FLOAT)   # dG ~ N(mu, sigma)
                if mult is not None:
                    dg *= mult[:m]                                           # device-to-device multiplier (and weak devices)
                gj += dg
                xp.maximum(gj, p.g_min, out=gj)                             # clip (= np.clip,
                xp.minimum(gj, p.g_max, out=gj)                             # less overhead)
            self.g_prog[idx] = g
            self.hist[idx] = hist
        self.t_prog[idx] = t
        self._programmed_at(t)
        self.n_set[idx] += counts
        self._update_nu(idx)
        if self.faults is not None:          # wear, onset and stuck devices (gpu_model/faults.py)
            self.faults.after_write(self, idx)
        return total

    # --- drift and reads ------------------------------------------------------------------------
    def drift_factor(self, t: float, idx=None):
        """((t - t_p)/t0)^(-nu) for t - t_p > t0, else 1."""
        xp, p = self.xp, self.preset
        tp = self.t_prog if idx is None else self.t_prog[idx]
        nu = self.nu if idx is None else self.nu[idx]
        ratio = (t - tp).astype(FLOAT)          # float64 only for the subtraction of times
        ratio *= 1.0 / p.drift_t0
        xp.maximum(ratio, 1.0, out=ratio)
        xp.log(ratio, out=ratio)
        ratio *= -nu
        return xp.exp(ratio, out=ratio)

    def conductance_at(self, t: float, idx=None):
        """Noise-free conductance (µS) at time ``t`` including drift."""
        g = self.g_prog if idx is None else self.g_prog[idx]
        if self.preset.drift_free or self.undrifted(t):
            # undrifted: g * 1 = g exactly; a gather (integer or bool index array) is a fresh array
            return g if getattr(idx, "ndim", 0) >= 1 else g.copy()
        return g * self.drift_factor(t, idx)

    def read_sigma(self, g_now, t: float, idx=None):
        """Std (µS) of one read of devices whose drifted conductance is ``g_now``."""
        p = self.preset
        model = p.read_noise                                # gpu_model/device_models.py
        tp = gp = None
        if model.time_dependent:                            # the 1/f model reads the programming state
            tp = self.t_prog if idx is None else self.t_prog[idx]
            gp = self.g_prog if idx is None else self.g_prog[idx]
        return model.sigma(p, g_now, t, tp, gp, self.xp)

    def read(self, t: float, idx=None):
        """One noisy read (µS) at time ``t``: drift plus fresh read noise."""
        g = self.conductance_at(t, idx)
        s = self.read_sigma(g, t, idx)
        return g + s * self.rng.standard_normal(g.shape, dtype=FLOAT)

    # --- program-and-verify ---------------------------------------------------------------------
    def program_verify(self, idx, target, t: float, tolerance: float | None = None) -> ProgramStats:
        """Program devices ``idx`` to ``target`` µS by program-and-verify at time ``t``.

        Each iteration, devices outside tolerance get one programming attempt whose result is
        ``target + N(0, sigma_attempt)`` and one verify read (with read noise); a device is done
        when its verify read is within ``tolerance`` of the target. ``jap``: sigma_attempt is the
        SET-step spread at the target (sigma(G, P=0)), tolerance ``prog_residual_std``. ``joshi``:
        one attempt with the Joshi 2020 programming-noise polynomial (already a post-verify
        figure). ``none``: exact.
        """
        p, xp = self.preset, self.xp
        stats = ProgramStats()
        n = int(idx.shape[0])
        if n == 0:
            return stats
        target = xp.clip(target.astype(FLOAT), p.g_min, p.g_max)
        prog = p.programming                                # gpu_model/device_models.py
        if prog.exact:
            self.g_prog[idx] = target
            if p.ideal:
                stats.pulses = int(xp.ceil((target - p.g_min) / p.ideal_step).sum())
            else:
                stats.pulses = n
        elif not prog.verified:                            # one attempt of a post-verify spread (Joshi 2020)
            sd = prog.sigma(p, target, xp)
            self.g_prog[idx] = xp.clip(target + sd * self.rng.standard_normal(n, dtype=FLOAT), p.g_min, p.g_max)
            stats.pulses, stats.verify_reads = n, n
        elif self.blocked_verify:
            tol = p.prog_residual_std if tolerance is None else tolerance
            g, attempts, failed = self._verify_blocked(target, tol)
            stats.pulses = stats.verify_reads = attempts
            stats.failed = failed
            self.g_prog[idx] = g
        else:
            tol = p.prog_residual_std if tolerance is None else tolerance
            sd_attempt = xp.maximum(p.set_sigma_slope * target + p.set_sigma_offset, 0.0)
            pending = xp.arange(n)
            g = xp.zeros(n, dtype=FLOAT)
            for _ in range(p.prog_verify_max_pulses):
                m = int(pending.shape[0])
                if m == 0:
                    break
                tg = target[pending]
                gi = xp.clip(tg + sd_attempt[pending] * self.rng.standard_normal(m, dtype=FLOAT), p.g_min, p.g_max)
                g[pending] = gi
                verify = gi + (p.read_sigma_slope * gi + p.read_sigma_offset) * self.rng.standard_normal(m, dtype=FLOAT)
                stats.pulses += m
                stats.verify_reads += m
                pending = pending[xp.abs(verify - tg) > tol]
            stats.failed = int(pending.shape[0])
            self.g_prog[idx] = g
        self.t_prog[idx] = t
        self._programmed_at(t)
        # History term left by the SET pulses that reached the target: the mean SET trajectory from
        # RESET tells how many pulses k that took (k = first pulse whose mean G reaches the target;
        # all pulses of the trajectory when the target lies above its saturation), P = P_k.
        if p.ideal or not prog.leaves_history:
            self.hist[idx] = 0.0
        else:
            traj_g, traj_p = self._trajectory
            k = xp.minimum(xp.searchsorted(traj_g, target), traj_g.shape[0] - 1)
            self.hist[idx] = traj_p[k]
        self._update_nu(idx)
        if self.faults is not None:          # stuck devices keep their value: failed verifies
            self.faults.after_write(self, idx)
            off = self.xp.abs(self.g_prog[idx] - target) > (p.prog_residual_std if tolerance is None else tolerance)
            stats.failed += int((off & (self.faults.kind[idx] != 0)).sum())
        return stats

    def _verify_blocked(self, target, tol: float):
        """The JAP program-and-verify loop of :meth:`program_verify`, several attempts at a time.

        Per round, every pending device gets ``b`` attempts at once (a (b, m) block: attempt
        ``gi = clip(target + sd_attempt z1)``, verify read ``gi + sigma_read(gi) z2``); a device
        keeps its first attempt whose verify read is within ``tol`` (it would have stopped there),
        else it stays pending with its last attempt. Attempts are independent, so the result has
        the same distribution as the one-attempt loop, with ~max_pulses / b rounds instead of
        max_pulses, each ending in one device-to-host sync (the pending count): a GPU spends its
        time launching and waiting, not computing, in the one-attempt loop. ``b`` is capped so a
        block holds at most ``VERIFY_BLOCK_ELEMENTS`` attempts (whole-array programming goes a few
        attempts at a time). Returns (conductances, attempts made, devices that failed).
        """
        p, xp = self.preset, self.xp
        n = int(target.shape[0])
        sd_attempt = xp.maximum(p.set_sigma_slope * target + p.set_sigma_offset, 0.0)
        g = xp.zeros(n, dtype=FLOAT)
        pending = xp.arange(n)
        attempts, left = 0, p.prog_verify_max_pulses
        while left > 0:
            m = int(pending.shape[0])
            if m == 0:
                break
            b = max(1, min(left, VERIFY_BLOCK_ELEMENTS // m))
            tg, sd = target[pending], sd_attempt[pending]
            gi = xp.clip(tg + sd * self.rng.standard_normal((b, m), dtype=FLOAT), p.g_min, p.g_max)      # (b, m)
            verify = gi + (p.read_sigma_slope * gi + p.read_sigma_offset) * self.rng.standard_normal((b, m), dtype=FLOAT)
            ok = xp.abs(verify - tg) <= tol
            done = ok.any(axis=0)
            used = xp.where(done, xp.argmax(ok, axis=0), b - 1)          # first passing attempt, else the last
            g[pending] = gi[used, xp.arange(m)]
            # attempts made: used + 1 per device (done or not); one host sync for counts and pending
            attempts += int((used + 1).sum())
            pending = pending[~done]
            left -= b
        return g, attempts, int(pending.shape[0])
