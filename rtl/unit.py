"""The DPU as hardware: a streaming, pipelined, N-lane chi/pulse unit (Amaranth 0.5).

Arithmetic is exactly that of :mod:`rtl.spec` (and :func:`rtl.golden.golden_step`); every
parameter comes from one :class:`~rtl.spec.DPUSpec`.

Data path per lane (one carry chain per stage at most, no loop-carried dependency: chi streams
in and out, so the unit can be pipelined freely):

====  ======================================================================================
 S1   ``r = (inc + k) >>> R`` with ``k = rand`` (stochastic), ``2^(R-1)`` (nearest), ``0``
      (truncate)
 S2   ``sum = chi + r`` (one bit wider than both, cannot overflow)
 S3   ``neg = sum < 0``; ``mag = |sum| = (sum ^ neg) + neg``
 S4   saturate ``mag`` to ``chi_max`` (an OR of the high bits, no compare chain);
      ``ip = mag >> F``; ``d = ip - pmax``; ``p = d >= 0 ? pmax : ip``;
      ``residue = {d >= 0 ? d : 0, mag[F-1:0]}``
 S5   ``chi' = neg ? -residue : residue``
====  ======================================================================================

Handshake: ``i`` and ``o`` are :mod:`amaranth.lib.stream` interfaces (valid/ready). The whole
pipeline advances together when ``~o.valid | o.ready``; ``i.ready`` is that same enable, so it
depends combinationally on ``o.ready`` (no skid buffer; the synthesis wrapper registers it).
"""
from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .spec import ROUNDING_MODES, DPUSpec, SpecError

LATENCY = 5  # pipeline stages S1..S5

#: Read-only "capabilities register" driven with constants: lets a testbench (or software) read the
#: parameters the design was built with, instead of being told them.
INFO_LAYOUT = data.StructLayout({
    "lanes": unsigned(16),
    "chi_bits": unsigned(8),
    "frac_bits": unsigned(8),
    "inc_bits": unsigned(8),
    "round_bits": unsigned(8),
    "pmax": unsigned(16),
    "rounding": unsigned(2),    # index into spec.ROUNDING_MODES
    "latency": unsigned(6),
})


def lane_in_layout(spec: DPUSpec) -> data.StructLayout:
    """Per-lane input: chi, the raw increment, and (stochastic rounding only) ``round_bits`` of
    the shared random source."""
    fields = {"chi": signed(spec.chi_bits), "inc": signed(spec.inc_bits)}
    if spec.rounding == "stochastic":
        fields["rand"] = unsigned(spec.round_bits)
    return data.StructLayout(fields)


def lane_out_layout(spec: DPUSpec) -> data.StructLayout:
    """Per-lane output: new chi, pulse count magnitude, pulse sign (1 = negative)."""
    return data.StructLayout({
        "chi": signed(spec.chi_bits),
        "pulses": unsigned(spec.pulse_bits),
        "neg": unsigned(1),
    })


def in_layout(spec: DPUSpec) -> data.ArrayLayout:
    return data.ArrayLayout(lane_in_layout(spec), spec.lanes)


def out_layout(spec: DPUSpec) -> data.ArrayLayout:
    return data.ArrayLayout(lane_out_layout(spec), spec.lanes)


def check_hw_spec(spec: DPUSpec) -> DPUSpec:
    if not isinstance(spec, DPUSpec):
        raise TypeError(f"expected a DPUSpec, got {type(spec).__name__}")
    if spec.lanes >= 2 ** 16 or spec.pmax >= 2 ** 16:
        raise SpecError("lanes and pmax must be < 65536 for the hardware unit")
    return spec


