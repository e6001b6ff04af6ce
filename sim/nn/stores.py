"""Weight stores: one interface for floating-point and crossbar weights.

A layer needs three things from its weight matrix W (out x in): ``forward(x) = x W^T``,
``backward(d) = d W`` and ``apply_update(delta_w)``. :class:`FP32Weights` does them in digital
floating point (the software baseline); :class:`AnalogWeights` does the MVMs on PCM crossbar tiles
and routes the update through the digital unit: delta_w (weight units) -> increments in units of
epsilon -> chi accumulator -> pulse counts -> SET pulses on the devices. Dense, convolution
(im2col) and recurrent layers use the same store: they only call these three methods on 2-D batches.
"""
from __future__ import annotations

import numpy as np

from gpu_model.backend import Backend, rng_state, set_rng_state
from gpu_model.devices import FLOAT
from gpu_model.presets import PCMPreset, TilePreset
from gpu_model.tile import AnalogMatrix
from rtl.dpu import make_dpu
from rtl.spec import DPUSpec


class FP32Weights:
    kind = "fp32"

    def __init__(self, w0, backend: Backend):
        self.xp = backend.xp
        self.w = self.xp.asarray(w0, dtype=FLOAT).copy()

    @property
    def shape(self):
        return self.w.shape

    def forward(self, x):
        return x @ self.w.T

    def backward(self, d):
        return d @ self.w

    def apply_update(self, delta_w, rand_rng=None, cols=None):
        if cols is None:
            self.w += delta_w
        else:
            self.w[:, cols] += delta_w
        return {"set_pulses": 0, "refreshes": 0}

    def weights(self):
        return self.w

    def state_dict(self, be):
        return {"w": be.asnumpy(self.w)}

    def load_state_dict(self, st):
        self.w[...] = self.xp.asarray(st["w"])


VERIFY_STREAM_OFFSET = 30_000   # backend child stream of a store's verify reads: 30,000 + its stream


