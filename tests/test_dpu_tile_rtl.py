"""The whole unit in the loop: rtl.dpu.TileDPU on the Verilator model of rtl.tile.TileUnit against
the golden model (chi, events, counters bit for bit). The default suite uses a small spec (one
quick build); the shipped 64 x 64 spec and a longer run are ``slow``."""
from __future__ import annotations

import numpy as np
import pytest

from rtl.dpu import TileDPU
from rtl.spec import DPUSpec, SpecError, TileSpec

SMALL = TileSpec(rows=6, cols=9, batch=6, lanes=3, taps=2, x_bits=5, delta_bits=7, scale_bits=9,
                 scale_shift=3, dpu=DPUSpec(chi_bits=12, frac_bits=6, inc_bits=14, round_bits=3, pmax=7))


def _batches(ts, n, rng):
    xl, dl = 1 << (ts.x_bits - 1), 1 << (ts.delta_bits - 1)
    for k in range(n):
        if k % 5 == 4:                                  # edge batch: extreme codes, full scale
            yield np.full((ts.batch, ts.cols), -xl), np.full((ts.batch, ts.rows), -dl), ts.scale_max
        else:
            yield (rng.integers(-xl, xl, (ts.batch, ts.cols)), rng.integers(-dl, dl, (ts.batch, ts.rows)),
                   int(rng.integers(0, ts.scale_max + 1)))


def _compare(ts, n, seed):
    rng = np.random.default_rng(seed)
    r, g = TileDPU(ts, "rtl", seed=seed), TileDPU(ts, "golden", seed=seed)
    cm = ts.chi_spec.chi_max
    chi = rng.integers(-cm, cm + 1, (ts.rows, ts.cols)).astype(np.int32)
    total_ev = 0
    for k, (x, d, m) in enumerate(_batches(ts, n, rng)):
        load = chi if k in (0, n // 2) else None        # reload mid-run too
        cr, er = r.update_from_batch(load, x, d, m)
        cg, eg = g.update_from_batch(load, x, d, m)
        assert np.array_equal(cr, cg), f"batch {k}: chi differs in {(cr != cg).sum()} synapses"
        assert np.array_equal(er, eg), f"batch {k}: events differ ({er.size} rtl, {eg.size} golden)"
        total_ev += er.size
    assert r.counters() == g.counters()
    assert total_ev > 0
    return r


def test_tile_dpu_rtl_matches_golden():
    r = _compare(SMALL, 12, 3)
    assert r.cycles_last_batch > 0


def test_tile_dpu_rtl_two_eval_fallback_matches_golden(monkeypatch):
    """The harness's fallback (two evaluations per clock, where the model's previous-clock member
    is not found) is built with TILE_FORCE_TWO_EVALS (its own build key) and is bit-exact too."""
    import rtl.tile_verilated as tv
    monkeypatch.setattr(tv, "CXX_FLAGS", tv.CXX_FLAGS + " -DTILE_FORCE_TWO_EVALS")
    r = _compare(SMALL, 6, 5)
    assert r._v.evals_per_cycle == 2


def test_tile_dpu_interface_errors():
    with pytest.raises(ValueError, match="backend"):
        TileDPU(SMALL, "nope")
    g = TileDPU(SMALL, "golden")
    with pytest.raises(ValueError, match="shape"):
        g.update_from_batch(None, np.zeros((2, 2), int), np.zeros((SMALL.batch, SMALL.rows), int), 1)
    with pytest.raises(SpecError):
        TileSpec(rows=6, cols=9, lanes=4)


def test_bench_tile_several_units_in_threads_match_golden():
    """rtl.bench_tile with several units run in threads (the harness releases the GIL): every
    unit bit for bit equal to its golden twin, repeated runs equal."""
    from rtl.bench_tile import run
    res = run(SMALL, 4, "random", seed=1, units=3, threads=2, repeat=2)
    assert res["match"] and res["units"] == 3 and res["threads"] == 2
    assert res["synapse_updates"] == 4 * 3 * SMALL.rows * SMALL.cols
    assert res["events"] > 0 and res["rtl_cycles_per_batch"] > 0 and res["rtl_updates_per_cpu_s"] > 0
    assert res["rtl_evals_per_cycle"] == 1          # the one-eval batch loop is the one tested here


def test_mcasim_bench_dpu_tile(capsys):
    """``mcasim bench dpu-tile``: the whole unit (shipped spec, the build the whole-unit training
    tests share), one JSON line."""
    import json

    from sim.cli import main
    assert main(["bench", "dpu-tile", "--batches", "2", "--repeat", "1"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["bench"] == "dpu-tile" and res["match"] and res["synapse_updates"] == 2 * 64 * 64
    assert 500 < res["rtl_cycles_per_batch"] < 700

@pytest.mark.slow
def test_tile_dpu_rtl_shipped_spec():
    _compare(TileSpec(), 40, 9)


FUZZ_UPDATES = 1_000_000          # issue 27: >= 1 M synapse-updates fuzzed with 0 mismatches


@pytest.mark.slow
def test_tile_dpu_rtl_fuzz_1m():
    """>= 1e6 synapse-updates of the shipped 64 x 64 spec through the Verilator model's real ports
    (streams, chi port, status) against the golden model: random and extreme batches (every 5th),
    chi reloaded at the start and halfway: chi, events and counters bit for bit after every batch."""
    ts = TileSpec()
    n = -(-FUZZ_UPDATES // (ts.rows * ts.cols))
    r = _compare(ts, n, 27)
    assert n * ts.rows * ts.cols >= FUZZ_UPDATES and r.counters()["batches"] == n
