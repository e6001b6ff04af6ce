"""A tile state of one engine as a state of the other: carry a trained reference-engine tile over
to the fused engine (``python -m benchmarks.run gan --from-run RUN`` times both engines on one
trained state; a user can continue a reference run on the fused engine).

What carries over (the physics and the digital unit, exactly):

| part | reference (``DifferentialSynapses``) | fused (``FusedSynapses``) |
| --- | --- | --- |
| device fields g_prog (µS), t_prog (s), hist, z_nu, step_mult, nu, n_set, n_reset | ``gp.<f>``, ``gm.<f>``: flat, device k of synapse s at ``k * n_syn + s`` | ``<f>``: ``(n_syn, 2N)``, columns ``d < N`` G+, ``d >= N`` G- |
| round-robin arbiter (N > 1) | ``arbiter`` | ``arbiter`` |
| clock, event counters | ``t``, ``counters`` | ``t``, ``counters.<k>`` |
| chi, verify feedback, update count, read counts, read-noise generator | tile level | tile level (the same) |

What does not (the engines draw their randomness differently): the reference engine's device and
verify generators (the fused engine keys its draws by (seed, stream, step, synapse, device,
attempt) instead; its programming counter starts at 0), and the weight cache (rebuilt from the
devices at the first read). So a converted tile reads the same weights (to float32 summation
order) and has the same conductances bit for bit; its later updates are statistically, not
bit-for-bit, those the reference engine would have made.

Only reference -> fused, without device faults (``gpu_model/faults.py`` state has no fused twin).
"""
from __future__ import annotations

import math

import numpy as np

DEVICE_FIELDS = ("g_prog", "t_prog", "hist", "z_nu", "step_mult", "nu", "n_set", "n_reset")


class ConversionError(ValueError):
    """A tile state that cannot be carried over to the asked engine (the message says why)."""


def _device_columns(st: dict, side: str, field: str, n_syn: int, n_dev: int) -> np.ndarray:
    """(n_syn, n_dev) view of the reference array ``side.field`` (device k of synapse s at k*n_syn+s)."""
    a = np.asarray(st[f"{side}.{field}"])
    if a.size != n_syn * n_dev:
        raise ConversionError(f"reference device field {side}.{field} has {a.size} entries, "
                              f"expected {n_syn} synapses x {n_dev} devices")
    return a.reshape(n_dev, n_syn).T


def _cast(name: str, src: np.ndarray, dtype) -> np.ndarray:
    out = src.astype(dtype)
    if not np.array_equal(out.astype(src.dtype), src, equal_nan=True):
        raise ConversionError(f"device field {name} does not fit the fused engine's {np.dtype(dtype)}")
    return out


def reference_to_fused(st: dict, template: dict) -> dict:
    """The reference-engine device-array state ``st`` (``DifferentialSynapses.state_dict``) as a
    ``FusedSynapses`` state; ``template``: the target array's own ``state_dict()`` (its shapes,
    dtypes, key fields and any field this conversion does not set)."""
    if any(k.startswith(("gp.faults.", "gm.faults.")) for k in st) or "fault_rng" in st:
        raise ConversionError("a tile with device faults cannot move to the fused engine (no faults there)")
    n_dev = int(template["devices_per_side"])
    n_syn = int(np.asarray(template["arbiter"]).shape[0])
    out = dict(template)
    for f in DEVICE_FIELDS:
        cols = np.concatenate([_device_columns(st, "gp", f, n_syn, n_dev),
                               _device_columns(st, "gm", f, n_syn, n_dev)], axis=1)
        dst = np.asarray(template[f])
        if dst.shape != cols.shape:
            raise ConversionError(f"device field {f}: reference {cols.shape}, fused {dst.shape}")
        out[f] = np.ascontiguousarray(_cast(f, cols, dst.dtype))
    if n_dev > 1:
        out["arbiter"] = _cast("arbiter", np.asarray(st["arbiter"]), np.asarray(template["arbiter"]).dtype)
    out["cache_w"] = np.zeros_like(template["cache_w"])
    out["cache_var"] = np.zeros_like(template["cache_var"])
    out["cache_t"] = math.nan                      # no cache: rebuilt from the devices at the first read
    out["t"] = float(st["t"])
    out["tp_floor"] = min(float(np.min(out["t_prog"])), float(st["t"]))   # lower bound of t_prog (s)
    out["program_calls"] = 0
    counters = {k: v for k, v in template.items() if k.startswith("counters.")}
    for k, v in st["counters"].items():
        if f"counters.{k}" not in counters:
            raise ConversionError(f"reference counter {k!r} has no fused twin")
        out[f"counters.{k}"] = int(v)
    return out


def convert_tile_state(st: dict, tile) -> dict:
    """``st`` (an ``AnalogTile.state_dict()`` of another engine) as a state ``tile`` (an
    ``AnalogTile``) loads: the tile-level parts as they are, the device array converted."""
    src, dst = st.get("engine"), tile.config.engine
    if src == dst:
        return st
    if (src, dst) != ("reference", "fused"):
        raise ConversionError(f"no conversion of a {src!r}-engine tile state to the {dst!r} engine "
                              "(only reference -> fused)")
    out = dict(st)
    out["engine"] = dst
    out["devices"] = reference_to_fused(st["devices"], tile.devices.state_dict())
    return out
