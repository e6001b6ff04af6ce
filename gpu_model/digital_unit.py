"""The digital unit of one tile: chi, the verify feedback, the update encoding and rounding bits.

Stage 1 of :class:`gpu_model.tile.AnalogTile`'s update (``step(update) -> PulseList``):

| step | what | where |
| --- | --- | --- |
| feedback | a verified update's corrections (asked - measured) join the increment | :attr:`feedback` |
| encode | delta_w (weight units) / epsilon_w -> ``inc`` integers, saturated | ``DPUSpec.encode_update`` |
| rounding bits | R-bit uniforms for stochastic rounding | the trainer's stream (reference) or keyed |
| DPU | ``s = sat(chi + round(inc))``, ``p = min(floor(|s|), pmax)``, ``chi' = s - sign(s) p`` | golden or RTL (:mod:`rtl.dpu`) |
| pulse list | the synapses with p != 0, flat and ascending, signed counts | :class:`~gpu_model.pulses.PulseList` |

and after the devices (``absorb(report)``): a verified update's readout becomes the next feedback.
The DPU itself (golden model or the Verilated RTL) is chosen by ``TileConfig.dpu_kind`` and does
only the fixed-point arithmetic of :mod:`rtl.spec`; a fuller hardware DPU plugs in as another
``rtl.dpu`` kind without touching this module's interface.

Rounding bits: the ``reference`` engine draws them from the generator the trainer hands in (the
streams of every published table); the ``fused`` engine takes them from the counter-based
:func:`rtl.golden.shared_rand` keyed by (seed, tile stream, update step), so a run is resumable
from the step number alone and identical on every process of a data-parallel job.
"""
from __future__ import annotations

import numpy as np

from rtl.dpu import make_dpu
from rtl.golden import _M64, _splitmix64, shared_rand

from .devices import FLOAT
from .pulses import PulseList, UpdateReport

ROUNDING_KEY_OFFSET = 7_000_000   # keyed rounding bits: shared_rand seed = (seed << 24) + offset + stream
                                  # (engineering choice: apart from every backend child stream)


def _rounding_key(seed: int, step: int) -> int:
    """The 64-bit key :func:`rtl.golden.shared_rand` derives from (seed, step)."""
    return _splitmix64(_splitmix64(int(seed) & _M64) ^ (int(step) & _M64))


