"""Differential PCM synapses: W = beta * (G+ - G-), with pulse application and refresh.

Multi-device synapses (``devices_per_side`` = N > 1, after Boybat et al., Nat. Commun. 9, 2514
(2018)): each synapse has N devices on each side, W = beta * sum_k (G+_k - G-_k) with
beta = w_max / (N g_max), so one pulse moves the weight by 1/N of what it does on a single pair
(N x finer steps over the same weight range) at N x the devices. A per-synapse arbitration
counter picks the device that receives an update (all of its pulses), then advances by one
(round robin); refresh reads the weight, RESETs all 2N devices and writes |W| spread equally over
the N devices of its sign. N = 1 is the plain pair (same arithmetic and random draws as before).

A positive pulse count goes to G+ (weight up), a negative one to G- (weight down); training uses
SET pulses only. When a pulsed device passes ``refresh_threshold * g_max`` its pair is refreshed:
the weight is read, both devices RESET, and the weight re-programmed on one device by
program-and-verify (its pulses and verify reads are counted).

The synapse keeps a cache of the drifted conductances and read-noise variances so that crossbar
reads need not recompute drift for every mini-batch: pulsed and refreshed devices are updated at
once (sparse), the whole cache is recomputed when simulated time has advanced enough to move any
drift factor by more than ``drift_cache_rtol`` (see :meth:`sync`). With N > 1 a pulse changes one
of the 2N devices of a synapse, so the cache takes only that device's change (its term after the
pulse minus its term before, both at the current time) instead of re-summing all 2N devices; a
refreshed synapse is re-summed. Such a cache is a running sum (its float32 rounding depends on the
order of the updates), so it is checkpointed with the devices (:meth:`state_dict`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from .backend import Backend, rng_state, set_rng_state
from .devices import FLOAT, PCMArray
from .presets import PCMPreset, PresetError
from .pulses import PulseList, UpdateReport, VerifyReadout


@dataclass
class SynapseCounters:
    """Event counters of one synapse array (cumulative)."""

    set_pulses: int = 0          # training SET pulses applied
    refreshes: int = 0           # pairs refreshed
    refresh_resets: int = 0      # RESET pulses of refreshes
    refresh_prog_pulses: int = 0 # program-and-verify attempts of refreshes
    refresh_verify_reads: int = 0
    init_prog_pulses: int = 0    # program-and-verify attempts of initial programming
    init_verify_reads: int = 0
    update_verify_reads: int = 0 # verified updates: 2 reads per pulsed device, 1 per refreshed synapse
    clipped_pulses: int = 0      # reserved: pulses asked beyond what the devices can take
    excluded_devices: int = 0    # faults.exclude: devices found not responding and excluded (gpu_model/faults.py)
    skipped_pulses: int = 0      # faults.exclude: pulses not sent (every device of that side excluded)
    fault_check_reads: int = 0   # faults.exclude: check reads after refreshes and initial programming

    def as_dict(self):
        return dict(self.__dict__)


class DifferentialSynapses:
    """A ``(rows, cols)`` array of differential PCM pairs.

    beta: weight units per µS (W = beta*(G+ - G-)); ``w_max = beta * g_max * devices_per_side``.
    epsilon_uS: device granularity (µS per pulse); derived from the preset's mean single-pulse
    step after RESET unless given. ``epsilon_w = beta * epsilon_uS`` (weight units per pulse).
    devices_per_side: N devices per side of each synapse (module docstring); 1 = one pair.
    """

    def __init__(self, shape, preset: PCMPreset, backend: Backend, *, w_max: float,
                 epsilon_uS: float | None = None, refresh_threshold: float = 0.9,
                 refresh_tolerance_uS: float | None = None, drift_cache_rtol: float = 1e-3,
                 common_mode_uS: float = 0.0, devices_per_side: int = 1,
                 stream: int = 0, t: float = 0.0, verify_stream: int | None = None, faults=None):
        if not isinstance(devices_per_side, int) or isinstance(devices_per_side, bool) or devices_per_side < 1:
            raise PresetError(f"devices_per_side must be an integer >= 1, got {devices_per_side!r}")
        if w_max <= 0:
            raise PresetError(f"w_max must be > 0 weight units, got {w_max}")
        if not 0 < refresh_threshold <= 1:
            raise PresetError(f"refresh_threshold must be in (0, 1] (fraction of g_max), got {refresh_threshold}")
        if drift_cache_rtol < 0:
            raise PresetError(f"drift_cache_rtol must be >= 0, got {drift_cache_rtol}")
        self.shape = tuple(int(s) for s in shape)
        self.preset = preset
        self.be = backend
        self.xp = backend.xp
        self.rng = backend.child_rng(stream)
        # verified updates' reads draw from their own stream, so that the devices see the same
        # pulses and draws as without them (None: this array is never asked to verify)
        self.verify_rng = backend.child_rng(verify_stream) if verify_stream is not None else None
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
        self.refresh_tolerance_uS = refresh_tolerance_uS
        self.drift_cache_rtol = float(drift_cache_rtol)
        self.n_syn = int(math.prod(self.shape))
        dev_shape = self.shape if self.n_dev == 1 else (self.n_dev, *self.shape)   # device k of synapse s: k * n_syn + s
        self.gp = PCMArray(dev_shape, preset, backend, rng=self.rng, t=t)
        self.gm = PCMArray(dev_shape, preset, backend, rng=self.rng, t=t)
        self.arbiter = self.xp.zeros(self.n_syn, dtype="int32") if self.n_dev > 1 else None
        self.counters = SynapseCounters()
        # device faults (gpu_model/faults.py): None, or a FaultConfig placed on both arrays from the
        # tile's own fault stream (no other stream is touched); None runs exactly the fault-free code
        self.faults = None
        self.exclude = False
        if faults is not None and faults.enabled:
            from .faults import FAULT_READ_STREAM_OFFSET, place_faults
            if faults.exclude and common_mode_uS > 0:
                raise PresetError("faults.exclude needs synapse.common_mode_uS = 0 (the exclusion "
                                  "policy rewrites weights on single sides)")
            self.faults = faults
            self.exclude = bool(faults.exclude)
            place_faults(faults, preset, backend, stream, (self.gp, self.gm))
            self.fault_rng = backend.child_rng(FAULT_READ_STREAM_OFFSET + stream)
        self.t = float(t)
        self._cache_t = None
        self._w = None
        self._var = None

    # --- cache of drifted weights and read-noise variance ---------------------------------------
    def _drift_free(self) -> bool:
        p = self.preset
        return p.drift_free

    def _recompute(self, idx=None):
        """Recompute cached W and Var[W read] (weight units) for flat ``idx`` (None: all)."""
        xp, t, b = self.xp, self.t, self.beta
        didx = self._devices(idx)
        gp = self.gp.conductance_at(t, didx)
        gm = self.gm.conductance_at(t, didx)
        sp = self.gp.read_sigma(gp, t, didx)
        sm = self.gm.read_sigma(gm, t, didx)
        # W = b sum_k (G+_k - G-_k); independent read noise per device:
        # Var[b(G+ + n+ - G- - n-)] = b^2 sum_k (s+_k^2 + s-_k^2)
        w = self._sum_devices(b * (gp - gm))
        var = self._sum_devices((b * b) * (sp * sp + sm * sm))
        if idx is None:
            self._w = w.reshape(self.shape)
            self._var = var.reshape(self.shape)
            self._cache_t = t
        else:
            self._w.reshape(-1)[idx] = w
            self._var.reshape(-1)[idx] = var

    def _device_values(self, ip, im):
        """(G+, sigma+, G-, sigma-): drifted conductance and read-noise std (µS) of devices ``ip``
        of G+ and ``im`` of G- (flat device indices) at the current time."""
        t = self.t
        gp = self.gp.conductance_at(t, ip)
        gm = self.gm.conductance_at(t, im)
        return gp, self.gp.read_sigma(gp, t, ip), gm, self.gm.read_sigma(gm, t, im)

    def _device_terms(self, values):
        """W and Var[W read] terms (weight units, weight units^2) of the devices whose
        :meth:`_device_values` are ``values``, concatenated (G+ devices first)."""
        xp, b = self.xp, self.beta
        gp, sp, gm, sm = values
        w = xp.concatenate([gp, gm])
        w *= b
        w[gp.shape[0]:] *= -1.0                   # b G+ ; -b G-
        s = xp.concatenate([sp, sm])
        s *= s
        s *= b * b                                # b^2 s^2 (independent read noise per device)
        return w, s

    def _devices(self, idx):
        """Flat device indices of synapses ``idx`` (None: all), device-major: k * n_syn + s."""
        if self.n_dev == 1:
            return idx
        xp = self.xp
        s = xp.arange(self.n_syn) if idx is None else idx
        return (xp.arange(self.n_dev, dtype=s.dtype)[:, None] * self.n_syn + s[None, :]).reshape(-1)

    def _sum_devices(self, g):
        """Per-synapse sum over the N devices of a device-major array (N = 1: unchanged)."""
        return g if self.n_dev == 1 else g.reshape(self.n_dev, -1).sum(axis=0)

    def sync(self, force: bool = False):
        """Bring the cache up to the current time ``self.t``.

        A full recompute happens when the largest drift-factor change since the last one could
        exceed ``drift_cache_rtol``: (1 + dt/t0)^nu_max - 1 > rtol (worst case, a device just past
        t0). With rtol = 1e-3 the cached weights are off by at most 0.1 % (~0.02 µS at 20 µS, far
        below the read noise). Engineering choice; set rtol = 0 to recompute at every read.
        """
        if self._w is None or force:
            self._recompute()
            return
        if self._cache_t == self.t or self._drift_free() and not self.preset.read_noise.time_dependent:
            return
        dt = self.t - self._cache_t
        nu_max = max(self.gp.nu_max(), self.gm.nu_max())
        if nu_max == 0 and not self.preset.read_noise.time_dependent:
            return
        change = (1.0 + dt / self.preset.drift_t0) ** nu_max - 1.0
        if change > self.drift_cache_rtol or self.preset.read_noise.time_dependent and change > 0:
            if not self.preset.read_noise.time_dependent and self.gp.undrifted(self.t) and self.gm.undrifted(self.t):
                # no device past t0 yet: every drift factor is still exactly 1, so a recompute would
                # give back the cached values; only its time stamp moves (same schedule as recomputing)
                self._cache_t = self.t
            else:
                self._recompute()

    def advance(self, dt: float):
        """Advance this array's clock by ``dt`` seconds."""
        if dt < 0:
            raise ValueError(f"time cannot run backwards (dt={dt})")
        self.t += float(dt)

    def set_time(self, t: float):
        self.t = float(t)

    # --- weights --------------------------------------------------------------------------------
    def weights(self):
        """Noise-free weights (weight units) at the current time (drift included)."""
        self.sync()
        return self._w

    def read_variance(self):
        """Per-synapse variance (weight units^2) of one read at the current time."""
        self.sync()
        return self._var

    def read_synapses(self, idx, rng):
        """One noisy read of the synapses at flat indices ``idx`` (weight units): the drifted
        weight plus a draw of its read noise, N(0, Var[W read]) (the devices of a synapse are read
        together, as a crossbar row read with one input active). Draws from ``rng``; ``rng`` None:
        the exact drifted weights (a tile whose read noise is switched off)."""
        self.sync()
        xp = self.xp
        w = self._w.reshape(-1)[idx]
        if rng is None:
            return w
        v = self._var.reshape(-1)[idx]
        z = rng.standard_normal(w.shape[0], dtype=FLOAT)
        z *= xp.sqrt(v)
        w += z                                    # W + sqrt(Var) z, z ~ N(0, 1)
        return w

    def conductances(self):
        """(G+, G-): every device's drifted conductance (µS) at the current time, each of shape
        (devices_per_side, rows, cols)."""
        shape = (self.n_dev, *self.shape)
        return (self.gp.conductance_at(self.t).reshape(shape), self.gm.conductance_at(self.t).reshape(shape))

    def device_counts(self):
        """(SET pulses, RESET pulses) per device since fabrication, each (2, devices_per_side, rows,
        cols): side 0 is G+, side 1 G-."""
        xp, shape = self.xp, (self.n_dev, *self.shape)
        return (xp.stack([self.gp.n_set.reshape(shape), self.gm.n_set.reshape(shape)]),
                xp.stack([self.gp.n_reset.reshape(shape), self.gm.n_reset.reshape(shape)]))

    def read_weights(self, step: int = 0):
        """One explicit noisy read of every synapse (weight units) — for tests and evaluation
        (``step``: the key of the fused engine's draws; this engine draws from its stream)."""
        t = self.t
        return (self.beta * self._sum_devices(self.gp.read(t) - self.gm.read(t))).reshape(self.shape)

    def program(self, w_target, tolerance_uS: float | None = None):
        """Initial programming: RESET both devices, write |w| on G+ (w > 0) or G- by program-and-verify."""
        xp = self.xp
        w_target = xp.asarray(w_target, dtype=FLOAT).reshape(-1)
        if w_target.shape[0] != self.n_syn:
            raise ValueError(f"target has {w_target.shape[0]} weights, array holds {self.n_syn}")
        allidx = xp.arange(self.n_syn)
        alldev = xp.arange(self.gp.size)
        if self.exclude:                  # RESET, write, check; once more where a device was excluded
            st = self._rewrite(allidx, w_target, tolerance_uS)[:2]
            self.counters.init_prog_pulses += st[0]
            self.counters.init_verify_reads += st[1]
            self._recompute()
            return
        self.gp.reset(alldev, self.t)
        self.gm.reset(alldev, self.t)
        st = self._write(allidx, w_target, tolerance_uS)
        self.counters.init_prog_pulses += st[0]
        self.counters.init_verify_reads += st[1]
        self._recompute()

    def _write(self, idx, w, tolerance_uS):
        """Write weights ``w`` to freshly RESET pairs ``idx`` (one device each).

        The written device's target is |w|/beta plus the conductance of its RESET partner, so that
        beta*(G+ - G-) (not just the written device) lands on w; capped at the refresh threshold.
        Returns (pulses, reads, capped): ``capped`` (bool per synapse of ``idx``) marks the synapses
        whose target was cut by that cap (a device of theirs would have had to pass it): their
        |w| was beyond what the pair can hold, and the written weight falls short of it.
        """
        xp = self.xp
        cap = self.preset.g_max * self.refresh_threshold
        if self.common_mode_uS > 0:
            return self._write_common_mode(idx, w, tolerance_uS, cap)
        pos = w > 0
        neg = w < 0
        pulses = reads = 0
        n = self.n_dev
        capped = xp.zeros(idx.shape[0], dtype=bool)
        for arr, other, sel in ((self.gp, self.gm, pos), (self.gm, self.gp, neg)):
            ii = idx[sel]
            if ii.shape[0]:
                share = xp.abs(w[sel]) / (self.beta * n)   # N > 1: |w| spread equally over the N devices
                if n > 1:
                    ii = self._devices(ii)
                    share = xp.tile(share, n)
                g_want = share + other.g_prog[ii]
                # a synapse is capped when any of its N devices is (device k of synapse s: k * m + s)
                capped[sel] = (g_want > cap).reshape(n, -1).any(axis=0) if n > 1 else g_want > cap
                st = arr.program_verify(ii, xp.minimum(g_want, cap), self.t, tolerance_uS)
                pulses += st.pulses
                reads += st.verify_reads
        return pulses, reads, capped

    def _write_common_mode(self, idx, w, tolerance_uS, cap):
        """Program both devices of each pair: G+ = c + max(w, 0)/beta, G- = c + max(-w, 0)/beta.

        With a common-mode level c > 0 neither device is left at RESET (history term P = 1), so the
        first training pulses after a write have the small spread of a device already on its SET
        trajectory instead of the large one right after RESET. Costs a second program-and-verify.
        """
        xp = self.xp
        c = self.common_mode_uS
        n = self.n_dev
        wpos = xp.maximum(w, 0) / (self.beta * n)   # per device (N > 1: spread equally)
        wneg = xp.maximum(-w, 0) / (self.beta * n)
        capped = c + xp.maximum(wpos, wneg) > cap    # the same share on each of the N devices
        if n > 1:
            idx, wpos, wneg = self._devices(idx), xp.tile(wpos, n), xp.tile(wneg, n)
        pulses = reads = 0
        for arr, g in ((self.gp, wpos), (self.gm, wneg)):
            st = arr.program_verify(idx, xp.minimum(c + g, cap), self.t, tolerance_uS)
            pulses += st.pulses
            reads += st.verify_reads
        return pulses, reads, capped

    # --- training updates -----------------------------------------------------------------------
    def apply_pulses(self, pulses) -> UpdateReport:
        """Apply a signed integer pulse count per synapse; refresh pairs that passed the threshold.

        Cost scales with the number of non-zero counts (after one scan of the dense array for
        them; :meth:`apply_pulse_list` skips that scan). Returns the UpdateReport of this call.
        """
        xp = self.xp
        if tuple(pulses.shape) != self.shape:
            raise ValueError(f"pulse array has shape {tuple(pulses.shape)}, synapses {self.shape}")
        flat = pulses.reshape(-1)
        nz = xp.flatnonzero(flat != 0)   # via a bool mask: ~5x faster than on the integers (NumPy)
        return self.apply_pulse_list(nz, flat[nz])

    def apply(self, pulses: PulseList, step: int = 0, verify: bool = False,
              verify_read_noise: bool = True) -> UpdateReport:
        """Stage 2 of a tile update: the pulse list on the devices (the reference engine).

        ``step`` (the tile's update counter) keys the fused engine's draws; this engine draws from
        its generator streams in the order of ``pulses.idx`` and ignores it. ``verify``: read what
        the pulses did (:meth:`apply_pulse_list`), from :attr:`verify_rng` (``verify_read_noise``
        False: exact reads).
        """
        if verify and self.verify_rng is None:
            raise ValueError("this synapse array was built without a verify stream (verify_stream=None)")
        return self.apply_pulse_list(pulses.idx, pulses.counts,
                                     verify=(self.verify_rng if verify_read_noise else None,) if verify else None)

    def apply_pulse_list(self, idx, counts, verify=None) -> UpdateReport:
        """Sparse form of :meth:`apply_pulses`: signed pulse ``counts[k]`` for flat synapse ``idx[k]``.

        ``idx``: unique flat indices in ascending order (as ``flatnonzero`` gives them); the order
        fixes the order of the devices' random draws. Zero counts are allowed (no pulse). Returns
        the :class:`~gpu_model.pulses.UpdateReport` of this call.

        ``verify`` (a verified update, sim/nn/stores.py): None, or ``(rng,)`` / ``(None,)`` to
        measure what the pulses did: the pulsed device is read before and after its pulses (one
        device, so the read noise is that device's, not the sum over the 2N devices of the
        synapse); a synapse that was refreshed is read once more after its refresh, and the
        refresh's own read of W before it counts as that step's "before". The report's
        :class:`~gpu_model.pulses.VerifyReadout` holds the synapses that received pulses
        (ascending), their signed counts, their measured weight change (weight units) and
        ``capped`` (True where the synapse was refreshed and its refresh write hit the cap: the
        weight is at the edge of what the pair can hold, :meth:`_write`). ``rng`` None: exact reads.
        The verify reads draw from their own ``rng``, so the devices see the same pulses and draws
        as without ``verify``.
        """
        xp = self.xp
        if idx.shape[0] == 0:
            return UpdateReport()
        c = counts
        if c.dtype.kind == "f":
            if not bool(xp.all(c == xp.rint(c))):
                raise ValueError("pulse counts must be integers (got non-integer floats)")
            c = c.astype("int64")
        elif c.dtype.kind not in "iu":
            raise TypeError(f"pulse counts must be an integer array, got dtype {c.dtype}")
        keep = c != 0
        if not bool(keep.all()):
            idx, c = idx[keep], c[keep]
            if idx.shape[0] == 0:
                return UpdateReport()
        self.sync()
        skipped = 0
        if self.exclude and self.counters.excluded_devices:   # any device excluded so far
            idx, c, skipped = self._route_excluded(idx, c)   # faults.exclude: skip excluded devices
            if idx.shape[0] == 0:
                self.counters.skipped_pulses += skipped
                return UpdateReport(skipped_pulses=skipped)
        dev = idx
        if self.n_dev > 1:                 # the arbiter picks the device of each synapse, then advances
            sel = self.arbiter[idx]
            dev = sel.astype(idx.dtype) * self.n_syn + idx
            self.arbiter[idx] = (sel + 1) % self.n_dev
        pos = c > 0
        ip, cp = dev[pos], c[pos]
        neg = ~pos
        im, cm = dev[neg], -c[neg]
        incremental = self.n_dev > 1
        if verify or incremental:
            before = self._device_values(ip, im)  # the pulsed devices before their pulses
        if verify:
            rng = verify[0]
            gp, sp, gm, sm = before
            read_p, read_m = self._read(gp, sp, rng), self._read(gm, sm, rng)
            if self.exclude:              # a pulsed device read above cap + tol: the last refresh
                flagged = self._flag_unresetted(ip, im, read_p, read_m)   # could not RESET it
        if incremental:
            w0, v0 = self._device_terms(before)
        n = self.gp.apply_set_pulses(ip, cp, self.t) + self.gm.apply_set_pulses(im, cm, self.t)
        self.counters.set_pulses += n
        if verify or incremental:
            after = self._device_values(ip, im)
        if incremental:
            # N > 1: W += b (G_new - G_old) of the one pulsed device (minus on G-), Var likewise;
            # the other 2N - 1 devices keep their cached terms. Both terms of the pulsed device are
            # taken at the current time, so what the cache held of its old term (drifted to the
            # cache time, within drift_cache_rtol of now) stays in the sum until the next full
            # recompute: the same drift_cache_rtol bound as for every other cached device.
            w1, v1 = self._device_terms(after)
            w1 -= w0
            v1 -= v0
            sidx = xp.concatenate([idx[pos], idx[neg]])     # the synapses of ip, then of im
            wf, vf = self._w.reshape(-1), self._var.reshape(-1)
            wf[sidx] += w1
            v1 += vf[sidx]
            vf[sidx] = xp.maximum(v1, 0.0)    # a variance (rounding of the difference could dip below 0)
        else:
            self._recompute(idx)              # N = 1: the pair's two devices (a refresh re-sums its own)
        if verify:
            # a G+ pulse raises W by b dG+, a G- pulse lowers it by b dG- (read before any refresh)
            b = self.beta
            gp, sp, gm, sm = after
            measured = xp.empty(idx.shape[0], dtype=FLOAT)
            measured[pos] = b * (self._read(gp, sp, rng) - read_p)
            measured[neg] = -b * (self._read(gm, sm, rng) - read_m)
            reads = 2 * int(idx.shape[0])
        if self.faults is None:
            refreshed = self._refresh_passed(ip, im)
        else:
            n_excl = self.counters.excluded_devices
            refreshed = self._refresh_passed(ip, im, flagged if verify and self.exclude else None)
            n_excl = self.counters.excluded_devices - n_excl
        n_ref = 0 if refreshed is None else int(refreshed[0].shape[0])
        if self.faults is not None:
            self.counters.skipped_pulses += skipped
            if not verify:
                return UpdateReport(set_pulses=n, refreshes=n_ref, skipped_pulses=skipped, excluded=n_excl)
        if not verify:
            return UpdateReport(set_pulses=n, refreshes=n_ref)
        capped = xp.zeros(idx.shape[0], dtype=bool)
        was_refreshed = xp.zeros(idx.shape[0], dtype=bool)
        if n_ref:
            ref_idx, w_read, ref_capped = refreshed          # refreshed synapses, W read by the refresh
            at = xp.searchsorted(idx, ref_idx)           # all of them were pulsed now (idx ascending)
            measured[at] += self.read_synapses(ref_idx, rng) - w_read   # what re-programming did to W
            capped[at] = ref_capped
            was_refreshed[at] = True
            reads += n_ref
        self.counters.update_verify_reads += reads
        if self.faults is not None:
            return UpdateReport(set_pulses=n, refreshes=n_ref, skipped_pulses=skipped, excluded=n_excl,
                                verify=VerifyReadout(idx=idx, counts=c, measured=measured, capped=capped,
                                                     refreshed=was_refreshed))
        return UpdateReport(set_pulses=n, refreshes=n_ref,
                            verify=VerifyReadout(idx=idx, counts=c, measured=measured, capped=capped,
                                                 refreshed=was_refreshed))

    def _refresh_passed(self, ip, im, extra=None):
        """Refresh the synapses whose pulsed devices (``ip`` of G+, ``im`` of G-) passed the
        threshold; the check looks only at the touched devices. Returns None (none refreshed) or
        what :meth:`_refresh` returns. Exclusion policy: excluded devices trigger nothing, and the
        synapses ``extra`` (whose devices were just excluded) are refreshed as well."""
        xp = self.xp
        thr = self.refresh_threshold * self.preset.g_max
        hp, hm = self.gp.g_prog[ip] >= thr, self.gm.g_prog[im] >= thr
        if self.exclude:
            hp &= ~self.gp.faults.excluded[ip]
            hm &= ~self.gm.faults.excluded[im]
        hit = xp.concatenate([ip[hp], im[hm]])
        if extra is not None and extra.shape[0]:
            hit = xp.concatenate([hit % self.n_syn if self.n_dev > 1 else hit, extra])
            return self._refresh(xp.unique(hit))
        if not hit.shape[0]:
            return None
        hit = xp.unique(hit % self.n_syn if self.n_dev > 1 else hit)
        return self._refresh(hit)             # re-sums the refreshed synapses' cache entries

    @staticmethod
    def _read(g, sigma, rng):
        """One read (µS) of devices whose drifted conductance is ``g`` and read-noise std ``sigma``
        (:meth:`_device_values`): g + sigma z, z ~ N(0, 1) drawn from ``rng`` as
        :meth:`PCMArray.read` draws it; rng None: the exact conductances ``g``."""
        return g if rng is None else g + sigma * rng.standard_normal(g.shape, dtype=FLOAT)

    def refresh(self, idx) -> int:
        """Refresh pairs ``idx``: read W, RESET both devices, re-program W on one device.
        Returns the number refreshed."""
        return int(self._refresh(idx)[0].shape[0])

    def _refresh(self, idx):
        """:meth:`refresh`; returns (idx, W read before the refresh, capped per synapse of idx)."""
        t = self.t
        didx = self._devices(idx)
        w = self.beta * self._sum_devices(self.gp.read(t, didx) - self.gm.read(t, didx))
        n = int(idx.shape[0])
        if self.exclude:                  # RESET and write the working devices, check, once more
            pulses, reads, capped, resets = self._rewrite(idx, w, self.refresh_tolerance_uS)
            self.counters.refresh_resets += resets - 2 * self.n_dev * n
        else:
            self.gp.reset(didx, t)
            self.gm.reset(didx, t)
            pulses, reads, capped = self._write(idx, w, self.refresh_tolerance_uS)
        self.counters.refreshes += n
        self.counters.refresh_resets += 2 * self.n_dev * n
        self.counters.refresh_prog_pulses += pulses
        self.counters.refresh_verify_reads += reads + n
        if self._w is not None:
            self._recompute(idx)
        return idx, w, capped

    # --- device faults: the exclusion policy (gpu_model/faults.py) ------------------------------
    def _route_excluded(self, idx, c):
        """Pulse targets around excluded devices: the arbiter's device of each synapse, or the next
        working device of that side in round-robin order; a synapse whose side has no working device
        gets no pulses (counted). Returns (idx, counts, skipped pulses) of what is sent."""
        xp, n = self.xp, self.n_dev
        pos = c > 0
        exp_, exm = self.gp.faults.excluded, self.gm.faults.excluded
        if n == 1:
            keep = ~xp.where(pos, exp_[idx], exm[idx])
        else:
            sel = self.arbiter[idx]
            k = (sel[:, None] + xp.arange(n, dtype=sel.dtype)[None, :]) % n      # candidates, in order
            flat = k.astype(idx.dtype) * self.n_syn + idx[:, None]
            good = ~xp.where(pos[:, None], exp_[flat], exm[flat])
            keep = good.any(axis=1)
            first = xp.argmax(good, axis=1)
            self.arbiter[idx] = xp.take_along_axis(k, first[:, None], axis=1)[:, 0]   # apply advances it
        skipped = int(xp.abs(c[~keep]).sum())
        return idx[keep], c[keep], skipped

    def _flag_unresetted(self, ip, im, read_p, read_m):
        """Verified update, exclusion policy: a pulsed device read (before its pulses) above the
        refresh cap + ``detect_tol_uS`` is one the last refresh could not RESET: excluded. Returns
        the synapses of the newly excluded devices (refreshed by this update)."""
        xp = self.xp
        lim = self.refresh_threshold * self.preset.g_max + self.faults.detect_tol_uS
        new = []
        for arr, d, r in ((self.gp, ip, read_p), (self.gm, im, read_m)):
            bad = d[(r > lim) & ~arr.faults.excluded[d]]
            if bad.shape[0]:
                arr.faults.excluded[bad] = True
                self.counters.excluded_devices += int(bad.shape[0])
                new.append(bad % self.n_syn if self.n_dev > 1 else bad)
        return xp.unique(xp.concatenate(new)) if new else None

    def _rewrite(self, idx, w, tolerance_uS):
        """Exclusion policy: RESET the working devices of synapses ``idx``, write ``w`` around the
        excluded ones (:meth:`_write_excluding`), check-read every working device; where that
        excluded a device, once more. Returns (pulses, reads, capped, RESETs sent)."""
        xp = self.xp
        pulses = reads = resets = 0
        capped = xp.zeros(idx.shape[0], dtype=bool)
        pos = xp.arange(idx.shape[0])
        for attempt in range(2):
            didx = self._devices(idx)
            for arr in (self.gp, self.gm):
                d = didx[~arr.faults.excluded[didx]]
                arr.reset(d, self.t)
                resets += int(d.shape[0])
            p_, r_, cap_, tp, tm = self._write_excluding(idx, w, tolerance_uS)
            pulses, reads = pulses + p_, reads + r_
            capped[pos] = cap_
            new = self._check_devices(idx, tp, tm)
            if attempt == 1 or not bool(new.any()):
                break
            idx, w, pos = idx[new], w[new], pos[new]
        return pulses, reads, capped, resets

    def _write_excluding(self, idx, w, tolerance_uS):
        """:meth:`_write` for the exclusion policy: the weight ``w`` of each synapse of ``idx`` is
        written on the working devices of one side, around what the digital unit believes the other
        devices hold (excluded devices: their conductance, as its check read found it; working ones
        just RESET: the RESET level of a working device, the preset's mean for a stuck one it has not
        found yet). The difference D = w / beta - (sum G+ - sum G-) is spread equally over the working
        devices of the side it needs (each capped at the refresh threshold). Returns (pulses, reads,
        capped, G+ targets, G- targets): targets per device (device-major), NaN for excluded ones."""
        xp, n, m = self.xp, self.n_dev, int(idx.shape[0])
        cap = self.preset.g_max * self.refresh_threshold
        didx = self._devices(idx)
        okp, okm = ~self.gp.faults.excluded[didx], ~self.gm.faults.excluded[didx]
        belief = []
        for arr, ok in ((self.gp, okp), (self.gm, okm)):
            g = arr.g_prog[didx]
            belief.append(xp.where(ok & (arr.faults.kind[didx] != 0), self.preset.reset_mean, g).reshape(n, m))
        bp, bm = belief
        okp, okm = okp.reshape(n, m), okm.reshape(n, m)
        d = w / self.beta - (bp.sum(axis=0) - bm.sum(axis=0))           # µS still to add, signed
        np_, nm_ = okp.sum(axis=0), okm.sum(axis=0)
        up = d > 0
        share_p = xp.where(up & (np_ > 0), d / xp.maximum(np_, 1), 0.0).astype(FLOAT)
        share_m = xp.where(~up & (nm_ > 0), -d / xp.maximum(nm_, 1), 0.0).astype(FLOAT)
        capped = (up & (np_ == 0)) | ((d < 0) & (nm_ == 0))              # no working device on that side
        pulses = reads = 0
        targets = []
        for arr, b, ok, share in ((self.gp, bp, okp, share_p), (self.gm, bm, okm, share_m)):
            tgt = b + share[None, :]
            wr = ok & (share > 0)[None, :]
            capped |= (wr & (tgt > cap)).any(axis=0)
            tgt = xp.minimum(tgt, cap)
            sel = wr.reshape(-1)
            st = arr.program_verify(didx[sel], tgt.reshape(-1)[sel], self.t, tolerance_uS)
            pulses += st.pulses
            reads += st.verify_reads
            targets.append(xp.where(ok, tgt, xp.nan).reshape(-1))
        return pulses, reads, capped, targets[0], targets[1]

    def _check_devices(self, idx, tp, tm):
        """One check read of every working device of synapses ``idx`` (from the fault stream):
        a device read further than ``detect_tol_uS`` from its target ``tp`` / ``tm`` does not
        respond and is excluded. Returns a bool per synapse of ``idx``: a device newly excluded."""
        xp, t = self.xp, self.t
        didx = self._devices(idx)
        new = xp.zeros(idx.shape[0], dtype=bool)
        for arr, tgt in ((self.gp, tp), (self.gm, tm)):
            ok = ~xp.isnan(tgt)
            d = didx[ok]
            g = arr.conductance_at(t, d)
            r = self._read(g, arr.read_sigma(g, t, d), self.fault_rng)
            self.counters.fault_check_reads += int(d.shape[0])
            bad = xp.abs(r - tgt[ok]) > self.faults.detect_tol_uS
            if bool(bad.any()):
                arr.faults.excluded[d[bad]] = True
                self.counters.excluded_devices += int(bad.sum())
                hit = xp.zeros(didx.shape[0], dtype=bool)
                hit[xp.flatnonzero(ok)[bad]] = True
                new |= hit.reshape(self.n_dev, -1).any(axis=0) if self.n_dev > 1 else hit
        return new

    def fault_counts(self) -> dict:
        """Device faults of this array now: stuck (not responding), worn out by endurance, failed by
        random onset, excluded by the policy (0 everywhere without faults)."""
        if self.faults is None:
            return {"stuck": 0, "worn_out": 0, "onset": 0, "excluded": 0}
        fp, fm = self.gp.faults, self.gm.faults
        return {"stuck": fp.n_stuck + fm.n_stuck, "worn_out": fp.n_worn + fm.n_worn,
                "onset": fp.n_onset + fm.n_onset,
                "excluded": int(fp.excluded.sum()) + int(fm.excluded.sum())}

    def fault_map(self):
        """(kind, excluded) per device, host arrays of shape (2, devices_per_side, rows, cols) (side 0
        is G+): kind 0 working, 1 stuck low, 2 stuck high (gpu_model.faults); None without faults."""
        if self.faults is None:
            return None
        import numpy as np
        be, shape = self.be, (self.n_dev, *self.shape)
        kind = np.stack([be.asnumpy(a.faults.kind).reshape(shape) for a in (self.gp, self.gm)])
        excl = np.stack([be.asnumpy(a.faults.excluded).reshape(shape) for a in (self.gp, self.gm)])
        return kind, excl

    # --- state for checkpoints ------------------------------------------------------------------
    def state_dict(self) -> dict:
        be = self.be
        out = {"t": self.t, "counters": self.counters.as_dict(), "rng": rng_state(self.rng)}
        if self.verify_rng is not None:
            out["verify_rng"] = rng_state(self.verify_rng)
        for name, arr in (("gp", self.gp), ("gm", self.gm)):
            for f in ("g_prog", "t_prog", "hist", "z_nu", "step_mult", "nu", "n_set", "n_reset"):
                out[f"{name}.{f}"] = be.asnumpy(getattr(arr, f))
        if self.arbiter is not None:
            out["arbiter"] = be.asnumpy(self.arbiter)
        if self.faults is not None:                  # gpu_model/faults.py: placement, wear, exclusions
            for name, arr in (("gp", self.gp), ("gm", self.gm)):
                out.update({f"{name}.faults.{k}": v for k, v in arr.faults.state_dict(be).items()})
            out["fault_rng"] = rng_state(self.fault_rng)
        if self.n_dev > 1 and self._w is not None:   # the running-sum cache (module docstring)
            out["cache_w"], out["cache_var"] = be.asnumpy(self._w), be.asnumpy(self._var)
            out["cache_t"] = self._cache_t
        return out

    def load_state_dict(self, st: dict):
        xp = self.xp
        self.t = float(st["t"])
        self.counters = SynapseCounters(**st["counters"])
        if "rng" in st:
            set_rng_state(self.rng, st["rng"])
        if self.verify_rng is not None and "verify_rng" in st:
            set_rng_state(self.verify_rng, st["verify_rng"])
        for name, arr in (("gp", self.gp), ("gm", self.gm)):
            for f in ("g_prog", "t_prog", "hist", "z_nu", "step_mult", "nu", "n_set", "n_reset"):
                getattr(arr, f)[...] = xp.asarray(st[f"{name}.{f}"])
            arr.nu_changed()
            arr.t_prog_changed()
        if self.arbiter is not None:
            self.arbiter[...] = xp.asarray(st["arbiter"])
        if self.faults is not None:
            for name, arr in (("gp", self.gp), ("gm", self.gm)):
                arr.faults.load_state_dict(st, f"{name}.faults.")
            if st.get("fault_rng") is not None:
                set_rng_state(self.fault_rng, st["fault_rng"])
        if self.n_dev > 1 and "cache_w" in st:   # resume with the cache the run had (bit-exact)
            self._w = xp.asarray(st["cache_w"], dtype=FLOAT).reshape(self.shape).copy()
            self._var = xp.asarray(st["cache_var"], dtype=FLOAT).reshape(self.shape).copy()
            self._cache_t = st["cache_t"]
        else:
            self._recompute()