class DPUUnit(wiring.Component):
    """N-lane streaming DPU.

    Ports (built from ``spec``):

    * ``i``: ``In(stream.Signature(ArrayLayout(lane_in_layout, lanes)))``
    * ``o``: ``Out(stream.Signature(ArrayLayout(lane_out_layout, lanes)))``
    * ``info``: ``Out(INFO_LAYOUT)``, constant: the build parameters.

    Latency: ``LATENCY`` = 5 cycles from an accepted input beat to its output beat.
    Throughput: one beat (``lanes`` lane-updates) per cycle while ``o.ready`` is high; a low
    ``o.ready`` with a valid output stalls every stage (and ``i.ready``) in the same cycle.
    """

    latency = LATENCY

    def __init__(self, spec: DPUSpec | None = None):
        self.spec = check_hw_spec(spec if spec is not None else DPUSpec())
        super().__init__({
            "i": In(stream.Signature(in_layout(self.spec))),
            "o": Out(stream.Signature(out_layout(self.spec))),
            "info": Out(INFO_LAYOUT),
        })

    def elaborate(self, platform):
        s = self.spec
        m = Module()
        R, F = s.round_bits, s.frac_bits
        ibits = s.chi_bits - 1 - F                       # integer bits of |chi|
        mag_bits = s.chi_bits - 1                        # |saturated chi| fits here

        m.d.comb += [
            self.info.lanes.eq(s.lanes), self.info.chi_bits.eq(s.chi_bits),
            self.info.frac_bits.eq(F), self.info.inc_bits.eq(s.inc_bits),
            self.info.round_bits.eq(R), self.info.pmax.eq(s.pmax),
            self.info.rounding.eq(ROUNDING_MODES.index(s.rounding)),
            self.info.latency.eq(LATENCY),
        ]

        en = Signal()
        m.d.comb += [en.eq(~self.o.valid | self.o.ready), self.i.ready.eq(en)]

        valid = [Signal(name=f"s{k + 1}_valid") for k in range(LATENCY)]
        with m.If(en):
            m.d.sync += valid[0].eq(self.i.valid)
            m.d.sync += [valid[k].eq(valid[k - 1]) for k in range(1, LATENCY)]
        m.d.comb += self.o.valid.eq(valid[-1])

        rw = s.inc_bits - R + 1                          # rounded increment width
        sum_bits = max(s.chi_bits, rw) + 1
        for n in range(s.lanes):
            li, lo = self.i.payload[n], self.o.payload[n]

            def reg(shape, name):
                return Signal(shape, name=f"l{n}_{name}", reset_less=True)

            # S1: drop R fractional bits of the increment by the rounding rule
            if R == 0:
                rounded = li.inc
            elif s.rounding == "stochastic":
                rounded = (li.inc + li.rand) >> R
            elif s.rounding == "nearest":
                rounded = (li.inc + (1 << (R - 1))) >> R
            else:
                rounded = li.inc >> R
            s1_inc, s1_chi = reg(signed(rw), "s1_inc"), reg(signed(s.chi_bits), "s1_chi")
            # S2: accumulate (one bit wider than either operand: no overflow)
            s2_sum = reg(signed(sum_bits), "s2_sum")
            # S3: sign / magnitude
            s3_neg, s3_mag = reg(1, "s3_neg"), reg(unsigned(sum_bits), "s3_mag")
            # S4: saturate, split pulses / residue
            s4_neg, s4_p = reg(1, "s4_neg"), reg(unsigned(s.pulse_bits), "s4_p")
            s4_res = reg(unsigned(mag_bits), "s4_res")
            # S5: re-apply the sign
            s5_neg, s5_p = reg(1, "s5_neg"), reg(unsigned(s.pulse_bits), "s5_p")
            s5_chi = reg(signed(s.chi_bits), "s5_chi")

            over = s3_mag[mag_bits:].any()
            mag = Mux(over, s.chi_max, s3_mag[:mag_bits])
            ip = mag[F:]
            d = Signal(signed(ibits + 1), name=f"l{n}_d")
            m.d.comb += d.eq(ip - s.pmax)
            ge = ~d[-1]
            with m.If(en):
                m.d.sync += [
                    s1_inc.eq(rounded), s1_chi.eq(li.chi),
                    s2_sum.eq(s1_chi + s1_inc),
                    s3_neg.eq(s2_sum[-1]),
                    # |sum| = (sum XOR sign) + sign: one carry chain, no mux behind it
                    s3_mag.eq((s2_sum.as_unsigned() ^ s2_sum[-1].replicate(sum_bits)) + s2_sum[-1]),
                    s4_neg.eq(s3_neg),
                    s4_p.eq(Mux(ge, s.pmax, ip)),
                    s4_res.eq(Cat(mag[:F], Mux(ge, d[:ibits], 0))),
                    s5_neg.eq(s4_neg), s5_p.eq(s4_p),
                    s5_chi.eq(Mux(s4_neg, -s4_res, s4_res)),
                ]
            m.d.comb += [lo.chi.eq(s5_chi), lo.pulses.eq(s5_p), lo.neg.eq(s5_neg)]
        return m


class SerialWrapper(wiring.Component):
    """Synthesis wrapper: the unit with registered, serialised I/O so it fits a package's pins.

    Pins: ``si`` (``io_bits``) shifted into the input register on ``shift_in``; ``push`` (registered)
    offers that register to the unit; ``pop`` (registered) is the unit's ``o.ready``; an accepted
    output beat is loaded into the output register, shifted out on ``so`` by ``shift_out``;
    ``in_ready`` / ``out_valid`` are registered status. Every pin is registered, so the reported
    Fmax is that of the unit and the wrapper's internal paths, not of pad timing.
    """

    def __init__(self, spec: DPUSpec | None = None, io_bits: int = 8):
        self.unit = DPUUnit(spec)
        if not isinstance(io_bits, int) or not 1 <= io_bits <= 32:
            raise ValueError(f"io_bits must be an integer in [1, 32], got {io_bits!r}")
        self.io_bits = io_bits
        super().__init__({
            "si": In(io_bits), "shift_in": In(1), "push": In(1), "pop": In(1),
            "shift_out": In(1), "so": Out(io_bits), "in_ready": Out(1), "out_valid": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.unit = u = self.unit
        w = self.io_bits
        in_w, out_w = len(u.i.payload.as_value()), len(u.o.payload.as_value())
        in_sr = Signal(in_w + (-in_w) % w)
        out_sr = Signal(out_w + (-out_w) % w)
        push, pop, sin, sout, si = (Signal.like(x) for x in
                                    (self.push, self.pop, self.shift_in, self.shift_out, self.si))
        m.d.sync += [push.eq(self.push), pop.eq(self.pop), sin.eq(self.shift_in),
                     sout.eq(self.shift_out), si.eq(self.si)]
        with m.If(sin):
            m.d.sync += in_sr.eq(Cat(in_sr[w:], si))
        m.d.comb += [u.i.payload.eq(in_sr[:in_w]), u.i.valid.eq(push), u.o.ready.eq(pop)]
        with m.If(u.o.valid & u.o.ready):
            m.d.sync += out_sr.eq(u.o.payload)
        with m.Elif(sout):
            m.d.sync += out_sr.eq(out_sr[w:])
        m.d.sync += [self.so.eq(out_sr[:w]), self.in_ready.eq(u.i.ready),
                     self.out_valid.eq(u.o.valid)]
        return m
