"""Energy model, issue 27: the 32-bit reference's weight reuse (``digital.weight_fetch``:
per_mac / per_image / per_batch) and the report's ratio under every mode."""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from energy_synth import synthetic_summary  # noqa: E402

from sim.energy.model import WEIGHT_FETCH, estimate_summary, load_table  # noqa: E402


def _conv_summary():
    """The synthetic MLP with its first layer turned into a conv of 64 positions per image
    (64 matrix reads per image: the weights reused at every position)."""
    s = synthetic_summary(sizes=(27, 16, 10), images=640, batch=64)
    s = copy.deepcopy(s)
    s["layers"][0]["vectors_per_image"] = 64
    ev = s["events"]
    extra = 63 * s["images_trained"]
    ev["cell_reads"] += extra * 27 * 16
    ev["fwd_vectors"] += extra
    return s


def test_weight_fetch_modes_order_and_report():
    t = load_table()
    s = _conv_summary()
    reads = {}
    for mode in WEIGHT_FETCH:
        r = estimate_summary(s, t.replace("digital", "weight_fetch", mode))
        reads[mode] = r.digital["weight reads"]
        assert set(r.ratio_by_weight_fetch) == set(WEIGHT_FETCH)
        assert r.ratio_by_weight_fetch[mode] == pytest.approx(r.ratio)
    assert reads["per_mac"] > reads["per_image"] > reads["per_batch"] > 0
    # per image: each layer's weights once per image per pass (no backward pass for layer 1)
    n = s["images_trained"] * (27 * 16 + 2 * 16 * 10)
    w_bit = t["memory"][t["digital"]["weight_memory"]] * 1e-12
    assert reads["per_image"] * s["images_trained"] == pytest.approx(n * 32 * w_bit)


def test_mlp_has_no_reuse_within_an_image():
    r = estimate_summary(synthetic_summary(images=600), load_table())
    assert r.ratio_by_weight_fetch["per_image"] == pytest.approx(r.ratio_by_weight_fetch["per_mac"])
    assert r.ratio_by_weight_fetch["per_batch"] < r.ratio_by_weight_fetch["per_image"]
    assert "ratio_by_weight_fetch" in r.as_dict()
