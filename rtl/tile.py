"""The whole digital unit as hardware (issue 27): update engine, chi memory, pulse-event stream.

Arithmetic is exactly that of :class:`rtl.spec.TileSpec` (and :class:`rtl.golden.GoldenTile`);
every port width comes from one ``TileSpec``. The chi/pulse lanes are the existing
:class:`rtl.unit.DPUUnit`, unchanged.

Blocks (R x C tile, batch B, L lanes, P taps):

* **Input buffers** (``amaranth.lib.memory``, double-buffered): ``x`` beats carry L codes
  ``x[b, gL:(g+1)L]`` (order: b-major, then g), ``d`` beats L codes ``delta[b, hL:(h+1)L]``.
  P banks each (bank ``b mod P``), so one read gives P batch entries at once. When both streams
  have delivered a whole batch into a buffer, that buffer is full; the loaders go on into the
  other buffer while the engine computes (``x.ready`` / ``d.ready`` low only while both buffers
  are full).
* **Update engine**: for every group (row r, column group g; raster order) it reads B/P words:
  L*P multipliers (signed ``x_bits`` x ``delta_bits``: one DSP each), a P-input adder tree, an
  accumulator per lane; then ``S * m`` (one ``acc_bits`` x ``scale_bits`` multiply per lane),
  round half up, ``sat_inc``. It issues a new group only while the FIFO in front of the lanes
  has room for it (credit counter: no stall inside the engine's pipeline).
* **chi memory** (``amaranth.lib.memory``, ``R*C/L`` words of L chi values): read when a group's
  sum is ready, written back when its beat leaves the lanes. Read-after-write hazards: within a
  mini-batch every word is read once and written once (disjoint groups), so none can occur;
  between mini-batches the engine starts batch n+1 only after batch n has drained (every
  write-back done, the event serialiser empty): the drain costs ``DRAIN`` cycles per batch, no
  forwarding logic. The host port (``chi_wr``, ``chi_rd_addr`` -> ``chi_rd``) is served only
  while the engine is idle (ready low otherwise), and a pending host request holds off the start
  of a batch.
* **Timing choices**: the engine's issue credit is registered (computed a cycle early with a
  margin of one entry), the x / delta memories read every cycle (no enable fan-out), and the
  scale multiply S * m is split into DSP-sized partial products (:func:`scale_chunks`) whose sum
  is a stage of its own (one multiplier plus a wide carry chain in one cycle missed 100 MHz on
  the ECP5: 90.8 MHz, 11.0 ns from ``m_reg`` through the multiplier and adder), and the adder
  tree over the taps is two stages (three levels after 64 multipliers spread over the chip: 95.9
  MHz, 10.4 ns, 7.8 ns of it routing), and every scale multiplier has its own registered copy of
  the mantissa (one ``m_reg`` net to 16 multipliers: 86.3 MHz, 11.6 ns, 7.1 ns routing), and the
  x / delta ``ready`` is a register (``full[buf]`` of the next cycle; its net drives every bank's
  write enable: 97.1 MHz, 10.3 ns, 8.6 ns routing).
* **Lanes**: the :class:`~rtl.unit.DPUUnit` with ``rand`` from ``rand_gens`` on-chip xorshift32
  generators (stepped once per beat entering the lanes).
* **Event serialiser**: of every beat leaving the lanes, the synapses with a non-zero pulse count
  leave on ``events`` as (row, col, count, neg), lowest column first (raster order overall),
  one per clock with back-pressure; a beat without events takes no cycle there. Beats with
  events wait in a ``EVQ_DEPTH``-deep FIFO first, whose registered ``w_rdy`` is the lanes'
  ``o.ready`` (the lanes' stall does not depend combinationally on ``events.ready``).

Engine pipeline (one group's last read issued in cycle 0):

====  ======================================================================================
 E0   read x banks at (buffer, b/P, g), delta banks at (buffer, b/P, r/L)
 E1   select delta lane ``r mod L`` of each bank (register)
 E2   P*L products ``delta * x`` (register: DSP output register)
 E3   adder tree over the P taps, first ceil(levels / 2) levels (register)
 E3h  the tree's other levels (register)
 E4   accumulate over the B/P words of the group (``acc = first ? sum : acc + sum``)
 E5   partial products ``S[chunk] * m``, one per DSP-sized chunk of S (register: DSP output;
      :func:`scale_chunks`: one 18 x 18 multiplier for the low 17 bits, the sign bits apart)
 E6   ``v = S * m``: the shifted partial products summed (register); chi memory read issued
 E7   ``(v + 2^(k-1)) >> k``, saturate to the increment range (register); chi read data
 E8   push {chi, inc, tags} into the FIFO in front of the lanes
====  ======================================================================================

Latency from a group's last read (E0) to its first event: ``FRONT_LATENCY`` (9) + 1 (FIFO) +
``rtl.unit.LATENCY`` (5) + 1 (event FIFO) + 1 (serialiser) = 17 cycles (:data:`EVENT_LATENCY`).
Throughput: one group (L synapse-updates) every ``B/P`` cycles, i.e. ``L*P/B`` synapse-updates
per clock (8 with the shipped spec), while the event stream keeps up (a beat with k events
occupies the serialiser k cycles; back-pressure on ``events`` stalls the lanes, then the engine
through its credits). Per mini-batch add the drain (:data:`DRAIN` cycles). Loading overlaps
computing (double buffer): a batch needs ``B*C/L`` x beats and ``B*R/L`` delta beats.

Control and status: ``scale`` (m) is sampled with the last delta beat of each batch (so it
travels with its batch through the double buffer); ``seed_load`` (a strobe, to be
used while ``status.busy`` is low) reseeds the generators from ``seed``; ``clear`` zeroes the
counters. ``status``: busy, pending (a full buffer waits), and the 32-bit counters events,
pulses, pmax_hits, inc_sat, batches. ``info``: the build parameters (read back by the bench).
"""
from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .spec import (COUNTER_BITS, RAND_SEED_STRIDE, RAND_WORD_BITS, RAND_ZERO_FIX, ROUNDING_MODES,
                   SpecError, TileSpec, clog2)
