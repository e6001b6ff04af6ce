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


# ================================================================================================
# The whole digital unit as hardware (issue 27): the update computed from the mini-batch factors
# ================================================================================================
#
# :class:`DigitalUnit` above receives a float update delta_w. The whole unit
# (:class:`rtl.tile.TileUnit`, golden twin :class:`rtl.golden.GoldenTile`) computes the update
# itself from what the crossbar already has per mini-batch: the activations' DAC codes x and the
# errors delta, Delta chi = round(sum_b delta_b x_b^T * m / 2^k), keeps chi on chip and sends out
# pulse events. :class:`WholeUnitDigital` runs a weight matrix through one such unit per
# hardware tile block (``tile-golden``: GoldenTile; ``tile-rtl``: the Verilator model), with the
# same interface as DigitalUnit (``step`` -> PulseList, ``absorb``, ``state_dict``) plus
# :meth:`WholeUnitDigital.offer`, which hands it the factors of the next update (plain SGD:
# delta_w = -lr d^T x). Host-side encoding per mini-batch (docs/dpu.md, "In the training loop"):
#
# * x codes: the crossbar DAC's codes, per sample b: s_b = max|x_b| (``dac_scaling = "max"``; 0 -> 1)
#   or ``dac_fixed_scale``; code = rint((x_b / s_b) * x_max) in float32, as AnalogTile._dac does;
# * e_b = -d_b * s_b / x_max (the negative gradient's error with the DAC scale folded in), then
#   ``TileSpec.quantize_delta`` (per-batch max scaling: codes and e_scale);
# * scale = lr * e_scale * inc_scale / epsilon_w increment LSBs per code product, m = rint(scale 2^k),
#   clamped to [0, scale_max] (a clamp is counted in :attr:`WholeUnitDigital.scale_clamped`);
# * a batch smaller than the spec's B is padded with zero samples; a matrix block smaller than the
#   spec's R x C with zero rows/columns (zero codes: those synapses never pulse).

from rtl.dpu import WHOLE_UNIT_KINDS as TILE_DPU_KINDS  # noqa: E402  (tile-golden, tile-rtl)
WHOLE_UNIT_SEED_OFFSET = 9_000_000   # engineering choice: block seed key apart from every other stream


def whole_unit_spec(config, batch: int, rows: int = 64, cols: int = 64, lanes: int = 8, taps: int = 8,
                    delta_bits: int = 8, scale_bits: int = 16, scale_shift: int = 12):
    """The :class:`rtl.spec.TileSpec` of a tile config's whole unit: x_bits = the converters'
    dac_bits, the chi/pulse format = ``config.dpu``; the rest as given (defaults: the shipped
    TileSpec's engineering choices). ``taps`` is reduced to a divisor of ``batch``."""
    import math

    from rtl.spec import TileSpec
    taps = math.gcd(int(taps), int(batch))
    return TileSpec(rows=rows, cols=cols, batch=batch, lanes=lanes, taps=taps,
                    x_bits=config.converters.dac_bits, delta_bits=delta_bits, scale_bits=scale_bits,
                    scale_shift=scale_shift, dpu=config.dpu)


