"""Synthetic run summaries for the energy-model tests (counts computed from layer shapes)."""
from __future__ import annotations

import math

OPS = {"sgd": 1, "momentum": 3, "adam": 12}


def synthetic_summary(sizes=(784, 250, 10), images=60_000, batch=10, optimizer="sgd", tile_rows=512,
                      set_pulses_per_image=5.0, refreshes=1_000, chi_bits=20) -> dict:
    """Counts of ``images`` training images of an all-analog MLP, the way sim/train.py counts them:
    forward MVM per layer per image; backward MVM for every layer but the first; one chi update
    per weight per mini-batch; batch x n_w update MACs per mini-batch."""
    layers = [{"name": f"fc{i + 1}", "in": a, "out": b, "kind": "analog"}
              for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))]
    n_batches = math.ceil(images / batch)
    n_w = sum(L["in"] * L["out"] for L in layers)
    n_b = sum(L["out"] for L in layers)
    ev = dict.fromkeys(("fwd_vectors", "bwd_vectors", "cell_reads", "dac_conversions", "adc_conversions",
                        "update_macs", "chi_updates", "optimizer_ops", "chi_bits", "set_pulses", "refreshes",
                        "refresh_resets", "refresh_prog_pulses", "refresh_verify_reads", "activations",
                        "softmax_outputs", "bias_updates"), 0)
    for i, L in enumerate(layers):
        a, b = L["in"], L["out"]
        ev["fwd_vectors"] += images
        ev["cell_reads"] += images * a * b
        ev["dac_conversions"] += images * a
        ev["adc_conversions"] += images * b * math.ceil(a / tile_rows)
        if i > 0:
            ev["bwd_vectors"] += images
            ev["cell_reads"] += images * a * b
            ev["dac_conversions"] += images * b
            ev["adc_conversions"] += images * a * math.ceil(b / tile_rows)
        if i < len(layers) - 1:                      # hidden layers: activation + derivative
            ev["activations"] += 2 * images * b
    ev["update_macs"] = images * n_w
    ev["chi_updates"] = n_batches * n_w
    ev["optimizer_ops"] = n_batches * OPS[optimizer] * (n_w + n_b)
    ev["bias_updates"] = n_batches * n_b
    ev["softmax_outputs"] = images * sizes[-1]
    ev["chi_bits"] = chi_bits
    ev["set_pulses"] = int(set_pulses_per_image * images)
    ev["refreshes"] = refreshes
    ev["refresh_resets"] = 2 * refreshes
    ev["refresh_prog_pulses"] = 20 * refreshes
    ev["refresh_verify_reads"] = 22 * refreshes
    return {"dataset": "mnist", "synapse": "pcm", "epochs": max(1, images // 60_000),
            "test_accuracy": 0.97, "images_trained": images, "batch_size": batch, "optimizer": optimizer,
            "layers": layers, "events": ev}
