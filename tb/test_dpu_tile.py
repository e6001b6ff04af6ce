"""pytest runner of the whole-unit cocotb bench (``tb/tile_tb.py``) on Verilator.

One build folder per parameter set (``build/tb_tile/<key>``); ``WAVES=1`` records a VCD.
``test_checker_catches_broken_tile_model`` proves the scoreboard fails against deliberately wrong
models; the slow fuzz drives >= 1e6 synapse-updates through the shipped spec.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from rtl.spec import DPUSpec, TileSpec
from tb.test_dpu_unit import VERILATOR_ARGS, _need_tools, waves_requested

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

TOPLEVEL = "tile"

# Default suite: a small spec that moves every width and option at once (odd lane count, B/P > 1
# words per group, narrow chi and increment so sat_inc is reachable, scale_shift 3). Slow: the
# shipped spec, nearest / truncate rounding, taps 1, and a 60-bit random word from two
# generators with a lane field straddling them.
SPECS = {
    "small_odd": TileSpec(rows=6, cols=9, batch=6, lanes=3, taps=2, x_bits=5, delta_bits=7,
                          scale_bits=9, scale_shift=3,
                          dpu=DPUSpec(chi_bits=12, frac_bits=6, inc_bits=14, round_bits=3, pmax=7)),
}
SLOW_SPECS = {
    "default": TileSpec(),                       # the shipped spec (its build alone takes ~20-40 s)
    "nearest_p1": TileSpec(rows=4, cols=8, batch=3, lanes=4, taps=1, scale_shift=0,
                           dpu=DPUSpec(rounding="nearest", inc_bits=16, frac_bits=8, chi_bits=14,
                                       round_bits=2, pmax=3)),
    "two_gens_truncate": TileSpec(rows=12, cols=24, batch=2, lanes=12, taps=2,
                                  dpu=DPUSpec(round_bits=5)),
    "truncate_wide": TileSpec(rows=8, cols=16, batch=4, lanes=8, taps=4,
                              dpu=DPUSpec(rounding="truncate", pmax=1)),
}


def spec_key(ts: TileSpec) -> str:
    s = ts
    return (f"R{s.rows}C{s.cols}B{s.batch}L{s.lanes}P{s.taps}_x{s.x_bits}d{s.delta_bits}"
            f"_s{s.scale_bits}k{s.scale_shift}_"
            + hashlib.sha256(repr(s).encode()).hexdigest()[:8])


def build(ts: TileSpec):
    from amaranth.back import verilog
    from cocotb_tools.runner import get_runner

    from rtl.tile import TileUnit
    _need_tools()
    waves = waves_requested()
    bdir = REPO / "build" / "tb_tile" / (spec_key(ts) + ("_waves" if waves else ""))
    bdir.mkdir(parents=True, exist_ok=True)
    src = bdir / f"{TOPLEVEL}.v"
    text = verilog.convert(TileUnit(ts), name=TOPLEVEL, emit_src=False)
    if not src.exists() or src.read_text() != text:
        src.write_text(text)
    runner = get_runner("verilator")
    # A design this size makes Verilator split its C++ and use a precompiled header, whose
    # include flag the PyPI build leaves empty (TOOLCHAIN.md). The runner calls make itself,
    # so the override goes through MAKEFLAGS (command-line variables), for this build only.
    old = os.environ.get("MAKEFLAGS")
    os.environ["MAKEFLAGS"] = " ".join(filter(None, [old, "CFG_CXXFLAGS_PCH_I=-include"]))
    try:
        runner.build(sources=[src], hdl_toplevel=TOPLEVEL, build_dir=bdir, build_args=VERILATOR_ARGS,
                     waves=waves, log_file=bdir / "build.log")
    finally:
        if old is None:
            os.environ.pop("MAKEFLAGS", None)
        else:
            os.environ["MAKEFLAGS"] = old
    return runner, bdir


def run_bench(ts: TileSpec, model: str = "golden", name: str = "run", test_filter=None,
              extra: dict | None = None):
    """Run the bench; returns (failed testcases {name: message}, number of testcases)."""
    lock_dir = REPO / "build" / "tb_tile"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f".{spec_key(ts)}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        runner, bdir = build(ts)
        tdir = bdir / name
        results = tdir / "results.xml"
        if results.exists():
            results.unlink()
        env = {"TILE_TB_MODEL": model, "TILE_TB_SEED": os.environ.get("TILE_TB_SEED", "1"), **(extra or {})}
        try:
            runner.test(test_module="tb.tile_tb", hdl_toplevel=TOPLEVEL, hdl_toplevel_lang="verilog",
                        build_dir=bdir, test_dir=tdir, results_xml=str(results), extra_env=env,
                        waves=waves_requested(), test_filter=test_filter, log_file=tdir / "sim.log")
        except SystemExit:
            pass
        if not results.exists():
            log = (tdir / "sim.log").read_text()[-3000:] if (tdir / "sim.log").exists() else ""
            raise AssertionError(f"simulation produced no results file; log tail:\n{log}")
        failed, total = {}, 0
        for tc in ET.parse(results).getroot().iter("testcase"):
            total += 1
            for f in list(tc.iter("failure")) + list(tc.iter("error")):
                failed[tc.get("name")] = (f.get("message") or "") + " " + (f.text or "")
        return failed, total


def _assert_passed(failed, total, at_least):
    assert total >= at_least, f"expected the bench to run >= {at_least} testcases, got {total}"
    assert not failed, "cocotb failures:\n" + "\n".join(f"{k}: {v[:800]}" for k, v in failed.items())


@pytest.mark.parametrize("label", list(SPECS))
def test_tile_unit(label):
    failed, total = run_bench(SPECS[label], name="golden", extra={"TILE_TB_BATCHES": "8"})
    _assert_passed(failed, total, 9)


@pytest.mark.slow
@pytest.mark.parametrize("label", list(SLOW_SPECS))
def test_tile_unit_more_specs(label):
    failed, total = run_bench(SLOW_SPECS[label], name="golden",
                              extra={"TILE_TB_BATCHES": "6" if label == "default" else "12"})
    _assert_passed(failed, total, 9)


BROKEN = ["inc_wraps", "scale_floor", "rand_late", "last_sample_dropped", "events_reversed"]


@pytest.mark.parametrize("model", BROKEN)
def test_checker_catches_broken_tile_model(model):
    """A deliberately wrong model must make the random-batch and edge-value checks fail."""
    failed, total = run_bench(SPECS["small_odd"], model=model, name=f"broken_{model}",
                              test_filter=r"\.(random_batches_stream|edge_values)",
                              extra={"TILE_TB_BATCHES": "4"})
    assert total == 5, f"expected the 4 random_batches_stream variants and edge_values, ran {total}"
    assert failed, f"bench passed against the broken model {model!r}: the checker is blind"
    assert any("mismatch" in msg or "differ" in msg for msg in failed.values()), failed


@pytest.mark.slow
def test_tile_fuzz_1m():
    """>= 1e6 synapse-updates (shipped 64 x 64 spec: 4096 per batch, 250 batches) with 30 % idle
    cycles on the inputs and 50 % back-pressure on the events: zero mismatches."""
    failed, total = run_bench(SLOW_SPECS["default"], name="fuzz",
                              test_filter=r"random_batches_stream/idle=0\.3/backpressure=0\.5",
                              extra={"TILE_TB_BATCHES": "250", "TILE_TB_SEED": "2"})
    assert total == 1
    assert not failed, failed