class WholeUnitDigital:
    """The digital unit of one weight matrix as the whole hardware unit: one
    :class:`rtl.dpu.TileDPU` per (spec.rows x spec.cols) block of the matrix, chi held by the units.

    ``kind``: ``tile-golden`` (GoldenTile) or ``tile-rtl`` (Verilator); both give the same chi,
    pulse lists and counters bit for bit. Verified updates are not supported (the unit has no
    feedback input). ``step(delta_w, rand_rng, cols, step)`` applies the factors given to
    :meth:`offer` just before (``delta_w`` and ``cols`` are only checked for shape: x carries the
    zero columns itself; the rounding bits come from the units' own generators).
    """

    def __init__(self, shape, config, backend, epsilon_w: float, stream: int, kind: str | None = None,
                 tile_spec=None):
        kind = kind or config.dpu_kind
        if kind not in TILE_DPU_KINDS:
            raise ValueError(f"unknown whole-unit kind {kind!r}; choose one of {', '.join(TILE_DPU_KINDS)}")
        if config.synapse.verified_update:
            raise ValueError("the whole unit has no verify-feedback input: verified_update is not supported")
        if backend.name != "numpy":
            raise ValueError("the whole unit runs on the NumPy backend")
        self.be, self.xp = backend, np
        self.kind, self.config, self.spec = kind, config, config.dpu
        self.converters = config.converters
        self.epsilon_w = float(epsilon_w)
        self.stream = int(stream)
        self.verified, self.feedback = False, None
        self.shape = (int(shape[0]), int(shape[1]))
        self.tile_spec, self.units, self.blocks = None, [], []
        self._chi0 = np.zeros(self.shape, np.int32)     # chi until the units exist
        self._pending = None
        self.scale_clamped = 0      # mini-batches whose scale mantissa was clamped to [0, scale_max]
        self.batches = 0
        if tile_spec is not None:
            self._build(tile_spec)

    def _build(self, ts) -> None:
        """One TileDPU per (rows x cols) block; spec from the first mini-batch unless given."""
        from rtl.dpu import TileDPU
        if ts.dpu != self.config.dpu or ts.x_bits != self.converters.dac_bits:
            raise ValueError("tile_spec must carry the config's chi format (dpu) and x_bits = dac_bits")
        R, C = self.shape
        self.tile_spec = ts
        self.blocks = [(r0, min(r0 + ts.rows, R), c0, min(c0 + ts.cols, C))
                       for r0 in range(0, R, ts.rows) for c0 in range(0, C, ts.cols)]
        key = _splitmix64((int(self.be.seed) << 24) + WHOLE_UNIT_SEED_OFFSET + self.stream)
        self.units = [TileDPU(ts, self.kind[len("tile-"):], seed=_splitmix64(key ^ n) & 0xFFFFFFFF)
                      for n in range(len(self.blocks))]
        self.load_chi(self._chi0)

    # --- host side: factors -> codes --------------------------------------------------------------
    def encode(self, x, d, lr: float):
        """(x codes (B, in) int32, delta codes (B, out) int32, m, clamped) of one SGD update
        delta_w = -lr d^T x, padded to the spec's batch."""
        x = np.asarray(x, dtype=FLOAT)
        d = np.asarray(d, dtype=np.float64)
        B = x.shape[0]
        if x.shape != (B, self.shape[1]) or d.shape != (B, self.shape[0]):
            raise ValueError(f"factors must be x (B, {self.shape[1]}) and d (B, {self.shape[0]}), "
                             f"got {x.shape} and {d.shape}")
        if self.tile_spec is None:
            self._build(whole_unit_spec(self.config, B))
        ts, tp = self.tile_spec, self.converters
        if B > ts.batch:
            raise ValueError(f"mini-batch of {B} exceeds the unit's batch {ts.batch}")
        if tp.dac_scaling == "max":
            s = np.abs(x).max(axis=1, keepdims=True)
            s[s == 0] = 1.0
            xn = x / s
        else:
            s = np.full((B, 1), tp.dac_fixed_scale, dtype=FLOAT)
            xn = np.clip(x / s, -1.0, 1.0)
        xn *= ts.x_max
        xc = np.rint(xn).astype(np.int32)
        e = -d * (s.astype(np.float64) / ts.x_max)
        ec, e_scale = ts.quantize_delta(e)
        scale = float(lr) * e_scale * self.spec.inc_scale / self.epsilon_w
        m_raw = int(np.rint(scale * 2 ** ts.scale_shift))
        m = min(max(m_raw, 0), ts.scale_max)
        xp_, dp_ = np.zeros((ts.batch, self.shape[1]), np.int32), np.zeros((ts.batch, self.shape[0]), np.int32)
        xp_[:B], dp_[:B] = xc, ec
        return xp_, dp_, m, m != m_raw

    def offer(self, x, d, lr: float) -> None:
        """The factors of the next :meth:`step`: layer input x (B, in), error d = dL/dy (B, out),
        learning rate (plain SGD: delta_w = -lr d^T x)."""
        self._pending = self.encode(x, d, lr)

    # --- the update -------------------------------------------------------------------------------
    def step(self, delta_w=None, rand_rng=None, cols=None, step: int = 0) -> PulseList:
        if self._pending is None:
            raise ValueError("the whole unit computes the update from the mini-batch factors: call "
                             "offer(x, d, lr) before step (plain SGD only)")
        if delta_w is not None and cols is None and tuple(np.shape(delta_w)) != self.shape:
            raise ValueError(f"update of shape {np.shape(delta_w)} for a matrix of {self.shape}")
        xc, dc, m, clamped = self._pending
        self._pending = None
        ts, C = self.tile_spec, self.shape[1]
        ks, cs = [], []
        for (r0, r1, c0, c1), u in zip(self.blocks, self.units):
            xb = np.zeros((ts.batch, ts.cols), np.int32)
            db = np.zeros((ts.batch, ts.rows), np.int32)
            xb[:, :c1 - c0], db[:, :r1 - r0] = xc[:, c0:c1], dc[:, r0:r1]
            _, ev = u.update_from_batch(None, xb, db, m, return_chi=False)
            if ev.size:
                ks.append((ev["row"].astype(np.int64) + r0) * C + ev["col"] + c0)
                cs.append(np.where(ev["neg"], -ev["count"], ev["count"]).astype(np.int32))
        self.scale_clamped += int(clamped)
        self.batches += 1
        if not ks:
            return PulseList(np.empty(0, np.int64), np.empty(0, np.int32))
        k, c = np.concatenate(ks), np.concatenate(cs)
        order = np.argsort(k, kind="stable")        # ascending flat index over the whole matrix
        return PulseList(k[order], c[order])

    def absorb(self, report) -> None:
        """No verify feedback in the whole unit."""

    @property
    def inc_saturated(self) -> int:
        return sum(u.counters()["inc_sat"] for u in self.units)

    def counters(self) -> dict:
        """The units' status counters, summed over the blocks (each wraps at 2^32 in hardware)."""
        out: dict = {}
        for u in self.units:
            for k, v in u.counters().items():
                out[k] = out.get(k, 0) + v
        return out

    @property
    def chi(self) -> np.ndarray:
        """chi of the whole matrix (dumped from the units: host-port traffic on ``tile-rtl``)."""
        if not self.units:
            return self._chi0.copy()
        out = np.empty(self.shape, np.int32)
        for (r0, r1, c0, c1), u in zip(self.blocks, self.units):
            full = u._g.chi if u.kind == "golden" else u._v.dump_chi()
            out[r0:r1, c0:c1] = full[:r1 - r0, :c1 - c0]
        return out

    def load_chi(self, chi) -> None:
        chi = np.asarray(chi, dtype=np.int32)
        if chi.shape != self.shape:
            raise ValueError(f"chi of shape {chi.shape} for a matrix of {self.shape}")
        if not self.units:
            self._chi0 = chi.copy()
            return
        ts = self.tile_spec
        for (r0, r1, c0, c1), u in zip(self.blocks, self.units):
            full = np.zeros((ts.rows, ts.cols), np.int32)
            full[:r1 - r0, :c1 - c0] = chi[r0:r1, c0:c1]
            (u._g if u.kind == "golden" else u._v).load_chi(full)

    def state_dict(self) -> dict:
        """chi and the counts (the units' generator states are not part of it: a resumed run
        reseeds them, so it continues with other rounding bits)."""
        return {"chi": self.chi, "inc_saturated": int(self.inc_saturated), "batches": self.batches}

    def load_state_dict(self, st: dict) -> None:
        self.load_chi(st["chi"])
        self.batches = int(st.get("batches", 0))


def make_digital_unit(shape, config, backend, epsilon_w: float, stream: int):
    """The digital unit ``config.dpu_kind`` asks for: :class:`DigitalUnit` (golden | rtl: the
    chi/pulse lanes fed a float update) or :class:`WholeUnitDigital` (tile-golden | tile-rtl)."""
    if config.dpu_kind in TILE_DPU_KINDS:
        return WholeUnitDigital(shape, config, backend, epsilon_w, stream)
    return DigitalUnit(shape, config, backend, epsilon_w, stream)


def attach_whole_unit(tile, kind: str, tile_spec=None):
    """Replace an :class:`~gpu_model.tile.AnalogTile`'s digital unit by the whole unit (``kind``
    tile-golden | tile-rtl), chi carried over; returns the new unit. ``tile_spec`` default:
    :func:`whole_unit_spec` of the tile's config for the first mini-batch's size."""
    old = tile.digital
    unit = WholeUnitDigital(tile.shape, tile.config, tile.be, tile.epsilon_w, tile.stream, kind, tile_spec)
    unit.load_chi(tile.be.asnumpy(old.chi))
    tile.digital = unit
    return unit
