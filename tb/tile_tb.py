"""cocotb testbench of the whole unit (``rtl.tile.TileUnit``): drivers for the x / delta streams,
a monitor of the event stream, a scoreboard against the transaction-level model
(``tb.tile_models``: the golden model or a broken one), host-port chi load/dump.

The spec is read back from the design's ``info`` port, so one bench serves every parameter set.
Environment (set by ``tb/test_dpu_tile.py``): ``TILE_TB_MODEL`` (``golden`` or a broken model),
``TILE_TB_BATCHES`` (random batches per test), ``TILE_TB_SEED``.
"""
from __future__ import annotations

import collections
import os

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly, RisingEdge, Timer

from rtl.spec import ROUNDING_MODES, DPUSpec, TileSpec
from rtl.tile import DRAIN, STATUS_LAYOUT, TILE_INFO_LAYOUT, chi_addr_bits, event_layout
from tb.tile_models import make_tile_model

COUNTERS = ("events", "pulses", "pmax_hits", "inc_sat", "batches")


def _fields(word: int, layout) -> dict:
    return {name: (word >> f.offset) & ((1 << f.shape.width) - 1) for name, f in layout}


def _pack(vals, bits: int) -> int:
    word, mask = 0, (1 << bits) - 1
    for n, v in enumerate(vals):
        word |= (int(v) & mask) << (n * bits)
    return word


def _unpack(word: int, bits: int, n: int) -> np.ndarray:
    out = np.empty(n, np.int64)
    for k in range(n):
        v = (word >> (k * bits)) & ((1 << bits) - 1)
        out[k] = v - (1 << bits) if v >> (bits - 1) else v
    return out


async def read_spec(dut) -> tuple[TileSpec, dict]:
    """The design's parameters from its constant ``info`` port; checks the port widths."""
    await Timer(1, "ns")
    g = _fields(dut.info.value.to_unsigned(), TILE_INFO_LAYOUT)
    dpu = DPUSpec(lanes=g["lanes"], chi_bits=g["chi_bits"], frac_bits=g["frac_bits"],
                  inc_bits=g["inc_bits"], round_bits=g["round_bits"], pmax=g["pmax"],
                  rounding=ROUNDING_MODES[g["rounding"]])
    ts = TileSpec(rows=g["rows"], cols=g["cols"], batch=g["batch"], lanes=g["lanes"], taps=g["taps"],
                  x_bits=g["x_bits"], delta_bits=g["delta_bits"], scale_bits=g["scale_bits"],
                  scale_shift=g["scale_shift"], fifo_depth=g["fifo_depth"], dpu=dpu)
    assert len(dut.x__payload) == ts.lanes * ts.x_bits, "x.payload width"
    assert len(dut.d__payload) == ts.lanes * ts.delta_bits, "d.payload width"
    assert len(dut.chi_rd__payload) == ts.lanes * ts.dpu.chi_bits, "chi_rd.payload width"
    assert len(dut.events__payload) == event_layout(ts).size, "events.payload width"
    assert len(dut.scale) == ts.scale_bits, "scale width"
    return ts, g


def status(dut) -> dict:
    return _fields(dut.status.value.to_unsigned(), STATUS_LAYOUT)