from .unit import LATENCY as LANE_LATENCY
from .unit import DPUUnit

FRONT_LATENCY = 9                        # stages E1..E8 and E3h
DSP_SIGNED_BITS = 18                     # ECP5 MULT18X18D: 18 x 18 signed (Lattice FPGA-TN-02205)


def scale_chunks(acc_bits: int) -> list[tuple[int, int]]:
    """Bit ranges [lo, hi) of S for the partial products of S * m: lower chunks are unsigned
    fields of DSP_SIGNED_BITS - 1 bits (zero-extended: one signed DSP operand each), the top chunk
    the signed rest (at most DSP_SIGNED_BITS bits). One chunk when S fits a DSP operand."""
    out, lo = [], 0
    while acc_bits - lo > DSP_SIGNED_BITS:
        out.append((lo, lo + DSP_SIGNED_BITS - 1))
        lo += DSP_SIGNED_BITS - 1
    return out + [(lo, acc_bits)]
EVQ_DEPTH = 4                            # engineering choice: beats with events queued before the serialiser
EVENT_LATENCY = FRONT_LATENCY + 1 + LANE_LATENCY + 1 + 1   # + FIFO, lanes, event FIFO, serialiser
DRAIN = EVENT_LATENCY + 2                # cycles from the last read to idle (no back-pressure)


def ubits(n: int) -> int:
    """Bits of an unsigned counter 0..n-1 (at least 1)."""
    return max(1, (int(n) - 1).bit_length())


TILE_INFO_LAYOUT = data.StructLayout({
    "rows": unsigned(16), "cols": unsigned(16), "batch": unsigned(16),
    "lanes": unsigned(8), "taps": unsigned(8),
    "x_bits": unsigned(8), "delta_bits": unsigned(8),
    "scale_bits": unsigned(8), "scale_shift": unsigned(8), "fifo_depth": unsigned(8),
    "chi_bits": unsigned(8), "frac_bits": unsigned(8), "inc_bits": unsigned(8),
    "round_bits": unsigned(8), "pmax": unsigned(16), "rounding": unsigned(2),
    "front_latency": unsigned(6), "lane_latency": unsigned(6),
})

STATUS_LAYOUT = data.StructLayout({
    "busy": unsigned(1), "pending": unsigned(1),
    "events": unsigned(COUNTER_BITS), "pulses": unsigned(COUNTER_BITS),
    "pmax_hits": unsigned(COUNTER_BITS), "inc_sat": unsigned(COUNTER_BITS),
    "batches": unsigned(COUNTER_BITS),
})


def event_layout(ts: TileSpec) -> data.StructLayout:
    return data.StructLayout({
        "row": unsigned(ubits(ts.rows)), "col": unsigned(ubits(ts.cols)),
        "count": unsigned(ts.chi_spec.pulse_bits), "neg": unsigned(1),
    })


def chi_word_layout(ts: TileSpec) -> data.ArrayLayout:
    return data.ArrayLayout(signed(ts.dpu.chi_bits), ts.lanes)


def chi_addr_bits(ts: TileSpec) -> int:
    return ubits(ts.groups)


def check_tile_spec(ts: TileSpec) -> TileSpec:
    if not isinstance(ts, TileSpec):
        raise TypeError(f"expected a TileSpec, got {type(ts).__name__}")
    if ts.fifo_depth < FRONT_LATENCY + 1:
        raise SpecError(f"fifo_depth {ts.fifo_depth} must be >= FRONT_LATENCY + 1 = {FRONT_LATENCY + 1} "
                        "for one group per clock")
    if ts.fifo_depth >= 256:
        raise SpecError("fifo_depth must be < 256")
    return ts


