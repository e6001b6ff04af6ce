"""Clocks, event counts, energy and drift evaluation for any converted model.

* :func:`set_time` / :func:`advance`: every tile's clock (s), as the native trainer's.
* :func:`tile_events`: the tiles' :class:`~gpu_model.tile.TileEvents` summed (plus the
  optimizer's digital counts): an :class:`sim.events.EventCounts` dict.
* :func:`layer_summary` / :func:`energy_report`: the energy model of :mod:`sim.energy` on them.
* :func:`evaluate_drift`: ``mcasim evaluate``'s logic: re-read the devices at ``t_end + T`` with
  fresh read noise, as they are and with global drift compensation (one digital factor per layer,
  mean|y(t_end)| / mean|y(t)| on a calibration batch).
"""
from __future__ import annotations

import contextlib

import torch

from sim.energy import estimate, load_table
from sim.events import EventCounts

from .layers import AnalogConv2d, analog_modules


def set_time(model: torch.nn.Module, t: float) -> None:
    """Set every tile's clock to ``t`` seconds (drift is evaluated at the tiles' time)."""
    for m in analog_modules(model):
        if m.tile is not None:
            m.tile.set_time(t)


def advance(model: torch.nn.Module, dt: float) -> None:
    """Advance every tile's clock by ``dt`` seconds."""
    for m in analog_modules(model):
        if m.tile is not None:
            m.tile.advance(dt)


def model_time(model: torch.nn.Module) -> float:
    """The tiles' clock (s; the first tile's: the optimizer keeps them together)."""
    for m in analog_modules(model):
        if m.tile is not None:
            return float(m.tile.t)
    return 0.0


@contextlib.contextmanager
def uncounted(model: torch.nn.Module):
    """Crossbar reads inside this block are not training events (the native ``Task.uncounted``)."""
    mods = [m for m in analog_modules(model) if m.tile is not None]
    old = [m.training for m in mods]
    for m in mods:
        m.training = False
    try:
        yield
    finally:
        for m, t in zip(mods, old):
            m.training = t


def tile_events(model: torch.nn.Module, optimizer=None) -> dict:
    """Event counts of the model's tiles summed (and the optimizer's digital-unit counts)."""
    ev = EventCounts(**(optimizer.events.as_dict() if optimizer is not None else {}))
    names = set(ev.as_dict())
    for m in analog_modules(model):
        if m.tile is not None:
            ev.add(**{k: v for k, v in m.tile.events.as_dict().items() if k in names})
    return ev.as_dict()


def layer_summary(model: torch.nn.Module) -> list[dict]:
    """One entry per analog layer (the native ``Task.layer_summary``): name, out, in, kind, the
    conv's crossbar reads per image, the tile's range and granularity."""
    names = {id(m): n for n, m in model.named_modules()}
    out = []
    for m in analog_modules(model):
        st = m.store
        e = {"name": names.get(id(m), type(m).__name__), "out": int(st.shape[0]), "in": int(st.shape[1]),
             "kind": st.kind}
        if isinstance(m, AnalogConv2d) and m.positions:
            e["vectors_per_image"] = int(m.positions)
        if m.tile is not None:
            t = m.tile
            e.update(w_max=t.w_max, epsilon_uS=t.devices.epsilon_uS, epsilon_w=t.epsilon_w, tiles=t.n_tiles,
                     inc_saturated=t.digital.inc_saturated, init_prog_pulses=t.events.init_prog_pulses)
        out.append(e)
    return out


def energy_report(model: torch.nn.Module, images: int, batch_size: int, optimizer=None, table=None):
    """The energy model (:func:`sim.energy.estimate`) on a converted model's counts after training
    on ``images`` samples in mini-batches of ``batch_size``. Digital work outside the analog layers
    (activations, softmax) is not counted by torch and left at zero. Returns an EnergyReport."""
    layers = layer_summary(model)
    n_dev = max((m.tile.config.synapse.devices_per_side for m in analog_modules(model) if m.tile is not None),
                default=1)
    kind = optimizer.kind if optimizer is not None else "sgd"
    return estimate(tile_events(model, optimizer), int(images), layers, table if table is not None else load_table(),
                    batch_size=int(batch_size), optimizer=kind, devices_per_side=int(n_dev))


def _mean_abs_mvm(model, mods, calibration, forward) -> list[float]:
    for m in mods:
        m.record_mvm = True
    sums = [0.0] * len(mods)
    counts = [0] * len(mods)
    try:
        for xb in calibration:
            forward(model, xb)
            for j, m in enumerate(mods):
                if m.mvm is not None:
                    sums[j] += float(abs(m.mvm).sum())
                    counts[j] += int(m.mvm.size)
    finally:
        for m in mods:
            m.record_mvm, m.mvm = False, None
    return [s / c if c else 0.0 for s, c in zip(sums, counts)]


def _set_scales(mods, scales):
    for m, s in zip(mods, scales if scales is not None else [None] * len(mods)):
        m.out_scale = s


def evaluate_drift(model: torch.nn.Module, evaluate, times, calibration=None, t_end: float | None = None,
                   forward=None) -> dict:
    """Drift evaluation (``mcasim evaluate``'s logic) of a converted model.

    ``evaluate(model) -> float``: the figure at the tiles' current time (e.g. test accuracy);
    ``times``: seconds after ``t_end`` (default: the tiles' clock now); ``calibration``: an
    iterable of input batches for global drift compensation (None: no GDC); ``forward(model, xb)``
    (default ``model(xb)``) runs one calibration batch. Returns {"t_end_of_training_s", "points":
    [{"t_after_training_s", "value", "value_gdc", "gdc_scales"}]}; the clocks are restored.
    """
    mods = [m for m in analog_modules(model) if m.tile is not None]
    forward = forward or (lambda mdl, xb: mdl(xb))
    t_end = model_time(model) if t_end is None else float(t_end)
    was_training = model.training
    model.eval()
    rows = []
    try:
        with torch.no_grad():
            set_time(model, t_end)
            ref = _mean_abs_mvm(model, mods, calibration, forward) if calibration is not None else None
            for T in times:
                set_time(model, t_end + T)
                row = {"t_after_training_s": float(T), "value": float(evaluate(model))}
                if ref is not None:
                    scales = [1.0] * len(mods)
                    for i in range(len(mods)):      # each with the earlier layers compensated
                        _set_scales(mods, scales)
                        now = _mean_abs_mvm(model, mods, calibration, forward)
                        scales[i] = ref[i] / now[i] if now[i] > 0 else 1.0
                    _set_scales(mods, scales)
                    row.update(value_gdc=float(evaluate(model)), gdc_scales=scales)
                    _set_scales(mods, None)
                rows.append(row)
    finally:
        _set_scales(mods, None)
        set_time(model, t_end)
        model.train(was_training)
    return {"t_end_of_training_s": t_end, "points": rows}
