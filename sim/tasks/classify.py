"""Image classification (MNIST MLP, CIFAR-10 CNN): softmax cross-entropy, accuracy.

Batches: a seeded permutation per epoch (``SeedSequence([seed, 2, epoch])``); with
``train.augment`` and an image dataset, a seeded random crop (4-pixel zero padding) and horizontal
flip per image, in digital (``SeedSequence([seed, 3, epoch])``).
"""
from __future__ import annotations

from ..nn import Dense, apply_updates, softmax_cross_entropy
from . import TaskSpec
from .base import Task
from .models import build_network

AUGMENT_STREAM = 3
AUGMENT_PAD = 4            # pixels of zero padding for the random crop (standard CIFAR-10 practice)


class ClassifyTask(Task):
    metric = "test_accuracy"
    higher_is_better = True
    train_metric = "train_accuracy"

    def __init__(self, cfg, ds, be):
        self.cfg, self.ds, self.be, self.xp = cfg, ds, be, be.xp
        xp, t = self.xp, cfg.train
        ntr = t.train_subset or len(ds.x_train)
        nte = t.test_subset or len(ds.x_test)
        self.x_train = xp.asarray(ds.x_train[:ntr])
        self.y_train = xp.asarray(ds.y_train[:ntr])
        self.x_test = xp.asarray(ds.x_test[:nte])
        self.y_test = xp.asarray(ds.y_test[:nte])
        self.net = build_network(cfg, ds.input_shape if cfg.model.arch == "cnn" else (ds.n_features,),
                                 ds.n_classes, be)
        self.networks = {"net": self.net}
        sparse = t.optimizer == "sgd"
        for L in self.net.layers:
            if isinstance(L, Dense):
                L.sparse_update = sparse
        self.augment = bool(t.augment) and len(ds.input_shape) == 3
        self._aug_rng = None

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    def epoch_batches(self, epoch: int) -> list:
        if self.augment:
            self._aug_rng = self.stream_rng(AUGMENT_STREAM, epoch)
        return self.shuffled_batches(self.n_train, epoch)

    def _augment(self, xb):
        from ..data.cifar10 import augment
        return augment(self.xp, xb, self._aug_rng, pad=AUGMENT_PAD, flip=True)

    def train_step(self, idx, lr, rand_rng, opt, events) -> dict:
        xp, net = self.xp, self.net
        xb, yb = self.x_train[idx], self.y_train[idx]
        if self.augment:
            xb = self._augment(xb)
        B = int(xb.shape[0])
        net.train()
        net.bind_events(events)
        logits = net.forward(xb)
        loss, correct, d = softmax_cross_entropy(xp, logits, yb)
        opt.step_begin()
        net.backward(d)
        pulses, refreshes = apply_updates(net.update_order(), opt, lr, rand_rng, events, B)
        events.add(softmax_outputs=B * self.ds.n_classes)
        return {"loss_sum": loss * B, "metric_sum": correct, "n": B, "pulses": pulses, "refreshes": refreshes}

    def predict(self, x, batch: int):
        xp, net = self.xp, self.net
        net.eval()
        net.bind_events(None)
        preds = [xp.argmax(net.forward(x[i:i + batch]), axis=1) for i in range(0, x.shape[0], batch)]
        return xp.concatenate(preds)

    def accuracy(self, x, y) -> float:
        with self.uncounted():
            pred = self.predict(x, self.cfg.train.eval_batch)
        return float((pred == y).mean())

    def evaluate(self) -> dict:
        """Test accuracy with fresh noisy reads (not training events)."""
        return {"test_accuracy": self.accuracy(self.x_test, self.y_test)}

    def plot(self, out_dir, metrics) -> None:
        """``accuracy.png``: train (running) and test accuracy per epoch, in %."""
        from ..plots import epoch_curves
        train = "train (running, augmented)" if self.augment else "train (running)"
        epoch_curves(out_dir / "accuracy.png", metrics, (("train_accuracy", "o-", train), ("test_accuracy", "s-", "test")),
                     "accuracy (%)", f"{self.ds.name} — synapse {self.cfg.synapse.mode}", scale=100.0)


# --- registration (sim/tasks/__init__.py): the classifiers read only [model] ---------------------
def _n_weight_layers(cfg) -> int:
    """Conv layers (cnn), hidden dense layers, output layer: the order of build_network's stores."""
    m = cfg.model
    n_conv = sum(1 for c in m.conv if not isinstance(c, str)) if m.arch == "cnn" else 0
    return n_conv + len(m.hidden) + 1


def _validate_mlp(cfg, need) -> None:
    need(len(cfg.model.hidden) >= 1, "model.hidden: an mlp needs at least one hidden layer, got []")


def _validate_cnn(cfg, need) -> None:
    need(any(not isinstance(c, str) for c in cfg.model.conv), "model.conv: a cnn needs at least one conv layer")


def _spec(arch, validate, configs):
    return TaskSpec(arch=arch, task=ClassifyTask, n_weight_layers=_n_weight_layers, validate=validate,
                    whole_unit=True, configs=configs)   # Dense and Conv2d keep the factors


TASKS = (_spec("mlp", _validate_mlp, {"mnist": "mlp_mnist"}),          # configs/mlp_mnist_*.toml
         _spec("cnn", _validate_cnn, {"cifar10": "cnn_cifar10"}))      # configs/cnn_cifar10_*.toml