class Source:
    """Drives one valid/ready stream: random idle cycles, holds a beat until accepted, junk on the
    payload while idle. A queued item is (payload, hook); hook() runs when the beat is offered."""

    def __init__(self, dut, prefix: str, rng, idle: float):
        self.valid = getattr(dut, f"{prefix}__valid")
        self.ready = getattr(dut, f"{prefix}__ready")
        self.payload = getattr(dut, f"{prefix}__payload")
        self.dut, self.rng, self.idle = dut, rng, idle
        self.queue: collections.deque = collections.deque()
        self.accepted = 0
        self.width = len(self.payload)

    async def run(self):
        cur = None
        while True:
            await FallingEdge(self.dut.clk)
            if cur is None and self.queue and self.rng.random() >= self.idle:
                cur = self.queue.popleft()
                self.payload.value = cur[0]
                if cur[1] is not None:
                    cur[1]()
                self.valid.value = 1
            elif cur is None:
                self.valid.value = 0
                junk = int.from_bytes(self.rng.bytes(self.width // 8 + 1), "little")
                self.payload.value = junk & ((1 << self.width) - 1)
            await ReadOnly()
            if cur is not None and self.ready.value == 1:
                self.accepted += 1
                cur = None


class EventMonitor:
    """Sink of ``events``: random back-pressure; captures (row, col, count, neg) on valid & ready;
    checks the stream rule (a stalled valid event holds its payload)."""

    def __init__(self, dut, ts: TileSpec, rng, backpressure: float, on_event):
        self.dut, self.rng, self.bp, self.on_event = dut, rng, backpressure, on_event
        self.layout = event_layout(ts)
        self.seen = 0
        self.protocol_errors: list[str] = []

    async def run(self):
        dut, held, cycle = self.dut, None, 0
        while True:
            await FallingEdge(dut.clk)
            dut.events__ready.value = int(self.rng.random() >= self.bp)
            await ReadOnly()
            cycle += 1
            valid, ready = dut.events__valid.value == 1, dut.events__ready.value == 1
            word = dut.events__payload.value.to_unsigned() if valid else None
            if held is not None and (not valid or word != held):
                self.protocol_errors.append(f"cycle {cycle}: stalled event changed or dropped")
            held = None
            if valid and ready:
                f = _fields(word, self.layout)
                self.on_event((f["row"], f["col"], f["count"], bool(f["neg"])))
                self.seen += 1
            elif valid:
                held = word


class Scoreboard:
    """In-order comparison of monitored events against the model's predictions."""

    def __init__(self, dut, model, max_report: int = 5):
        self.dut, self.model, self.max_report = dut, model, max_report
        self.expected: collections.deque = collections.deque()
        self.checked = self.mismatches = 0
        self.errors: list[str] = []

    def expect_batch(self, x, d, m):
        ev = self.model.batch(x, d, m)
        self.expected.extend((int(e["row"]), int(e["col"]), int(e["count"]), bool(e["neg"])) for e in ev)
        return ev

    def got(self, ev):
        self.checked += 1
        if not self.expected:
            self._error(f"unexpected event {ev}")
            return
        want = self.expected.popleft()
        if want != ev:
            self.mismatches += 1
            self._error(f"event mismatch: got (row, col, count, neg) = {ev}, model {self.model.name} says {want}")

    def _error(self, msg):
        if len(self.errors) < self.max_report:
            self.dut._log.error(msg)
        self.errors.append(msg)

    def check_done(self):
        assert not self.errors, (f"{len(self.errors)} scoreboard errors ({self.mismatches} event "
                                 f"mismatches) in {self.checked} events; first: {self.errors[0]}")
        assert not self.expected, f"{len(self.expected)} expected events never came out"


async def setup(dut):
    ts, info = await read_spec(dut)
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    for name in ("x__valid", "d__valid", "events__ready", "chi_wr__valid", "chi_rd_addr__valid",
                 "chi_rd__ready", "scale", "seed", "seed_load", "clear"):
        getattr(dut, name).value = 0
    await ClockCycles(dut.clk, 3)
    await FallingEdge(dut.clk)
    dut.rst.value = 0
    return ts, info


async def strobe(dut, name: str, **values):
    await FallingEdge(dut.clk)
    for k, v in values.items():
        getattr(dut, k).value = v
    getattr(dut, name).value = 1
    await FallingEdge(dut.clk)
    getattr(dut, name).value = 0


async def wait_idle(dut, batches: int | None = None, limit: int = 1_000_000):
    for _ in range(limit):
        await RisingEdge(dut.clk)
        await ReadOnly()
        s = status(dut)
        if not s["busy"] and not s["pending"] and (batches is None or s["batches"] == batches):
            return
    raise AssertionError(f"unit not idle after {limit} cycles: {status(dut)}")


async def chi_load(dut, ts: TileSpec, chi: np.ndarray, rng, idle: float = 0.0):
    """Host port: write every chi word (random idle cycles between beats)."""
    aw, L, cb = chi_addr_bits(ts), ts.lanes, ts.dpu.chi_bits
    words = chi.reshape(ts.groups, L)
    src = Source(dut, "chi_wr", rng, idle)
    for a in range(ts.groups):
        src.queue.append((a | (_pack(words[a], cb) << aw), None))
    task = cocotb.start_soon(src.run())
    while src.accepted < ts.groups:
        await RisingEdge(dut.clk)
    task.cancel()
    await FallingEdge(dut.clk)
    dut.chi_wr__valid.value = 0


async def chi_dump(dut, ts: TileSpec, rng, idle: float = 0.0, backpressure: float = 0.0) -> np.ndarray:
    """Host port: read every chi word, requests and responses concurrently, with idle cycles on
    the request side and back-pressure on the response side."""
    L, cb = ts.lanes, ts.dpu.chi_bits
    src = Source(dut, "chi_rd_addr", rng, idle)
    src.queue.extend((a, None) for a in range(ts.groups))
    got: list[np.ndarray] = []

    async def sink():
        while True:
            await FallingEdge(dut.clk)
            dut.chi_rd__ready.value = int(rng.random() >= backpressure)
            await ReadOnly()
            if dut.chi_rd__valid.value == 1 and dut.chi_rd__ready.value == 1:
                got.append(_unpack(dut.chi_rd__payload.value.to_unsigned(), cb, L))

    t1, t2 = cocotb.start_soon(src.run()), cocotb.start_soon(sink())
    for _ in range(ts.groups * 40 + 100):
        await RisingEdge(dut.clk)
        if len(got) >= ts.groups:
            break
    t1.cancel()
    t2.cancel()
    await FallingEdge(dut.clk)
    dut.chi_rd_addr__valid.value = 0
    dut.chi_rd__ready.value = 0
    assert len(got) == ts.groups, f"chi dump returned {len(got)} of {ts.groups} words"
    return np.concatenate(got).reshape(ts.rows, ts.cols)


def random_batches(ts: TileSpec, n: int, rng, kinds=("random", "sparse", "small", "extreme")):
    """n (x, delta, m) triples of mixed kinds; m log-uniform over the mantissa range."""
    B, R, C = ts.batch, ts.rows, ts.cols
    xl, dl = 1 << (ts.x_bits - 1), 1 << (ts.delta_bits - 1)
    out = []
    for k in range(n):
        kind = kinds[rng.integers(0, len(kinds))]
        if kind == "random":
            x, d = rng.integers(-xl, xl, (B, C)), rng.integers(-dl, dl, (B, R))
        elif kind == "sparse":                       # ReLU-like activations, sparse errors
            x = np.maximum(rng.integers(-xl, xl, (B, C)), 0)
            d = rng.integers(-dl, dl, (B, R)) * (rng.random((B, R)) < 0.3)
        elif kind == "small":
            x, d = rng.integers(-3, 4, (B, C)), rng.integers(-3, 4, (B, R))
        else:                                        # edge codes: both extremes, 0, +-1
            x = rng.choice([-xl, xl - 1, -(xl - 1), 0, 1, -1], (B, C))
            d = rng.choice([-dl, dl - 1, -(dl - 1), 0, 1, -1], (B, R))
        r = rng.random()
        m = 0 if r < 0.05 else ts.scale_max if r < 0.15 else int(np.exp(rng.uniform(0, np.log(ts.scale_max + 1))))
        out.append((x.astype(np.int64), d.astype(np.int64), min(m, ts.scale_max)))
    return out


def random_chi(ts: TileSpec, rng, extreme: float = 0.1) -> np.ndarray:
    cm = ts.chi_spec.chi_max
    one = 1 << ts.dpu.frac_bits
    chi = rng.integers(-min(cm, 2 * ts.dpu.pmax * one), min(cm, 2 * ts.dpu.pmax * one) + 1, (ts.rows, ts.cols))
    e = rng.random(chi.shape) < extreme
    chi[e] = rng.choice([cm, -cm, cm - 1, -cm + 1, one - 1, -(one - 1), 0], e.sum())
    return chi.astype(np.int64)


async def run_batches(dut, batches, idle: float, backpressure: float, seed: int, *,
                      chi0: np.ndarray | None = None, rand_seed: int | None = None,
                      dump: bool = True, setup_done=None):
    """Drive ``batches`` through the unit and check events, counters and (``dump``) chi."""
    ts, info = setup_done if setup_done is not None else await setup(dut)
    rng = np.random.default_rng(seed)
    model = make_tile_model(os.environ.get("TILE_TB_MODEL", "golden"), ts)
    if rand_seed is not None:
        await strobe(dut, "seed_load", seed=rand_seed)
    model.load_seed(rand_seed or 0)
    if chi0 is not None:
        await chi_load(dut, ts, chi0, rng, idle)
        model.load_chi(chi0)
    base = status(dut)["batches"]
    model.counters.batches = base
    sb = Scoreboard(dut, model)
    xs = Source(dut, "x", rng, idle)
    ds = Source(dut, "d", rng, idle)
    L = ts.lanes
    for x, d, m in batches:
        sb.expect_batch(x, d, m)
        for b in range(ts.batch):
            for g in range(ts.cols // L):
                xs.queue.append((_pack(x[b, g * L:(g + 1) * L], ts.x_bits), None))
            for h in range(ts.rows // L):
                def hook(m=m):
                    dut.scale.value = m
                ds.queue.append((_pack(d[b, h * L:(h + 1) * L], ts.delta_bits), hook))
    mon = EventMonitor(dut, ts, rng, backpressure, sb.got)
    tasks = [cocotb.start_soon(t.run()) for t in (xs, ds, mon)]
    n_ev = len(sb.expected)
    await wait_idle(dut, base + len(batches))
    await ClockCycles(dut.clk, 4)
    for t in tasks:
        t.cancel()
    await FallingEdge(dut.clk)
    for name in ("x__valid", "d__valid", "events__ready"):
        getattr(dut, name).value = 0
    assert not mon.protocol_errors, mon.protocol_errors[:3]
    sb.check_done()
    assert sb.checked == n_ev
    st = status(dut)
    want = model.counters.as_dict()
    bad = {k: (st[k], want[k]) for k in COUNTERS if st[k] != want[k]}
    assert not bad, f"status counters (rtl, model) differ: {bad}"
    if dump:
        chi = await chi_dump(dut, ts, rng, idle, backpressure)
        diff = np.argwhere(chi != model.chi)
        assert diff.size == 0, (f"chi mismatch in {len(diff)} synapses; first {tuple(diff[0])}: "
                                f"rtl {chi[tuple(diff[0])]} model {model.chi[tuple(diff[0])]} "
                                f"(model {model.name})")
    dut._log.info(f"{len(batches)} batches ({len(batches) * ts.rows * ts.cols} synapse-updates), "
                  f"{n_ev} events matched model {model.name}; idle={idle} backpressure={backpressure}")
    return ts, model


def _seed() -> int:
    return int(os.environ.get("TILE_TB_SEED", "1"))


@cocotb.test()
async def info_port_matches_ports(dut):
    """The info port decodes to a valid TileSpec whose widths match the ports."""
    ts, info = await read_spec(dut)
    assert info["front_latency"] >= 1 and info["lane_latency"] >= 1
    dut._log.info(f"design spec: {ts}")


@cocotb.test()
async def chi_load_dump(dut):
    """Host port: load random chi (edge values included), dump it back under idle cycles and
    back-pressure; the engine's ports stay quiet."""
    ts, _ = await setup(dut)
    rng = np.random.default_rng(_seed() + 11)
    chi = random_chi(ts, rng, extreme=0.3)
    await chi_load(dut, ts, chi, rng, 0.3)
    got = await chi_dump(dut, ts, rng, 0.3, 0.5)
    assert np.array_equal(got, chi), "chi dump differs from what was loaded"
    await ReadOnly()
    assert dut.events__valid.value == 0 and status(dut)["batches"] == 0


@cocotb.test()
@cocotb.parametrize(idle=[0.0, 0.3], backpressure=[0.0, 0.5])
async def random_batches_stream(dut, idle, backpressure):
    """Random batches (mixed kinds and scales) from a loaded random chi, with idle cycles on the
    inputs and back-pressure on the events; events, counters and the chi dump checked."""
    ts, _ = await read_spec(dut)
    rng = np.random.default_rng(_seed() * 100 + int(idle * 10) * 7 + int(backpressure * 10))
    n = int(os.environ.get("TILE_TB_BATCHES", "6"))
    await run_batches(dut, random_batches(ts, n, rng), idle, backpressure, _seed() + 5,
                      chi0=random_chi(ts, rng), rand_seed=int(rng.integers(0, 2 ** 32)))


@cocotb.test()
async def edge_values(dut):
    """chi at the saturation limits with all-zero batches (PMAX events from chi alone), extreme
    codes at the largest scale (increment saturation where the widths allow it, PMAX), scale 0,
    zero x with non-zero delta and vice versa."""
    ts, info = await setup(dut)
    rng = np.random.default_rng(_seed() + 3)
    B, R, C = ts.batch, ts.rows, ts.cols
    xl, dl = 1 << (ts.x_bits - 1), 1 << (ts.delta_bits - 1)
    cm = ts.chi_spec.chi_max
    chi0 = rng.choice([cm, -cm, cm - 1, -cm + 1, 0], (R, C))
    z = lambda n: np.zeros((B, n), np.int64)  # noqa: E731
    batches = [
        (z(C), z(R), ts.scale_max),                                   # all zero
        (np.full((B, C), -xl), np.full((B, R), -dl), ts.scale_max),  # largest positive sum
        (np.full((B, C), -xl), np.full((B, R), dl - 1), ts.scale_max),  # largest negative sum
        (np.full((B, C), xl - 1), np.full((B, R), dl - 1), 0),       # scale 0
        (z(C), rng.integers(-dl, dl, (B, R)), ts.scale_max),
        (rng.integers(-xl, xl, (B, C)), z(R), ts.scale_max),
        (z(C), z(R), 1),
    ]
    ts, model = await run_batches(dut, batches, 0.2, 0.3, _seed() + 4, chi0=chi0, rand_seed=0,
                                  setup_done=(ts, info))
    assert model.counters.pmax_hits > 0
    can_sat = (B * 2 ** (ts.prod_bits - 2) * ts.scale_max) >> ts.scale_shift > ts.chi_spec.inc_max
    assert (model.counters.inc_sat > 0) == can_sat


@cocotb.test()
async def seed_clear_and_reload(dut):
    """Counters clear, the generators reseed between batches, chi reloads between batches."""
    ts, info = await setup(dut)
    rng = np.random.default_rng(_seed() + 21)
    await run_batches(dut, random_batches(ts, 2, rng), 0.1, 0.1, 7, chi0=random_chi(ts, rng),
                      rand_seed=123, setup_done=(ts, info), dump=False)
    await strobe(dut, "clear")
    await ReadOnly()
    st = status(dut)
    assert all(st[k] == 0 for k in COUNTERS), st
    await run_batches(dut, random_batches(ts, 2, rng), 0.1, 0.1, 8, chi0=random_chi(ts, rng),
                      rand_seed=0xFFFFFFFF, setup_done=(ts, info))


@cocotb.test()
async def full_rate_throughput(dut):
    """No idle, no back-pressure, zero scale (no events): cycles per batch within the documented
    bound max(compute + DRAIN, loading) + slack; the host port is refused while busy."""
    ts, info = await setup(dut)
    n = 4
    B, R, C, L, P = ts.batch, ts.rows, ts.cols, ts.lanes, ts.taps
    rng = np.random.default_rng(1)
    await chi_load(dut, ts, np.zeros((R, C), np.int64), rng)     # no events from an old chi
    xs, ds = Source(dut, "x", rng, 0.0), Source(dut, "d", rng, 0.0)
    for _ in range(n):
        for b in range(B):
            xs.queue.extend((_pack(rng.integers(-9, 9, L), ts.x_bits), None) for _ in range(C // L))
            ds.queue.extend((_pack(rng.integers(-9, 9, L), ts.delta_bits), None) for _ in range(R // L))
    dut.scale.value = 0
    dut.events__ready.value = 1
    tasks = [cocotb.start_soon(t.run()) for t in (xs, ds)]
    cycles, busy_cycles, refused = 0, 0, True
    while True:
        await RisingEdge(dut.clk)
        await ReadOnly()
        cycles += 1
        s = status(dut)
        if s["busy"]:
            busy_cycles += 1
            refused &= dut.chi_wr__ready.value == 0 and dut.chi_rd_addr__ready.value == 0
        assert not dut.events__valid.value, "an event with scale 0 and chi 0"
        if s["batches"] == n and not s["busy"]:
            break
        assert cycles < 100_000
    for t in tasks:
        t.cancel()
    compute = ts.groups * (B // P)
    load = max(B * C // L, B * R // L)
    bound = n * max(compute + DRAIN, load) + load + 8
    dut._log.info(f"{n} batches in {cycles} cycles ({busy_cycles} busy): "
                  f"{n * R * C / cycles:.2f} synapse-updates/clock overall, "
                  f"{n * R * C / busy_cycles:.2f} while busy; compute {compute}/batch, drain {DRAIN}, "
                  f"load {load}; bound {bound}")
    assert refused, "the host chi port accepted a request while the engine was busy"
    assert busy_cycles <= n * (compute + DRAIN + 2), f"busy {busy_cycles} cycles > {n} x ({compute} + {DRAIN} + 2)"
    assert cycles <= bound, f"{cycles} cycles > bound {bound}"
