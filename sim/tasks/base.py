"""The interface between a task and the trainer's loop."""
from __future__ import annotations

import contextlib
import math

import numpy as np

from ..nn import Sequential
from ..nn.stores import AnalogWeights


class Task:
    """A task owns its network(s) and data; the trainer owns the loop, optimizer, clock and files.

    Subclasses set ``metric`` (the per-epoch figure that ranks epochs, e.g. ``test_accuracy``),
    ``higher_is_better``, ``train_metric`` and implement :meth:`epoch_batches`, :meth:`train_step`
    and :meth:`evaluate`.
    """

    metric = "test_accuracy"
    higher_is_better = True
    train_metric = "train_accuracy"
    eval_metrics: tuple = ("test_accuracy",)   # the keys :meth:`evaluate` returns (per-epoch record)
    maximised: tuple = ("test_accuracy", "train_accuracy")   # per-epoch figures where higher is better
    training_averages: tuple = ()   # keys of evaluate()'s record that average the epoch's training
                                    # steps rather than evaluate the model (left out of a readout ablation)
    networks: dict[str, Sequential]

    # --- seeded streams shared by the tasks ----------------------------------------------------
    PERMUTATION_STREAM = 2   # SeedSequence([train.seed, 2, epoch]): the order of the training samples

    def stream_rng(self, *keys: int) -> np.random.Generator:
        """A generator on ``SeedSequence([train.seed, *keys])`` (a task's named random stream)."""
        return np.random.default_rng(np.random.SeedSequence([self.cfg.train.seed, *keys]))

    def shuffled_batches(self, n: int, epoch: int) -> list:
        """Mini-batches of sample indices (on the backend) for ``epoch``: a seeded permutation of
        ``n`` samples cut into ``train.batch_size`` pieces (the last one may be shorter)."""
        b = self.cfg.train.batch_size
        perm = self.xp.asarray(self.stream_rng(self.PERMUTATION_STREAM, epoch).permutation(n))
        return [perm[i * b:(i + 1) * b] for i in range(math.ceil(n / b))]

    # --- what the trainer calls ----------------------------------------------------------------
    def epoch_batches(self, epoch: int) -> list:
        """Batch keys of one epoch (the trainer hands each to :meth:`train_step`)."""
        raise NotImplementedError

    def train_step(self, key, lr: float, rand_rng, opt, events) -> dict:
        """One mini-batch: forward, loss, backward, updates. Returns {"loss_sum", "metric_sum", "n",
        "pulses", "refreshes"} (sums over the batch's samples)."""
        raise NotImplementedError

    def evaluate(self) -> dict:
        """Figures at the end of an epoch (evaluation MVMs are not training events)."""
        raise NotImplementedError

    def state_dict(self, be) -> dict:
        return {name: net.state_dict(be) for name, net in self.networks.items()}

    def load_state_dict(self, st: dict) -> None:
        for name, net in self.networks.items():
            net.load_state_dict(st[name])

    # --- shared helpers -----------------------------------------------------------------------------
    def store_layers(self):
        return [L for net in self.networks.values() for L in net.store_layers()]

    def analog_stores(self):
        return [L.store for L in self.store_layers() if isinstance(L.store, AnalogWeights)]

    @contextlib.contextmanager
    def uncounted(self):
        """Crossbar MVMs inside this block are not training events (evaluation, calibration)."""
        mats = [s.tile for s in self.analog_stores()]
        for mat in mats:
            mat.count_events = False
        try:
            yield
        finally:
            for mat in mats:
                mat.count_events = True

    def set_time(self, t: float):
        for s in self.analog_stores():
            s.tile.set_time(t)

    def advance(self, dt: float):
        for s in self.analog_stores():
            s.tile.advance(dt)

    def layer_summary(self) -> list[dict]:
        """One entry per weight matrix: shape, kind, crossbar reads per sample (energy model)."""
        out = []
        for L in self.store_layers():
            st = L.store
            entry = {"name": L.name, "out": int(st.shape[0]), "in": int(st.shape[1]), "kind": st.kind}
            if getattr(L, "positions", None):
                entry["vectors_per_image"] = int(L.positions)
            if isinstance(st, AnalogWeights):
                tile = st.tile
                entry.update(w_max=tile.w_max, epsilon_uS=tile.devices.epsilon_uS, epsilon_w=tile.epsilon_w,
                             tiles=tile.n_tiles, inc_saturated=st.inc_saturated,
                             init_prog_pulses=tile.events.init_prog_pulses)
            out.append(entry)
        return out