def _xorshift32(v):
    v = v ^ (v << 13)[:32]
    v = v ^ (v >> 17)
    return v ^ (v << 5)[:32]


class TileUnit(wiring.Component):
    """The whole DPU for one R x C tile (see the module docstring for blocks, stages, hazards).

    Ports (all from ``spec``):

    * ``x``: ``In(stream(ArrayLayout(signed(x_bits), L)))`` — activation codes, b-major
    * ``d``: ``In(stream(ArrayLayout(signed(delta_bits), L)))`` — error codes, b-major
    * ``events``: ``Out(stream(event_layout))`` — (row, col, count, neg)
    * ``chi_wr``: ``In(stream({addr, data: L chi}))``; ``chi_rd_addr``: ``In(stream(addr))``;
      ``chi_rd``: ``Out(stream(L chi))`` — the host port (idle only); word ``addr`` holds
      synapses (r, gL..gL+L-1) at ``addr = r*C/L + g``
    * ``scale``: ``In(scale_bits)``; ``seed``: ``In(32)``; ``seed_load``, ``clear``: ``In(1)``
    * ``status``: ``Out(STATUS_LAYOUT)``; ``info``: ``Out(TILE_INFO_LAYOUT)`` (constant)

    Latency: :data:`EVENT_LATENCY` = 17 cycles from a group's last read to its first event.
    Throughput: ``L*P/B`` synapse-updates per clock (8 with the shipped spec) plus :data:`DRAIN`
    cycles per mini-batch, while ``events`` keeps up.
    """

    front_latency = FRONT_LATENCY
    event_latency = EVENT_LATENCY

    def __init__(self, spec: TileSpec | None = None):
        self.spec = check_tile_spec(spec if spec is not None else TileSpec())
        ts = self.spec
        self.lanes_unit = DPUUnit(ts.chi_spec)
        aw = chi_addr_bits(ts)
        super().__init__({
            "x": In(stream.Signature(data.ArrayLayout(signed(ts.x_bits), ts.lanes))),
            "d": In(stream.Signature(data.ArrayLayout(signed(ts.delta_bits), ts.lanes))),
            "events": Out(stream.Signature(event_layout(ts))),
            "chi_wr": In(stream.Signature(data.StructLayout({"addr": unsigned(aw), "data": chi_word_layout(ts)}))),
            "chi_rd_addr": In(stream.Signature(unsigned(aw))),
            "chi_rd": Out(stream.Signature(chi_word_layout(ts))),
            "scale": In(unsigned(ts.scale_bits)),
            "seed": In(unsigned(32)), "seed_load": In(1), "clear": In(1),
            "status": Out(STATUS_LAYOUT),
            "info": Out(TILE_INFO_LAYOUT),
        })

    def elaborate(self, platform):
        ts, ch = self.spec, self.spec.chi_spec
        m = Module()
        R, C, B, L, P = ts.rows, ts.cols, ts.batch, ts.lanes, ts.taps
        NB = B // P                      # words per group (reads of one synapse group)
        CG, RG = C // L, R // L          # column groups, delta words per batch entry
        XHALF, DHALF = NB * CG, NB * RG  # words per buffer in each x / delta bank
        xb, db, cb = ts.x_bits, ts.delta_bits, ch.chi_bits

        info = self.info
        for name, val in (("rows", R), ("cols", C), ("batch", B), ("lanes", L), ("taps", P),
                          ("x_bits", xb), ("delta_bits", db), ("scale_bits", ts.scale_bits),
                          ("scale_shift", ts.scale_shift), ("fifo_depth", ts.fifo_depth),
                          ("chi_bits", cb), ("frac_bits", ch.frac_bits), ("inc_bits", ch.inc_bits),
                          ("round_bits", ch.round_bits), ("pmax", ch.pmax),
                          ("rounding", ROUNDING_MODES.index(ch.rounding)),
                          ("front_latency", FRONT_LATENCY), ("lane_latency", LANE_LATENCY)):
            m.d.comb += getattr(info, name).eq(val)

        # ---------------------------------------------------------------- input buffers + loaders
        xmem = [memory.Memory(shape=unsigned(L * xb), depth=2 * XHALF, init=[]) for _ in range(P)]
        dmem = [memory.Memory(shape=unsigned(L * db), depth=2 * DHALF, init=[]) for _ in range(P)]
        for p in range(P):
            m.submodules[f"xmem{p}"] = xmem[p]
            m.submodules[f"dmem{p}"] = dmem[p]
        xw = [mm.write_port() for mm in xmem]
        dw = [mm.write_port() for mm in dmem]
        xr = [mm.read_port() for mm in xmem]
        dr = [mm.read_port() for mm in dmem]

        xfull = Signal(2)
        dfull = Signal(2)
        clear_full = Signal()            # engine: the buffer rb has been read completely
        rb = Signal()                    # buffer the engine reads

        def loader(stream_in, wports, full, groups, half, tag):
            buf = Signal(name=f"{tag}_buf")
            g = Signal(ubits(groups), name=f"{tag}_g")
            p = Signal(ubits(P), name=f"{tag}_p")
            base = Signal(ubits(half), name=f"{tag}_base")   # (b / P) * groups
            last = (g == groups - 1) & (p == P - 1) & (base == (NB - 1) * groups)
            # ready is a register (timing: its net fans out to every bank's write enable):
            # ~full[buf] of the next cycle, computed below from the next-state values
            ok = Signal(name=f"{tag}_ok", init=1)
            m.d.comb += stream_in.ready.eq(ok)
            addr = Mux(buf, half, 0) + base + g
            take = stream_in.valid & ok
            for k in range(P):
                m.d.comb += [wports[k].addr.eq(addr), wports[k].data.eq(stream_in.payload.as_value()),
                             wports[k].en.eq(take & (p == k))]
            with m.If(take):
                m.d.sync += g.eq(g + 1)
                with m.If(g == groups - 1):
                    m.d.sync += [g.eq(0), p.eq(p + 1)]
                    with m.If(p == P - 1):
                        m.d.sync += [p.eq(0), base.eq(base + groups)]
                        with m.If(last):
                            m.d.sync += [base.eq(0), buf.eq(~buf)]
            return take & last, buf, ok

        x_done, xbuf, x_ok = loader(self.x, xw, xfull, CG, XHALF, "xl")
        d_done, dbuf, d_ok = loader(self.d, dw, dfull, RG, DHALF, "dl")
        for full, done, lbuf, ok, tag in ((xfull, x_done, xbuf, x_ok, "xl"), (dfull, d_done, dbuf, d_ok, "dl")):
            nxt = Signal(2, name=f"{tag}_full_next")
            for k in range(2):
                m.d.comb += nxt[k].eq(Mux(done & (lbuf == k), 1, Mux(clear_full & (rb == k), 0, full[k])))
            m.d.sync += [full.eq(nxt), ok.eq(~nxt.bit_select(lbuf ^ done, 1))]
        pending = xfull.bit_select(rb, 1) & dfull.bit_select(rb, 1)
        # the scale mantissa travels with its batch: sampled with the batch's last delta beat
        mbuf = [Signal(ts.scale_bits, name=f"mbuf{k}", reset_less=True) for k in range(2)]
        for k in range(2):
            with m.If(d_done & (dbuf == k)):
                m.d.sync += mbuf[k].eq(self.scale)

        # ---------------------------------------------------------------- chi memory, host port
        chimem = memory.Memory(shape=unsigned(L * cb), depth=ts.groups, init=[])
        m.submodules.chimem = chimem
        cr = chimem.read_port()
        cw = chimem.write_port()

        # ---------------------------------------------------------------- lanes and FIFO
        m.submodules.lanes = lanes = self.lanes_unit
        aw = chi_addr_bits(ts)
        rbits, gbits = ubits(R), ubits(CG)
        tag_w = aw + rbits + gbits
        q = fifo.SyncFIFO(width=L * (cb + ch.inc_bits) + tag_w, depth=ts.fifo_depth)
        tagq = fifo.SyncFIFO(width=tag_w, depth=LANE_LATENCY + 3)
        m.submodules.q, m.submodules.tagq = q, tagq

        # ---------------------------------------------------------------- engine FSM + issue
        idle = Signal()
        busy = Signal()
        m_reg = Signal(ts.scale_bits)
        r, r_lo, r_hi = Signal(rbits), Signal(ubits(L)), Signal(ubits(RG))
        g = Signal(gbits)
        bb = Signal(ubits(NB))
        xbase, dbase = Signal(ubits(XHALF)), Signal(ubits(DHALF))
        waddr = Signal(aw)
        inflight = Signal(range(ts.fifo_depth + 1))
        # registered credit (timing): inflight + level grows by at most 1 per cycle (one issue),
        # so "room for one more" computed a cycle early with a margin of 1 is still true now
        credit_ok = Signal()
        m.d.sync += credit_ok.eq((inflight + q.w_level + 1) < ts.fifo_depth)
        issue = Signal()
        push = Signal()
        host_active = Signal()
        rd_pending = Signal()
        drained = Signal()
        batch_end = Signal()

        with m.FSM(name="engine"):
            with m.State("IDLE"):
                m.d.comb += idle.eq(1)
                with m.If(pending & ~host_active):
                    m.d.sync += [m_reg.eq(Mux(rb, mbuf[1], mbuf[0])), r.eq(0), r_lo.eq(0), r_hi.eq(0), g.eq(0),
                                 bb.eq(0), xbase.eq(0), dbase.eq(0), waddr.eq(0)]
                    m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += issue.eq((bb != 0) | credit_ok)
                end_group = bb == NB - 1
                last_group = (r == R - 1) & (g == CG - 1)
                with m.If(issue):
                    m.d.sync += [bb.eq(bb + 1), xbase.eq(xbase + CG), dbase.eq(dbase + RG)]
                    with m.If(end_group):
                        m.d.sync += [bb.eq(0), xbase.eq(0), dbase.eq(0), waddr.eq(waddr + 1),
                                     g.eq(g + 1)]
                        with m.If(g == CG - 1):
                            m.d.sync += [g.eq(0), r.eq(r + 1), r_lo.eq(r_lo + 1)]
                            with m.If(r_lo == L - 1):
                                m.d.sync += [r_lo.eq(0), r_hi.eq(r_hi + 1)]
                        with m.If(last_group):
                            m.d.comb += clear_full.eq(1)
                            m.d.sync += rb.eq(~rb)
                            m.next = "DRAIN"
            with m.State("DRAIN"):
                with m.If(drained):
                    m.d.comb += batch_end.eq(1)
                    m.next = "IDLE"
        m.d.comb += busy.eq(~idle)

        with m.If(issue & (bb == 0)):
            m.d.sync += inflight.eq(inflight + 1 - push)
        with m.Elif(push):
            m.d.sync += inflight.eq(inflight - 1)

        # E0: read addresses
        xaddr = Mux(rb, XHALF, 0) + xbase + g
        daddr = Mux(rb, DHALF, 0) + dbase + r_hi
        for k in range(P):
            # read every cycle (data used only when valid): no enable fan-out from `issue`
            m.d.comb += [xr[k].addr.eq(xaddr), dr[k].addr.eq(daddr)]

        def stage(name, shape=1, reset_less=True):
            return Signal(shape, name=name, reset_less=reset_less)

        # valid bits reset; data registers need none
        v = [Signal(name=f"e{k}_valid") for k in range(FRONT_LATENCY + 1)]
        first1, last1 = stage("e1_first"), stage("e1_last")
        rlo1 = stage("e1_rlo", ubits(L))
        tag1 = stage("e1_tag", tag_w)
        tag_now = Cat(waddr, r, g)
        m.d.sync += [v[1].eq(issue)]
        m.d.sync += [first1.eq(bb == 0), last1.eq(bb == NB - 1), rlo1.eq(r_lo), tag1.eq(tag_now)]

        # E1: select the delta lane of each bank
        d2 = [stage(f"e2_d{k}", signed(db)) for k in range(P)]
        x2 = [[stage(f"e2_x{k}_{n}", signed(xb)) for n in range(L)] for k in range(P)]
        first2, last2, tag2 = stage("e2_first"), stage("e2_last"), stage("e2_tag", tag_w)
        m.d.sync += [v[2].eq(v[1]), first2.eq(first1), last2.eq(last1), tag2.eq(tag1)]
        for k in range(P):
            dword = data.View(data.ArrayLayout(signed(db), L), dr[k].data)
            xword = data.View(data.ArrayLayout(signed(xb), L), xr[k].data)
            m.d.sync += d2[k].eq(dword[rlo1])
            m.d.sync += [x2[k][n].eq(xword[n]) for n in range(L)]

        # E2: products (DSP), E3: adder tree over taps, E4: accumulate
        pb = ts.prod_bits
        prod3 = [[stage(f"e3_p{k}_{n}", signed(pb)) for n in range(L)] for k in range(P)]
        first3, last3, tag3 = stage("e3_first"), stage("e3_last"), stage("e3_tag", tag_w)
        m.d.sync += [v[3].eq(v[2]), first3.eq(first2), last3.eq(last2), tag3.eq(tag2)]
        for k in range(P):
            m.d.sync += [prod3[k][n].eq(d2[k] * x2[k][n]) for n in range(L)]
        def pairwise(terms):                           # one level of a balanced adder tree
            return [terms[i] + terms[i + 1] if i + 1 < len(terms) else terms[i]
                    for i in range(0, len(terms), 2)]

        # E3: the first ceil(levels / 2) levels of the adder tree over the taps (register),
        # E3h: the other levels (register): at most two adders in series per stage
        lv_a = (clog2(P) + 1) // 2
        n_mid = -(-P // (1 << lv_a))
        mid = [[stage(f"e3h_s{n}_{j}", signed(pb + lv_a)) for j in range(n_mid)] for n in range(L)]
        v3h = Signal(name="e3h_valid")
        first3h, last3h, tag3h = stage("e3h_first"), stage("e3h_last"), stage("e3h_tag", tag_w)
        m.d.sync += [v3h.eq(v[3]), first3h.eq(first3), last3h.eq(last3), tag3h.eq(tag3)]
        for n in range(L):
            terms = [prod3[k][n] for k in range(P)]
            for _ in range(lv_a):
                terms = pairwise(terms)
            m.d.sync += [mid[n][j].eq(t) for j, t in enumerate(terms)]
        sum4 = [stage(f"e4_s{n}", signed(ts.tap_sum_bits)) for n in range(L)]
        first4, last4, tag4 = stage("e4_first"), stage("e4_last"), stage("e4_tag", tag_w)
        m.d.sync += [v[4].eq(v3h), first4.eq(first3h), last4.eq(last3h), tag4.eq(tag3h)]
        for n in range(L):
            terms = list(mid[n])
            while len(terms) > 1:
                terms = pairwise(terms)
            m.d.sync += sum4[n].eq(terms[0])
        acc = [stage(f"e5_acc{n}", signed(ts.acc_bits)) for n in range(L)]
        tag5 = stage("e5_tag", tag_w)
        m.d.sync += v[5].eq(v[4] & last4)
        with m.If(v[4]):
            for n in range(L):
                m.d.sync += acc[n].eq(Mux(first4, sum4[n], acc[n] + sum4[n]))
            with m.If(last4):
                m.d.sync += tag5.eq(tag4)

        # E5: partial products of S * m, one per DSP-sized chunk of S (register: DSP output)
        chunks = scale_chunks(ts.acc_bits)
        part6 = [[stage(f"e6_p{n}_{j}", signed(hi - lo + ts.scale_bits + 1 + (hi != ts.acc_bits)))
                  for j, (lo, hi) in enumerate(chunks)] for n in range(L)]
        tag6 = stage("e6_tag", tag_w)
        m.d.sync += [v[6].eq(v[5]), tag6.eq(tag5)]
        # m_reg is constant while a batch runs (loaded on the way to RUN, >= 5 cycles before E5's
        # first use): one registered copy per multiplier, so no net fans out to all of them
        m_rep = [[stage(f"e5_m{n}_{j}", ts.scale_bits) for j in range(len(chunks))] for n in range(L)]
        for n in range(L):
            for j, (lo, hi) in enumerate(chunks):
                m.d.sync += m_rep[n][j].eq(m_reg)
                mval = Cat(m_rep[n][j], Const(0, 1)).as_signed()
                top = hi == ts.acc_bits
                # the top chunk carries the sign; a lower chunk is an unsigned field (zero-extended)
                piece = acc[n][lo:hi].as_signed() if top else Cat(acc[n][lo:hi], Const(0, 1)).as_signed()
                m.d.sync += part6[n][j].eq(piece * mval)

        # E6: v = sum of the shifted partial products (register); chi read issued
        mul7 = [stage(f"e7_v{n}", signed(ts.scaled_bits)) for n in range(L)]
        tag7 = stage("e7_tag", tag_w)
        m.d.sync += [v[7].eq(v[6]), tag7.eq(tag6)]
        for n in range(L):
            total = part6[n][0]
            for j in range(1, len(chunks)):
                total = total + (part6[n][j] << chunks[j][0])
            m.d.sync += mul7[n].eq(total)
        host_rd = Signal()
        m.d.comb += [
            cr.addr.eq(Mux(busy, tag6[:aw], self.chi_rd_addr.payload)),
            cr.en.eq(Mux(busy, v[6], host_rd)),
        ]

        # E7: round half up, saturate; chi data
        K = ts.scale_shift
        ib = ch.inc_bits
        inc8 = [stage(f"e8_inc{n}", signed(ib)) for n in range(L)]
        sat8 = stage("e8_sat", L)
        chi8 = stage("e8_chi", L * cb)
        tag8 = stage("e8_tag", tag_w)
        m.d.sync += [v[8].eq(v[7]), tag8.eq(tag7), chi8.eq(cr.data)]
        for n in range(L):
            rounded = (mul7[n] + (1 << (K - 1))) >> K if K else mul7[n]
            rw = Signal(signed(ts.scaled_bits + 1), name=f"e7_r{n}")
            m.d.comb += rw.eq(rounded)
            upper = rw[ib - 1:]
            in_range = upper.all() | ~upper.any()
            m.d.sync += [
                inc8[n].eq(Mux(in_range, rw[:ib], Mux(rw[-1], ch.inc_min, ch.inc_max))),
                sat8[n].eq(~in_range),
            ]

        # E8: push into the FIFO in front of the lanes
        m.d.comb += [push.eq(v[8]), q.w_en.eq(v[8]),
                     q.w_data.eq(Cat(chi8, *inc8, tag8))]

        # ---------------------------------------------------------------- lanes feed
        G = ts.rand_gens
        rng = [Signal(RAND_WORD_BITS, name=f"rand{k}", reset_less=True) for k in range(G)]
        rword = Cat(*rng) if G else None
        q_chi = q.r_data[:L * cb]
        q_inc = q.r_data[L * cb:L * (cb + ib)]
        q_tag = q.r_data[L * (cb + ib):]
        li = lanes.i
        m.d.comb += [li.valid.eq(q.r_rdy), q.r_en.eq(li.ready)]
        for n in range(L):
            m.d.comb += [li.payload[n].chi.eq(q_chi[n * cb:(n + 1) * cb]),
                         li.payload[n].inc.eq(q_inc[n * ib:(n + 1) * ib])]
            if G:
                Rb = ch.round_bits
                m.d.comb += li.payload[n].rand.eq(rword[n * Rb:(n + 1) * Rb])
        accept_in = li.valid & li.ready
        m.d.comb += [tagq.w_en.eq(accept_in), tagq.w_data.eq(q_tag)]
        with m.If(self.seed_load):
            for k in range(G):
                s = Signal(32, name=f"seed{k}")
                m.d.comb += s.eq(self.seed + ((k * RAND_SEED_STRIDE) & 0xFFFFFFFF))
                m.d.sync += rng[k].eq(Mux(s == 0, RAND_ZERO_FIX, s))
        with m.Elif(accept_in):
            for k in range(G):
                m.d.sync += rng[k].eq(_xorshift32(rng[k]))

        # ---------------------------------------------------------------- write-back + events
        lo = lanes.o
        # beats with events wait in a small FIFO (its w_rdy is a registered compare, so the lanes'
        # stall does not hang on the event port's ready); the serialiser emits one event a clock
        pbits = ch.pulse_bits
        evq = fifo.SyncFIFO(width=L * (pbits + 1) + rbits + gbits, depth=EVQ_DEPTH)
        m.submodules.evq = evq
        t_addr, t_r, t_g = tagq.r_data[:aw], tagq.r_data[aw:aw + rbits], tagq.r_data[aw + rbits:]
        nz = Cat(*[lo.payload[n].pulses != 0 for n in range(L)])
        m.d.comb += lo.ready.eq(evq.w_rdy)
        out_accept = lo.valid & lo.ready
        m.d.comb += [
            tagq.r_en.eq(out_accept),
            evq.w_en.eq(out_accept & nz.any()),
            evq.w_data.eq(Cat(*[lo.payload[n].pulses for n in range(L)],
                              *[lo.payload[n].neg for n in range(L)], t_r, t_g)),
        ]
        hold = Signal()
        h_mask = Signal(L)
        h_p = Signal(L * pbits, reset_less=True)
        h_neg = Signal(L, reset_less=True)
        h_r = Signal(rbits, reset_less=True)
        h_g = Signal(gbits, reset_less=True)
        idx = Signal(ubits(L))
        for n in reversed(range(L)):
            idx_n = Const(n, ubits(L))
            idx = Mux(h_mask[n], idx_n, idx)
        sel = Signal(ubits(L))
        m.d.comb += sel.eq(idx)
        single = (h_mask & (h_mask - 1)) == 0
        ev = self.events
        m.d.comb += [
            ev.valid.eq(hold),
            ev.payload.row.eq(h_r),
            ev.payload.col.eq(h_g * L + sel),
            ev.payload.count.eq(h_p.word_select(sel, pbits)),
            ev.payload.neg.eq(h_neg.bit_select(sel, 1)),
        ]
        load = evq.r_rdy & (~hold | (ev.ready & single))
        m.d.comb += evq.r_en.eq(load)
        q_p = evq.r_data[:L * pbits]
        q_neg = evq.r_data[L * pbits:L * (pbits + 1)]
        q_r = evq.r_data[L * (pbits + 1):L * (pbits + 1) + rbits]
        q_g = evq.r_data[L * (pbits + 1) + rbits:]
        with m.If(ev.valid & ev.ready):
            m.d.sync += h_mask.eq(h_mask & ~(Const(1, L) << sel))
            with m.If(single):
                m.d.sync += hold.eq(0)
        with m.If(load):
            m.d.sync += [h_mask.eq(Cat(*[q_p[n * pbits:(n + 1) * pbits] != 0 for n in range(L)])),
                         hold.eq(1), h_p.eq(q_p), h_neg.eq(q_neg), h_r.eq(q_r), h_g.eq(q_g)]

        # chi write port: engine write-back while busy, else the host
        chi_out = Cat(*[lo.payload[n].chi for n in range(L)])
        host_wr = self.chi_wr.valid & self.chi_wr.ready
        m.d.comb += [
            cw.addr.eq(Mux(busy, t_addr, self.chi_wr.payload.addr)),
            cw.data.eq(Mux(busy, chi_out, self.chi_wr.payload.data.as_value())),
            cw.en.eq(Mux(busy, out_accept, host_wr)),
        ]

        # host port (idle only; a pending host request holds off the next batch)
        m.d.comb += [
            self.chi_wr.ready.eq(idle),
            self.chi_rd_addr.ready.eq(idle & (~rd_pending | self.chi_rd.ready)),
            host_rd.eq(self.chi_rd_addr.valid & self.chi_rd_addr.ready),
            self.chi_rd.valid.eq(rd_pending),
            self.chi_rd.payload.eq(cr.data),
            host_active.eq(self.chi_wr.valid | self.chi_rd_addr.valid | rd_pending),
        ]
        with m.If(host_rd):
            m.d.sync += rd_pending.eq(1)
        with m.Elif(self.chi_rd.ready):
            m.d.sync += rd_pending.eq(0)

        # drained: nothing of this batch left anywhere
        m.d.comb += drained.eq((inflight == 0) & ~q.r_rdy & ~tagq.r_rdy & ~evq.r_rdy & ~hold & ~v[1]
                               & ~v[5] & ~v[6] & ~v[7] & ~v[8] & ~issue)

        # ---------------------------------------------------------------- counters / status
        cnt = {k: Signal(COUNTER_BITS, name=f"cnt_{k}") for k in
               ("events", "pulses", "pmax_hits", "inc_sat", "batches")}

        def popcount(bits):
            return sum(bits[n] for n in range(len(bits)))

        with m.If(self.clear):
            m.d.sync += [c.eq(0) for c in cnt.values()]
        with m.Else():
            with m.If(out_accept):
                m.d.sync += [
                    cnt["events"].eq(cnt["events"] + popcount(nz)),
                    cnt["pulses"].eq(cnt["pulses"] + sum(lo.payload[n].pulses for n in range(L))),
                    cnt["pmax_hits"].eq(cnt["pmax_hits"] + popcount(
                        Cat(*[lo.payload[n].pulses == ch.pmax for n in range(L)]))),
                ]
            with m.If(push):
                m.d.sync += cnt["inc_sat"].eq(cnt["inc_sat"] + popcount(sat8))
            with m.If(batch_end):
                m.d.sync += cnt["batches"].eq(cnt["batches"] + 1)

        st = self.status
        m.d.comb += [st.busy.eq(busy), st.pending.eq(pending)]
        m.d.comb += [getattr(st, k).eq(c) for k, c in cnt.items()]
        return m


class TileSerialWrapper(wiring.Component):
    """Synthesis wrapper of :class:`TileUnit`: every input payload (x, d, chi_wr, chi_rd_addr,
    scale, seed) comes from one shift register loaded ``io_bits`` at a time (``si`` /
    ``shift_in``); the handshake and strobe pins are registered; every output (events,
    chi_rd, the ready signals, status) is captured into an output shift register (``capture``)
    and shifted out on ``so`` (``shift_out``). So every pin is registered and nothing of the
    unit can be optimised away: the reported Fmax is the unit's."""

    CTL = ("x_valid", "d_valid", "chi_wr_valid", "chi_rd_addr_valid", "events_ready",
           "chi_rd_ready", "seed_load", "clear")

    def __init__(self, spec: TileSpec | None = None, io_bits: int = 8):
        self.unit = TileUnit(spec)
        if not isinstance(io_bits, int) or not 1 <= io_bits <= 32:
            raise ValueError(f"io_bits must be an integer in [1, 32], got {io_bits!r}")
        self.io_bits = io_bits
        super().__init__({"si": In(io_bits), "shift_in": In(1), "ctl": In(len(self.CTL)),
                          "capture": In(1), "shift_out": In(1), "so": Out(io_bits)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.unit = u = self.unit
        w = self.io_bits
        ins = [u.x.payload.as_value(), u.d.payload.as_value(), u.chi_wr.payload.as_value(),
               u.chi_rd_addr.payload, u.scale, u.seed]
        in_w = sum(len(v) for v in ins)
        in_sr = Signal(in_w + (-in_w) % w)
        si, sin, ctl, cap, sout = (Signal.like(x) for x in (self.si, self.shift_in, self.ctl,
                                                             self.capture, self.shift_out))
        m.d.sync += [si.eq(self.si), sin.eq(self.shift_in), ctl.eq(self.ctl), cap.eq(self.capture),
                     sout.eq(self.shift_out)]
        with m.If(sin):
            m.d.sync += in_sr.eq(Cat(in_sr[w:], si))
        m.d.comb += Cat(*ins).eq(in_sr[:in_w])
        c = dict(zip(self.CTL, ctl))
        m.d.comb += [u.x.valid.eq(c["x_valid"]), u.d.valid.eq(c["d_valid"]),
                     u.chi_wr.valid.eq(c["chi_wr_valid"]), u.chi_rd_addr.valid.eq(c["chi_rd_addr_valid"]),
                     u.events.ready.eq(c["events_ready"]), u.chi_rd.ready.eq(c["chi_rd_ready"]),
                     u.seed_load.eq(c["seed_load"]), u.clear.eq(c["clear"])]
        outs = Cat(u.events.payload.as_value(), u.events.valid, u.chi_rd.payload.as_value(),
                   u.chi_rd.valid, u.x.ready, u.d.ready, u.chi_wr.ready, u.chi_rd_addr.ready,
                   u.status.as_value())
        out_sr = Signal(len(outs) + (-len(outs)) % w)
        with m.If(cap):
            m.d.sync += out_sr.eq(outs)
        with m.Elif(sout):
            m.d.sync += out_sr.eq(out_sr[w:])
        m.d.sync += self.so.eq(out_sr[:w])
        return m