class DigitalUnit:
    """chi (int32, units of epsilon in the DPU's fixed point) and the update path of one tile."""

    def __init__(self, shape, config, backend, epsilon_w: float, stream: int):
        self.be, self.xp = backend, backend.xp
        self.spec = config.dpu
        self.dpu = make_dpu(config.dpu_kind, self.spec, self.xp)
        self.keyed = config.engine != "reference"
        self.epsilon_w = float(epsilon_w)
        self.stream = int(stream)
        s = config.synapse
        self.verified = bool(s.verified_update)
        self.verify_gain = float(s.verify_gain)
        self.verify_anti_windup = bool(s.verify_anti_windup)
        self.chi = self.xp.zeros(shape, dtype="int32")
        self.feedback = self.xp.zeros(shape, dtype=FLOAT) if self.verified else None
        self.inc_saturated = 0   # updates clipped to the increment range (rtl.spec.encode_update)
        # the fused engine runs the golden DPU as one compiled pass (gpu_model/kernels/dpu_step.py),
        # bit-exact to the chain below fed with the same keyed rounding bits
        self.compiled = self.keyed and config.dpu_kind == "golden" and backend.name == "numpy"
        if self.compiled:
            rows, cols = shape
            self._all_cols = np.empty(0, dtype=np.int64)   # the kernel's "every column"
            self._out_idx = np.empty(rows * cols, dtype=np.int64)
            self._out_cnt = np.empty(rows * cols, dtype=np.int32)
            self._no_feedback = np.zeros((1, 1), dtype=FLOAT)

    # --- stage 1: update -> pulse list ------------------------------------------------------------
    def _rounding_bits(self, shape, rand_rng, step: int):
        spec = self.spec
        if spec.rounding != "stochastic" or spec.round_bits == 0:
            return None
        if self.keyed:
            return shared_rand(spec, tuple(shape), self.rounding_seed(), step, self.xp)
        if rand_rng is None:
            raise ValueError("stochastic rounding on the reference engine needs the trainer's rand_rng")
        if spec.round_bits <= 8 and self.be.name == "numpy":
            return uniform_bits_uint8(rand_rng, spec.round_bits, shape)
        return rand_rng.integers(0, 1 << spec.round_bits, size=shape, dtype="int32")

    def rounding_seed(self) -> int:
        """The keyed rounding bits' seed (:func:`rtl.golden.shared_rand`): backend seed and tile stream."""
        return (self.be.seed << 24) + ROUNDING_KEY_OFFSET + self.stream

    def step(self, delta_w, rand_rng=None, cols=None, step: int = 0) -> PulseList:
        """delta_w (weight units, out x in, or out x len(cols)) -> chi -> the pulse list.

        ``cols``: optional column subset that ``delta_w`` covers (the other columns have a zero
        update, which leaves chi unchanged and sends no pulse). ``step``: the tile's update
        counter (key of the fused engine's rounding bits).
        """
        if self.compiled:
            return self._step_compiled(delta_w, cols, step)
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
        rand = self._rounding_bits(inc.shape, rand_rng, step)
        # pulses are sparse: the synapses (flat index k, ascending as the device random draws
        # expect) and signed counts of the non-zero ones
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
            n_c = int(cols.shape[0])        # (row, position in cols) -> flat index in the matrix
            k = (k // n_c) * self.chi.shape[1] + cols[k % n_c]
        self.inc_saturated += sat
        return PulseList(k, counts)

    def _step_compiled(self, delta_w, cols, step: int) -> PulseList:
        """:meth:`step` as one compiled pass (gpu_model/kernels/dpu_step.py), golden DPU, NumPy."""
        from .kernels.dpu_step import ROUNDING_CODES, dpu_step_kernel
        spec = self.spec
        delta = np.asarray(delta_w, dtype=np.float32)
        if delta.ndim != 2 or delta.shape[0] != self.chi.shape[0]:
            raise ValueError(f"update of shape {delta.shape} for a tile of {self.chi.shape}")
        cc = self._all_cols if cols is None else np.asarray(cols, dtype=np.int64)
        width = self.chi.shape[1] if cols is None else cc.shape[0]
        if delta.shape[1] != width:
            raise ValueError(f"update has {delta.shape[1]} columns, cols lists {width}")
        factor = np.float32(float(np.float32(1.0 / self.epsilon_w)) * float(spec.inc_scale))
        key = np.uint64(_rounding_key(self.rounding_seed(), step))
        n, sat = dpu_step_kernel(delta, self.feedback if self.verified else self._no_feedback, self.verified,
                                 cc, self.chi, factor, spec.inc_min, spec.inc_max, spec.round_bits,
                                 ROUNDING_CODES[spec.rounding], key, spec.frac_bits, spec.chi_max, spec.pmax,
                                 self._out_idx, self._out_cnt)
        self.inc_saturated += int(sat)
        return PulseList(self._out_idx[:n].copy(), self._out_cnt[:n].copy())

    # --- after the devices: the verify feedback --------------------------------------------------
    def absorb(self, report: UpdateReport) -> None:
        """A verified update's readout -> feedback: (asked - measured) for the next increment."""
        r = report.verify
        if not self.verified or r is None:
            return
        # asked - measured = counts * eps_w - (measured change of the pulsed device, + refresh)
        asked = r.counts.astype(FLOAT) * self.epsilon_w   # float32 (Python scalar)
        asked -= r.measured
        if self.verify_anti_windup:
            asked[r.capped] = 0.0                # at the range edge: nothing more to ask (anti-windup)
        if self.verify_gain != 1.0:
            asked *= self.verify_gain            # damped: this share of the error goes back to chi
        self.feedback.reshape(-1)[r.idx] += asked

    # --- state ------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        be = self.be
        out = {"chi": be.asnumpy(self.chi), "inc_saturated": int(self.inc_saturated)}
        if self.verified:
            out["feedback"] = be.asnumpy(self.feedback)
        return out

    def load_state_dict(self, st: dict) -> None:
        self.chi = self.xp.asarray(st["chi"]).astype("int32")
        self.inc_saturated = int(st.get("inc_saturated", 0))
        if self.verified:
            if "feedback" not in st:
                raise ValueError("checkpoint was made without synapse.verified_update")
            self.feedback = self.xp.asarray(st["feedback"]).astype(FLOAT)


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