class AnalogWeights:
    """W on PCM crossbar tiles, updated through chi and the DPU (golden or RTL).

    ``verified_update`` (``synapse.verified_update``): the digital unit reads every device it
    pulses before and after its pulses (two noisy reads of that one device; a refreshed synapse is
    read once more after its refresh; counted as ``update_verify_reads``,
    :meth:`DifferentialSynapses.apply_pulse_list`) and returns the difference between the change
    it asked for (signed pulse count x epsilon) and the change it measured to chi, as part of the
    next mini-batch's increment. A PCM pulse that overshoots (or undershoots) its granule, or a
    refresh that re-programmed the pair imprecisely, is then corrected by later pulses instead of
    staying in the weight. ``verify_gain`` < 1 returns only that share of each error (damped
    corrections: fewer corrective pulses, the rest of the error stays in the weight). The
    correction waits in ``feedback`` (weight units, one float per synapse) until the next update
    of that synapse's column passes through the DPU, so the DPU itself (golden or RTL) and chi's
    fixed-point format are unchanged.

    ``verify_anti_windup``: a synapse whose refresh had to cut its weight to what the pair can hold
    (the write hit the refresh threshold, :meth:`DifferentialSynapses._write`) returns no
    correction for that update. Without it the error at such a synapse is the part beyond the
    range, which no pulse can deliver: it comes back every update, grows with the gradient that
    keeps pushing the weight outwards (integral wind-up), and each time sends more pulses into a
    device at the threshold, so a refresh; a few % of the synapses, pinned at the range edge, then
    take most of the pulses and refreshes of a run (docs/analog.md). Blind updates lose that part
    in the same way, once.
    """

    kind = "analog"

    def __init__(self, w0, backend: Backend, preset: PCMPreset, tile: TilePreset, spec: DPUSpec,
                 dpu_kind: str, *, w_max: float, epsilon_uS: float, refresh_threshold: float,
                 refresh_tolerance_uS: float | None, read_noise: bool, stream: int,
                 common_mode_uS: float = 0.0, devices_per_side: int = 1, verified_update: bool = False,
                 verify_gain: float = 1.0, verify_anti_windup: bool = False):
        self.be, self.xp = backend, backend.xp
        out_f, in_f = w0.shape
        self.matrix = AnalogMatrix(out_f, in_f, preset, tile, backend, w_max=w_max,
                                   epsilon_uS=epsilon_uS, refresh_threshold=refresh_threshold,
                                   refresh_tolerance_uS=refresh_tolerance_uS, read_noise=read_noise,
                                   common_mode_uS=common_mode_uS, devices_per_side=devices_per_side,
                                   stream=stream)
        self.syn = self.matrix.syn
        self.spec = spec
        self.dpu = make_dpu(dpu_kind, spec, self.xp)
        self.chi = self.xp.zeros((out_f, in_f), dtype="int32")
        self.syn.program(self.xp.asarray(w0, dtype=FLOAT))
        self.inc_saturated = 0   # updates clipped to the increment range (rtl.spec.encode_update)
        self.verified = bool(verified_update)
        if not 0 < verify_gain <= 1:
            raise ValueError(f"verify_gain must be in (0, 1], got {verify_gain}")
        self.verify_gain = float(verify_gain)
        self.verify_anti_windup = bool(verify_anti_windup)
        self.feedback = self.xp.zeros((out_f, in_f), dtype=FLOAT) if self.verified else None
        self.verify_rng = backend.child_rng(VERIFY_STREAM_OFFSET + stream) if self.verified else None
        self._verify_noise = self.verify_rng if self.matrix.read_noise else None   # reads as the tile's

    @property
    def shape(self):
        return self.chi.shape

    @property
    def epsilon_w(self) -> float:
        """Weight units per pulse (beta * epsilon_uS)."""
        return self.syn.epsilon_w

    def forward(self, x):
        return self.matrix.forward(x)

    def backward(self, d):
        return self.matrix.backward(d)

    def apply_update(self, delta_w, rand_rng, cols=None):
        """delta_w (weight units) -> chi (units of epsilon) -> pulses -> devices.

        ``cols``: optional column subset that ``delta_w`` covers (the other columns have a zero
        update, which leaves chi unchanged and sends no pulse).
        """
        xp, spec = self.xp, self.spec
        if self.verified:
            # the corrections measured at earlier updates join this increment (and leave feedback)
            fb = self.feedback if cols is None else self.feedback[:, cols]
            delta_w = delta_w + fb
            if cols is None:
                self.feedback[...] = 0.0
            else:
                self.feedback[:, cols] = 0.0
        inc, sat = spec.encode_update(delta_w, xp, scale=1.0 / self.epsilon_w)
        rand = None
        if spec.rounding == "stochastic" and spec.round_bits > 0:
            if spec.round_bits <= 8 and self.be.name == "numpy":
                rand = uniform_bits_uint8(rand_rng, spec.round_bits, inc.shape)
            else:
                rand = rand_rng.integers(0, 1 << spec.round_bits, size=inc.shape, dtype="int32")
        # pulses are sparse: hand the synapses (flat index k, ascending as the device random draws
        # expect, and signed count) of the non-zero ones
        chi_in = self.chi if cols is None else self.chi[:, cols]
        if hasattr(self.dpu, "step_sparse"):
            chi_new, k, counts = self.dpu.step_sparse(chi_in, inc, rand)
        else:
            chi_new, p = self.dpu.step(chi_in, inc, rand)
            p = p.reshape(-1)
            k = xp.flatnonzero(p != 0)      # via a bool mask: faster than on the integers (NumPy)
            counts = p[k]
        if cols is None:
            self.chi = chi_new
        else:
            self.chi[:, cols] = chi_new
        if cols is not None:                # (row, position in cols) -> flat index in the matrix
            n_c = int(cols.shape[0])
            k = (k // n_c) * self.chi.shape[1] + cols[k % n_c]
        st = self.syn.apply_pulse_list(k, counts, verify=(self._verify_noise,) if self.verified else None)
        if self.verified and "measured" in st:
            # asked - measured = counts * eps_w - (measured change of the pulsed device, + refresh)
            asked = st.pop("verified_counts").astype(FLOAT) * self.epsilon_w   # float32 (Python scalar)
            asked -= st.pop("measured")
            capped = st.pop("verified_capped")
            if self.verify_anti_windup:
                asked[capped] = 0.0                # at the range edge: nothing more to ask (anti-windup)
            if self.verify_gain != 1.0:
                asked *= self.verify_gain          # damped: this share of the error goes back to chi
            self.feedback.reshape(-1)[st.pop("verified_idx")] += asked
        self.inc_saturated += sat
        return st

    def weights(self):
        return self.syn.weights()

    def state_dict(self, be):
        return {"chi": be.asnumpy(self.chi), "syn": self.syn.state_dict(),
                "matrix_rng": rng_state(self.matrix.rng), "syn_rng": rng_state(self.syn.rng),
                "events": dict(self.matrix.events), "inc_saturated": self.inc_saturated,
                **({"feedback": be.asnumpy(self.feedback), "verify_rng": rng_state(self.verify_rng)}
                   if self.verified else {})}

    def load_state_dict(self, st):
        self.chi = self.xp.asarray(st["chi"]).astype("int32")
        self.syn.load_state_dict(st["syn"])
        set_rng_state(self.matrix.rng, st["matrix_rng"])
        set_rng_state(self.syn.rng, st["syn_rng"])
        self.matrix.events.update(st["events"])
        self.inc_saturated = st.get("inc_saturated", 0)
        if self.verified:
            if "feedback" not in st:
                raise ValueError("checkpoint was made without synapse.verified_update")
            self.feedback = self.xp.asarray(st["feedback"]).astype(FLOAT)
            set_rng_state(self.verify_rng, st["verify_rng"])


def _uniform_bits_pcg64(rng, bits: int, shape):
    """Same result and generator state as ``rng.integers(0, 2**bits, size=shape, dtype="uint8")``
    for a NumPy ``Generator`` on PCG64 (1 <= bits <= 8), about 4x faster.

    NumPy draws those from 32-bit words (one 64-bit PCG64 output = low word, then high word; a
    spare high word is kept in the bit generator's ``has_uint32``/``uinteger`` buffer), each word
    split into 4 bytes, low byte first; Lemire's bounded method with a power-of-two range never
    rejects and returns ``byte >> (8 - bits)``. Checked against ``integers`` once per process
    (:func:`_pcg64_shortcut_ok`); not used when the check fails.
    """
    n = 1
    for d in shape:
        n *= int(d)
    bg = rng.bit_generator
    st = bg.state
    have = st["has_uint32"]
    nw = (n + 3) // 4                      # 32-bit words consumed
    if have and nw:
        nw -= 1                            # the first one is the buffered spare word
    nraw = (nw + 1) // 2
    w = bg.random_raw(nraw).astype("<u8", copy=False).view("<u4") if nraw else np.empty(0, "<u4")
    if have and n:
        w = np.concatenate([np.array([st["uinteger"]], dtype="<u4"), w])
    if n and (nraw or have):
        st = bg.state
        if nraw:
            st["uinteger"] = int(w[-1])    # high word of the last output: spare if unused
        st["has_uint32"] = nw % 2
        bg.state = st
    b = w.view(np.uint8)[:n]
    return (b >> (8 - bits)).reshape(shape)


_PCG64_SHORTCUT_OK = None


def _pcg64_shortcut_ok() -> bool:
    """Once per process: does :func:`_uniform_bits_pcg64` reproduce this NumPy's ``integers``?"""
    global _PCG64_SHORTCUT_OK
    if _PCG64_SHORTCUT_OK is None:
        ok = True
        try:
            a, b = np.random.default_rng(12345), np.random.default_rng(12345)
            for i, shape in enumerate([(250, 37), (3, 3), (1, 1), (2, 5), (7, 1), (10, 25), (0, 4), (4, 9)]):
                bits = 1 + i % 8
                x = a.integers(0, 1 << bits, size=shape, dtype="uint8")
                y = _uniform_bits_pcg64(b, bits, shape)
                ok = ok and x.dtype == y.dtype and x.shape == y.shape and bool((x == y).all())
                ok = ok and a.bit_generator.state == b.bit_generator.state
                a.integers(0, 16, size=(i + 1,), dtype="uint8")     # leave a spare word at times
                b.integers(0, 16, size=(i + 1,), dtype="uint8")
        except Exception:  # pragma: no cover - a NumPy without these internals
            ok = False
        _PCG64_SHORTCUT_OK = ok
    return _PCG64_SHORTCUT_OK


def uniform_bits_uint8(rng, bits: int, shape):
    """``rng.integers(0, 2**bits, size=shape, dtype="uint8")`` for a NumPy generator (bit-identical,
    fast path for PCG64)."""
    if type(rng.bit_generator) is np.random.PCG64 and 1 <= bits <= 8 and _pcg64_shortcut_ok():
        return _uniform_bits_pcg64(rng, bits, tuple(shape))
    return rng.integers(0, 1 << bits, size=shape, dtype="uint8")
