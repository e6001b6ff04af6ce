"""The mixed-precision optimizer: a torch optimizer's rule in digital, its step to the tiles.

Per ``step()`` (what the native trainer's ``sim.nn.apply_updates`` does, with the torch rule in
place of ``sim.nn.optim.Optimizer``):

1. every analog weight Parameter is pointed at a work buffer holding 0 (or, where the rule
   depends on the weight itself, i.e. weight decay, a copy of the weights), the torch optimizer
   runs its rule (SGD, momentum, Adam, ... with its own state) on every parameter: digital
   parameters (biases, BatchNorm) are updated by it in place, as usual;
2. for the analog weights the buffer now holds the change the rule would make, delta_w (weight
   units): it is handed to the tile's ``update`` (chi -> the digital unit, golden or RTL -> pulses
   -> devices, refresh, verified updates: all as the config says), last layer first (the order of
   the native trainer's rounding-bit draws); the Parameter is pointed back at the tile's weights;
3. the tiles' clocks advance by ``seconds_per_step`` (default: the config's
   ``train.seconds_per_batch``), as the native trainer's clock.

With a zero base the step is exact: 0 + step = step, bit for bit the torch rule's own arithmetic;
digital parameters get the same treatment (step on a zero buffer, then ``p += step``, as the native
``p.value += delta``), so SGD and momentum match the native trainer bit for bit.
Stochastic rounding bits: the reference engine draws them from ``child_rng(1_000_000 + epoch)``
of the layers' backend (the native trainer's stream; call :meth:`AnalogOptimizer.set_epoch` at the
start of every epoch to follow it); the fused engine keys them by the update step.
"""
from __future__ import annotations

import torch

from gpu_model.backend import rng_state, set_rng_state
from sim.events import EventCounts
from sim.nn.optim import Optimizer as _NativeOptimizer
from sim.train import RAND_STREAM_BASE

from ._arrays import as_array, as_tensor
from .layers import AnalogModule


def optimizer_kind(opt: torch.optim.Optimizer) -> str:
    """"sgd", "momentum" or "adam": the native rule whose op count stands for ``opt`` (energy)."""
    if isinstance(opt, torch.optim.SGD):
        return "momentum" if any(g.get("momentum", 0) for g in opt.param_groups) else "sgd"
    return "adam"


class AnalogOptimizer:
    """Wraps a torch optimizer: digital parameters as usual, analog weights through their tiles.

    ``optimizer``: any ``torch.optim.Optimizer`` over the model's parameters (analog weights are
    recognised by their layer). ``seconds_per_step``: simulated time per step (s; None: each
    layer's config value). Counts the digital unit's work in ``events`` (:class:`sim.events.EventCounts`).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, seconds_per_step: float | None = None):
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"AnalogOptimizer wraps a torch.optim.Optimizer, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        self.seconds_per_step = seconds_per_step
        self._analog: list[tuple[torch.nn.Parameter, AnalogModule]] = []
        seen = set()
        for g in optimizer.param_groups:
            for p in g["params"]:
                m = getattr(p, "_mcasim_module", None)
                if isinstance(m, AnalogModule) and id(p) not in seen:
                    seen.add(id(p))
                    self._analog.append((p, m))
        self._analog.sort(key=lambda pm: -pm[1].layer_index)     # update order: last layer first
        self._work: dict[int, torch.Tensor] = {}
        self.kind = optimizer_kind(optimizer)
        self.events = EventCounts(chi_bits=self._chi_bits())
        self.epoch, self.steps = 0, 0
        self.rand_rng = None
        self.last_pulses = self.last_refreshes = 0

    def _chi_bits(self) -> int:
        for _, m in self._analog:
            if m.tile is not None:
                return int(m.tile.config.dpu.chi_bits)
        return 0

    @property
    def param_groups(self):
        return self.optimizer.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch``: the reference engine's rounding bits come from its stream."""
        self.epoch = int(epoch)
        self.rand_rng = None

    def _rng(self):
        if self.rand_rng is None and self._analog:
            self.rand_rng = self._analog[0][1].backend.child_rng(RAND_STREAM_BASE + self.epoch)
        return self.rand_rng

    def _exact_zero_base(self) -> bool:
        return all(not g.get("weight_decay", 0) for g in self.optimizer.param_groups)

    def _buffer(self, m: AnalogModule) -> torch.Tensor:
        buf = self._work.get(id(m))
        if buf is None:
            buf = self._work[id(m)] = torch.empty(tuple(m._w_array.shape), dtype=torch.float32,
                                                  device=as_tensor(m._w_array).device)
        return buf

    @torch.no_grad()
    def step(self, closure=None):
        """One mini-batch update (see the module docstring). Returns the closure's loss, if any."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        zero = self._exact_zero_base()
        live = [(p, m) for p, m in self._analog if p.grad is not None]
        digital = [p for g in self.optimizer.param_groups for p in g["params"]
                   if p.grad is not None and getattr(p, "_mcasim_module", None) is None]
        saved = []                       # digital parameters on a zero base: (param, its own data)
        try:
            for p, m in live:
                m._sync_weight()
                buf = self._buffer(m)
                if zero:
                    buf.zero_()
                else:
                    buf.copy_(as_tensor(m._w_array))
                p.data = m._weight_view(buf)
            if zero:                     # w += step, as the native trainer (no fused w + lr * v)
                for p in digital:
                    buf = self._work.get(id(p))
                    if buf is None or buf.shape != p.shape:
                        buf = self._work[id(p)] = torch.zeros_like(p)
                    saved.append((p, p.data))
                    p.data = buf.zero_()
            self.optimizer.step()
            for p, data in saved:
                data.add_(p.data)
            pulses = refreshes = 0
            rng = self._rng()
            for p, m in live:
                buf = self._buffer(m)
                if not zero:
                    buf.sub_(as_tensor(m._w_array))          # delta = rule(w) - w
                rep = m.store.apply_update(as_array(buf, m.xp, "update"), rng, None)
                pulses += rep.set_pulses
                refreshes += rep.refreshes
        finally:
            for p, data in saved:
                p.data = data
            for p, m in live:
                m._w_array = None
                m._sync_weight()
        self._count(live, digital)
        dt = self.seconds_per_step
        for _, m in self._analog:
            if m.tile is not None:
                m.tile.advance(m.seconds_per_batch if dt is None else dt)
        self.last_pulses, self.last_refreshes = pulses, refreshes
        self.steps += 1
        return loss

    def _count(self, live, digital) -> None:
        ops = _NativeOptimizer.OPS_PER_WEIGHT[self.kind]
        ev = self.events
        for p, m in live:
            n = p.numel()
            ev.add(update_macs=m.update_macs, chi_updates=n if m.tile is not None else 0, optimizer_ops=ops * n)
            m.update_macs = 0
        for p in digital:
            ev.add(optimizer_ops=ops * p.numel(), bias_updates=p.numel())

    # --- state ----------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "epoch": self.epoch, "steps": self.steps,
                "rand_rng": None if self.rand_rng is None else rng_state(self.rand_rng),
                "events": self.events.as_dict()}

    def load_state_dict(self, st: dict) -> None:
        self.optimizer.load_state_dict(st["optimizer"])
        self.epoch, self.steps = int(st["epoch"]), int(st["steps"])
        self.events = EventCounts(**st["events"])
        self.rand_rng = None
        if st.get("rand_rng") is not None:
            set_rng_state(self._rng(), st["rand_rng"])
