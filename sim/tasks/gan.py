"""GAN on MNIST: an MLP generator and an MLP discriminator, each on its own PCM crossbars.

Networks (``[gan]`` section; sizes are the defaults):

* generator G: z (latent_dim = 100, N(0, 1)) -> Dense 256 -> LeakyReLU -> Dense 512 -> LeakyReLU
  -> Dense 784 -> tanh: images in [-1, 1] (the real images are scaled to [-1, 1] as well);
* discriminator D: 784 -> Dense 512 -> LeakyReLU -> Dense 256 -> LeakyReLU -> Dense 1 (logit).

``gan.conditioning`` (default "none"): class-conditional variants. Both append the digit's one-hot
label (10) to z at G's input (latent_dim + 10 rows of G1's crossbar); real images carry their
labels, fakes a label drawn uniformly with their z.

* "cgan" (Mirza & Osindero 2014): the label is also appended to the image at D's input (784 + 10
  rows of D1's); D judges (image, label) pairs.
* "acgan" (Odena et al. 2017): D's last layer has 1 + 10 outputs: the real/fake logit and class
  logits. D's loss adds ``gan.aux_weight`` x the softmax cross-entropy of the real images' labels;
  G's loss adds aux_weight x the cross-entropy of D's class logits on the fakes against the digit
  asked for (the class gradient reaches G through D's transposed reads, like the adversarial one).

Evaluation then asks for every digit equally (sample i gets digit i mod 10; the grid's column c is
digit c) and adds ``label_match``: the fraction of generated images the FD classifier reads as the
digit asked for.

Every weight matrix is a weight store from ``synapse.mode`` (fp32 | ideal | pcm) with its own chi
and digital unit (per-layer ``synapse.w_max`` / ``epsilon_uS`` in the order G1 G2 G3 D1 D2 D3);
``gan.generator_only_pcm`` keeps D in fp32 (the ablation). Biases and everything else are digital.
Two digital optimizers (``train.optimizer``; the shipped configs use plain SGD, docs/gan.md says
why not Adam), one per network, held by the task (their state is in the task's checkpoint); the
trainer's own optimizer is not used.

One mini-batch of B real images (the trainer's step):

1. z ~ N(0, 1) (B, latent) from the epoch's latent stream; fake = G(z) (crossbar reads);
2. D step: D on [real; fake] (2B vectors), loss_D = mean BCE(D(real), 1) + mean BCE(D(fake), 0)
   on the logits (sigmoid cross-entropy in digital); backward through D (no input gradient),
   D's updates through its chi;
3. G step (non-saturating): D (already updated) on the same fake, loss_G = mean BCE(D(fake), 1);
   backward through D for its input gradient only (transposed crossbar reads of D; D's parameter
   gradients are not computed), then backward through G and G's updates through its chi.

``gan.clip_norm`` > 0 clips each network's gradient (global L2 norm, digital) before its update.

Reported per batch to the trainer: ``loss`` = loss_D + loss_G per real image, ``d_accuracy`` =
the discriminator's accuracy on real vs fake in step 2. Per epoch (:meth:`evaluate`): ``fd`` (the
Fréchet distance of :mod:`sim.quality` between ``gan.eval_samples`` generated images, read through
the crossbars with fixed noise, and the test images), ``coverage_min``, ``classes_covered``,
``g_loss``, ``d_loss`` (epoch means). ``metric = "fd"``, lower is better.

Images written: ``samples_epochNNN.png`` (10 x 10 grid from a fixed latent batch) per epoch, by
:meth:`plot` (called by ``sim.plots.plot_run``) or at once when the trainer sets ``task.out_dir``;
``gan_metrics.png`` (losses, FD, coverage per epoch).

Random streams (``SeedSequence([train.seed, stream, ...])``): permutation 2 (per epoch), latent 4
(per epoch), evaluation noise 5, grid noise 6; the init and device streams of :mod:`.models`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import MAX_LAYERS, MAX_WIDTH, short as _short
from ..nn import Dense, Dropout, Optimizer, Sequential, Tanh, apply_updates, init_weights
from ..nn.gan_layers import ClassBias, LeakyReLU, bce_with_logits, one_hot
from ..nn.losses import softmax_cross_entropy
from ..nn.recurrent import clip_gradients
from ..nn.stores import FP32Weights
from . import TaskSpec
from .base import Task
from .models import _Builder, make_store

LATENT_STREAM = 4
EVAL_STREAM = 5
GRID_STREAM = 6
SAMPLE_STREAM = 7
D_DROPOUT_STREAM_BASE = 600   # backend child streams 600 + j: masks of D's j-th dropout layer
GRID = 10                  # the per-epoch grid is GRID x GRID images


class GANTask(Task):
    metric = "fd"
    eval_metrics = ("fd", "coverage_min", "classes_covered", "g_loss", "d_loss", "label_match")
    maximised = ("coverage_min", "classes_covered", "label_match")
    training_averages = ("g_loss", "d_loss")
    higher_is_better = False
    train_metric = "d_accuracy"

    def __init__(self, cfg, ds, be):
        self.cfg, self.ds, self.be, self.xp = cfg, ds, be, be.xp
        xp, t = self.xp, cfg.train
        if ds.n_features != 784:
            raise ValueError(f"the GAN task generates 28x28 MNIST digits; dataset {ds.name} has "
                             f"{ds.n_features} features (use --dataset mnist, --no-fallback)")
        self.side = 28
        ntr = t.train_subset or len(ds.x_train)
        nte = t.test_subset or len(ds.x_test)
        self.x_train = xp.asarray(ds.x_train[:ntr].reshape(ntr, -1) * 2.0 - 1.0, dtype="float32")  # [-1, 1]
        self.n_classes = int(ds.n_classes)
        self.conditioning = cfg.gan.conditioning
        self.conditional = self.conditioning != "none"         # G draws the digit it is given
        self.d_label_input = self.conditioning == "cgan"       # D reads (image, label)
        self.aux = self.conditioning == "acgan"                # D classifies the digit
        self.label_rows = self.conditional and cfg.gan.label_input == "crossbar"   # one-hot rows on G1 (D1)
        self.y_train = xp.asarray(np.asarray(ds.y_train[:ntr], dtype=np.int64))
        self.x_test01 = np.asarray(ds.x_test[:nte].reshape(nte, -1), dtype=np.float32)             # [0, 1]
        self.G, self.D = self._build()
        self.networks = {"generator": self.G, "discriminator": self.D}
        self.opt_g = self._optimizer()
        self.opt_d = self._optimizer()
        self.out_dir: Path | None = None    # set by a trainer that wants the grids written at once
        self.grids: dict[int, np.ndarray] = {}   # epoch -> uint8 grid image (kept in the checkpoint)
        self._epoch = 0
        self._sums = {"g": 0.0, "d": 0.0, "n": 0}
        self._fd = None
        self._eval_z = None
        self.last_grad_norm = {"g": 0.0, "d": 0.0}   # global L2 norms of the last step, before clipping

    # --- construction -------------------------------------------------------------------------------
    def _optimizer(self) -> Optimizer:
        t = self.cfg.train
        return Optimizer(t.optimizer, self.xp, t.momentum, t.adam_beta1, t.adam_beta2, t.adam_eps)

    def _build(self):
        cfg, be, xp, g = self.cfg, self.be, self.xp, self.cfg.gan
        b = _Builder(cfg, be)      # one init stream, per-layer w_max/epsilon in G-then-D order
        n_g = len(g.generator) + 1

        def store(n_out, n_in):
            i = b.i
            w0 = init_weights(n_out, n_in, cfg.model.init, cfg.model.init_gain, b.rng)
            b.i += 1
            if cfg.synapse.mode == "fp32" or (g.generator_only_pcm and i >= n_g):
                return FP32Weights(w0, be)
            return make_store(cfg, be, w0, i, b.w_max[i], b.eps[i])

        def mlp(prefix, sizes, out_act, dropout=0.0, class_bias=False):
            layers = []
            for j in range(len(sizes) - 1):
                layers.append(Dense(f"{prefix}fc{j + 1}", store(sizes[j + 1], sizes[j]), xp))
                if j == 0 and class_bias:           # label_input = "digital": E[c] after the first layer
                    layers.append(ClassBias(f"{prefix}cls1", xp, self.n_classes, sizes[1]))
                if j < len(sizes) - 2:
                    layers.append(LeakyReLU(f"{prefix}act{j + 1}", xp, g.leaky_slope))
                    if dropout:
                        layers.append(Dropout(f"{prefix}drop{j + 1}", xp, dropout,
                                              be.child_rng(D_DROPOUT_STREAM_BASE + j)))
            if out_act is not None:
                layers.append(out_act)
            return layers

        k = self.n_classes
        rows = self.label_rows
        g_in = g.latent_dim + (k if rows else 0)                # one-hot label rows on G1
        d_in = 784 + (k if rows and self.d_label_input else 0)  # cgan: one-hot label rows on D1
        d_out = 1 + (k if self.aux else 0)                      # acgan: real/fake logit + class logits
        G = Sequential(mlp("g_", [g_in, *g.generator, 784], Tanh("g_tanh", xp),
                           class_bias=self.conditional and not rows), name="generator")
        D = Sequential(mlp("d_", [d_in, *g.discriminator, d_out], None, g.d_dropout,
                           class_bias=self.d_label_input and not rows), name="discriminator")
        return G, D

    # --- training -----------------------------------------------------------------------------------
    def epoch_batches(self, epoch: int) -> list:
        self._epoch = epoch
        self._sums = {"g": 0.0, "d": 0.0, "n": 0}
        batches = self.shuffled_batches(int(self.x_train.shape[0]), epoch)
        self._z_rng = self.stream_rng(LATENT_STREAM, epoch)
        return batches

    def _latent(self, rng, n: int):
        return self.xp.asarray(rng.standard_normal((n, self.cfg.gan.latent_dim), dtype=np.float32))

    @staticmethod
    def _set_labels(net, labels):
        """Labels of the next forward for the net's ClassBias layers (label_input = "digital")."""
        for L in net.layers:
            if isinstance(L, ClassBias):
                L.labels = labels

    def _g_input(self, z, labels):
        """G's input: z, or [z, one-hot(label)] for a conditional GAN with label rows on G1."""
        if self.conditional and not self.label_rows:
            self._set_labels(self.G, labels)
        return z if not self.label_rows else self.xp.concatenate([z, one_hot(self.xp, labels, self.n_classes)], axis=1)

    def _d_input(self, x, labels):
        """D's input: the images, or [image, one-hot(label)] for the cgan with label rows on D1."""
        return x if not (self.d_label_input and self.label_rows) else \
            self.xp.concatenate([x, one_hot(self.xp, labels, self.n_classes)], axis=1)

    def _d_labels(self, labels):
        """cgan with label_input = "digital": the labels of D's next forward (its ClassBias)."""
        if self.d_label_input and not self.label_rows:
            self._set_labels(self.D, labels)

    @staticmethod
    def balanced_labels(n: int, n_classes: int = 10) -> np.ndarray:
        """Digits asked for at evaluation: sample i gets i mod n_classes (every digit equally)."""
        return np.arange(n) % n_classes

    def train_step(self, idx, lr, rand_rng, opt, events) -> dict:
        xp, G, D = self.xp, self.G, self.D
        real = self.x_train[idx]
        B = int(real.shape[0])
        z = self._latent(self._z_rng, B)
        y_real = y_fake = None
        if self.conditional:            # fakes' labels: uniform digits drawn after z from the same stream
            y_real = self.y_train[idx]
            y_fake = xp.asarray(self._z_rng.integers(0, self.n_classes, B))
        for net in (G, D):
            net.train()
            net.bind_events(events)
        fake = G.forward(self._g_input(z, y_fake))
        fake_in = self._d_input(fake, y_fake)
        # --- discriminator step: real -> 1, fake -> 0 --------------------------------------------
        if self.d_label_input:
            self._d_labels(xp.concatenate([y_real, y_fake]))
        out = D.forward(xp.concatenate([self._d_input(real, y_real), fake_in]))
        logits = out[:, :1]                                  # real/fake logit
        lr_real, d_real = bce_with_logits(xp, logits[:B], self.cfg.gan.real_label)
        lf_fake, d_fake = bce_with_logits(xp, logits[B:], 0.0)
        d_loss = (lr_real + lf_fake) / B
        correct = int((logits[:B] > 0).sum()) + int((logits[B:] < 0).sum())
        d_out = xp.concatenate([d_real, d_fake]) * (1.0 / B)  # dL_D/dlogit (2B, 1)
        if self.aux:                                         # + aux_weight x CE(class logits of the reals)
            lc, _, d_cls = softmax_cross_entropy(xp, out[:B, 1:], y_real)   # mean over B; d = (p - onehot)/B
            d_loss += self.cfg.gan.aux_weight * lc
            d_cls *= self.cfg.gan.aux_weight
            d_out = xp.concatenate([d_out, xp.concatenate([d_cls, xp.zeros_like(d_cls)])], axis=1)
        self.opt_d.step_begin()
        D.backward(d_out, need_dx=False)
        self.last_grad_norm["d"] = self._clip(D)
        p1, r1 = apply_updates(D.update_order(), self.opt_d, lr * self.cfg.gan.d_lr_scale, rand_rng, events, B)
        # --- generator step (non-saturating): fake -> 1 through the updated D ------------------------
        self._d_labels(y_fake)
        out_g = D.forward(fake_in)
        lg, d_g = bce_with_logits(xp, out_g[:, :1], 1.0)
        g_loss = lg / B
        d_g *= 1.0 / B
        if self.aux:                                         # + aux_weight x CE(D's class of the fakes, asked digit)
            lc, _, d_cls = softmax_cross_entropy(xp, out_g[:, 1:], y_fake)
            g_loss += self.cfg.gan.aux_weight * lc
            d_g = xp.concatenate([d_g, d_cls * self.cfg.gan.aux_weight], axis=1)
        dx = input_gradient(D, d_g)[:, :784]                 # transposed reads of D: dL/dfake (label rows dropped)
        self.opt_g.step_begin()
        G.backward(dx, need_dx=False)
        self.last_grad_norm["g"] = self._clip(G)
        p2, r2 = apply_updates(G.update_order(), self.opt_g, lr, rand_rng, events, B)
        events.add(softmax_outputs=3 * B                    # sigmoid/BCE outputs: 2B (D step) + B (G step)
                   + (2 * B * self.n_classes if self.aux else 0))   # acgan: class softmax, B reals + B fakes
        self._sums["g"] += g_loss * B
        self._sums["d"] += d_loss * B
        self._sums["n"] += B
        return {"loss_sum": (d_loss + g_loss) * B, "metric_sum": correct / 2.0, "n": B,
                "pulses": p1 + p2, "refreshes": r1 + r2}

    def _clip(self, net) -> float:
        """Digital gradient clipping of one network (``gan.clip_norm`` > 0): its global L2 norm is
        scaled down to clip_norm when above; returns the norm before clipping (0 when off)."""
        c = self.cfg.gan.clip_norm
        return clip_gradients(net.params(), c, self.xp) if c > 0 else 0.0

    # --- generation and evaluation --------------------------------------------------------------------
    def generate(self, z, batch: int | None = None, labels=None) -> np.ndarray:
        """Images in [0, 1], (N, 784), through the generator's crossbar reads (evaluation mode).
        ``labels``: the digits asked for (conditional GAN; None: balanced, i mod 10)."""
        G, be = self.G, self.be
        batch = batch or self.cfg.train.eval_batch
        G.eval()
        G.bind_events(None)
        if self.conditional:
            labels = self.xp.asarray(self.balanced_labels(z.shape[0], self.n_classes) if labels is None
                                     else np.asarray(labels))
        out = [be.asnumpy(G.forward(self._g_input(z[i:i + batch], None if labels is None else labels[i:i + batch])))
               for i in range(0, z.shape[0], batch)]
        return np.clip((np.concatenate(out) + 1.0) * 0.5, 0.0, 1.0).astype(np.float32)

    def fd_metric(self):
        if self._fd is None:
            from ..quality import FDMetric, load_or_train
            path = self.cfg.gan.fd_classifier or None
            self._fd = FDMetric(load_or_train(path), self.x_test01)
        return self._fd

    def evaluate(self) -> dict:
        g = self.cfg.gan
        if self._eval_z is None:
            rng = self.stream_rng(EVAL_STREAM)
            self._eval_z = self._latent(rng, g.eval_samples)
        metric = self.fd_metric()
        with self.uncounted():
            imgs = self.generate(self._eval_z)
            grid_z = self._latent(self.stream_rng(GRID_STREAM), GRID * GRID)
            self.grids[self._epoch + 1] = to_uint8(grid(self.generate(grid_z), GRID, self.side))
        q = metric(imgs)
        n = max(self._sums["n"], 1)
        if self.out_dir is not None:
            self._write_grid(Path(self.out_dir), self._epoch + 1)
        out = {"fd": q["fd"], "coverage_min": q["coverage_min"], "classes_covered": q["classes_covered"],
               "g_loss": self._sums["g"] / n, "d_loss": self._sums["d"] / n,
               "class_hist": [round(float(h), 4) for h in q["hist"]]}
        if self.conditional:             # the digit drawn is the digit asked for
            asked = self.balanced_labels(len(q["pred"]), self.n_classes)
            out["label_match"] = float(np.mean(np.asarray(q["pred"]) == asked))
        return out

    # --- files --------------------------------------------------------------------------------------
    def _write_grid(self, out: Path, epoch: int):
        save_png(out / f"samples_epoch{epoch:03d}.png", self.grids[epoch])

    def plot(self, out_dir: Path, metrics: list) -> None:
        """``samples_epochNNN.png`` for every epoch held, ``gan_metrics.png`` (losses, FD, coverage),
        and ``fd_classifier.json`` (the record of the classifier the FD was measured with)."""
        out_dir = Path(out_dir)
        for ep in sorted(self.grids):
            save_png(out_dir / f"samples_epoch{ep:03d}.png", self.grids[ep])
        if self._fd is not None and self._fd.clf.meta:
            import json
            (out_dir / "fd_classifier.json").write_text(json.dumps(self._fd.clf.meta, indent=2) + "\n")
        if not metrics:
            return
        from ..plots import _plt
        plt = _plt()
        ep = [r["epoch"] for r in metrics]
        fig, axes = plt.subplots(1, 3, figsize=(14, 4))
        axes[0].plot(ep, [r["g_loss"] for r in metrics], "o-", label="generator")
        axes[0].plot(ep, [r["d_loss"] for r in metrics], "s-", label="discriminator")
        axes[0].set_ylabel("loss (epoch mean)")
        axes[0].legend()
        axes[1].plot(ep, [r["fd"] for r in metrics], "o-")
        axes[1].set_ylabel("Fréchet distance (classifier features)")
        axes[1].set_yscale("log")
        axes[2].plot(ep, [100 * r["coverage_min"] for r in metrics], "o-", label="rarest class (%)")
        axes[2].axhline(5, color="r", ls=":", label="5 % target")
        axes[2].set_ylabel("rarest generated class (% of samples)")
        ax2 = axes[2].twinx()
        ax2.plot(ep, [r["classes_covered"] for r in metrics], "g.--")
        ax2.set_ylabel("classes with >= 1 %", color="g")
        ax2.set_ylim(0, 10.5)
        axes[2].legend(loc="lower right")
        for ax in axes:
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
        fig.suptitle(f"GAN on {self.ds.name} — synapse {self.cfg.synapse.mode}"
                     + (" (generator only)" if self.cfg.gan.generator_only_pcm else ""))
        fig.tight_layout()
        fig.savefig(out_dir / "gan_metrics.png", dpi=110)
        plt.close(fig)

    def sample(self, args, out) -> int:
        """``mcasim sample RUN --out grid.png [--n 100] [--seed 0]``: a grid of generated digits."""
        n = int(args.n)
        rng = np.random.default_rng(np.random.SeedSequence([int(args.seed), SAMPLE_STREAM]))
        imgs = self.generate(self._latent(rng, n))
        cols = int(math.ceil(math.sqrt(n)))
        path = Path(args.out) if args.out else Path(args.run) / f"samples_seed{args.seed}.png"
        save_png(path, to_uint8(grid(imgs, cols, self.side)))
        print(path, file=out)
        return 0

    # --- checkpoint ---------------------------------------------------------------------------------
    def state_dict(self, be) -> dict:
        return {"generator": self.G.state_dict(be), "discriminator": self.D.state_dict(be),
                "opt_g": self.opt_g.state_dict(be), "opt_d": self.opt_d.state_dict(be),
                "grids": dict(self.grids)}

    def load_state_dict(self, st: dict) -> None:
        self.G.load_state_dict(st["generator"])
        self.D.load_state_dict(st["discriminator"])
        self.opt_g.load_state_dict(st["opt_g"])
        self.opt_d.load_state_dict(st["opt_d"])
        self.grids = dict(st.get("grids", {}))


def input_gradient(net: Sequential, d):
    """dL/d(input) of ``net`` for the output error ``d``, without its parameter gradients (the G step
    does not update D): a dense layer's transposed read ``d W`` only, other layers' own backward."""
    for L in reversed(net.layers):
        if isinstance(L, Dense) and L.g is None and L.out_scale is None:
            d = L.store.backward(d)
        else:
            d = L.backward(d, need_dx=True)
    return d


# --- image grids -----------------------------------------------------------------------------------
def grid(imgs, cols: int, side: int, pad: int = 2) -> np.ndarray:
    """(N, side*side) in [0, 1] -> one (rows*(side+pad)+pad, cols*(side+pad)+pad) image, black frame."""
    imgs = np.asarray(imgs).reshape(-1, side, side)
    n = imgs.shape[0]
    rows = int(math.ceil(n / cols))
    s = side + pad
    out = np.zeros((rows * s + pad, cols * s + pad), dtype=np.float32)
    for k in range(n):
        r, c = divmod(k, cols)
        out[pad + r * s:pad + r * s + side, pad + c * s:pad + c * s + side] = imgs[k]
    return out


def to_uint8(img) -> np.ndarray:
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def save_png(path: Path, img_u8: np.ndarray, scale: int = 2) -> None:
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.image import imsave
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    big = np.repeat(np.repeat(img_u8, scale, axis=0), scale, axis=1)
    imsave(path, big, cmap="gray", vmin=0, vmax=255)


# --- registration (sim/tasks/__init__.py): the [gan] section, its checks, the layer count ----------
@dataclass
class GANSection:
    """``[gan]``: generator and discriminator (model.arch = "gan")."""
    latent_dim: int = 100            # generator input noise size
    generator: list = field(default_factory=lambda: [256, 512])       # generator hidden widths
    discriminator: list = field(default_factory=lambda: [512, 256])   # discriminator hidden widths
    generator_only_pcm: bool = False  # ablation: the discriminator keeps fp32 weights
    leaky_slope: float = 0.2         # LeakyReLU negative slope of both nets (DCGAN practice)
    d_lr_scale: float = 1.0          # discriminator learning rate relative to train.lr
    d_dropout: float = 0.0           # digital dropout after each hidden activation of D (the
                                     # classic MLP-GAN recipe uses ~0.3); 0 = none
    real_label: float = 1.0          # D's target for real images: < 1 is one-sided label smoothing
                                     # (Salimans et al. 2016); fakes always 0, G's target always 1
    clip_norm: float = 0.0           # digital gradient clipping per network and step: global L2
                                     # norm above clip_norm is scaled down to it; 0 = off
    conditioning: str = "none"       # "none": unconditional; "cgan": the digit's one-hot label joins z
                                     # at G's input and the image at D's input (Mirza & Osindero 2014);
                                     # "acgan": the label joins z at G's input and D has 10 extra class
                                     # logits (Odena et al. 2017, docs/gan.md); evaluation then asks for
                                     # every digit equally and reports label_match
    label_input: str = "crossbar"    # conditional GANs: "crossbar" = the one-hot label as 10 more
                                     # rows of G1 (and D1 for cgan); "digital" = the same maths as a
                                     # digital per-class bias after G1 (D1), onehot(c) W_c = W_c[c]
    aux_weight: float = 1.0          # acgan: weight of the class cross-entropy in both losses
    eval_samples: int = 10000        # generated images per evaluation (FD and coverage vs the test set)
    fd_classifier: str = ""          # FD classifier weights (sim/quality.py); "": the user cache
                                     # (~/.cache/mcasim/mnist_fd_classifier.npz), trained if missing


def _n_weight_layers(cfg) -> int:
    return len(cfg.gan.generator) + 1 + len(cfg.gan.discriminator) + 1     # G's then D's, as built


def _validate(cfg, need) -> None:
    g = cfg.gan
    need(1 <= g.latent_dim <= MAX_WIDTH, f"gan.latent_dim must be in [1, {MAX_WIDTH}], got {g.latent_dim}")
    for name in ("generator", "discriminator"):
        v = getattr(g, name)
        need(len(v) <= MAX_LAYERS and all(isinstance(h, int) and not isinstance(h, bool) and 1 <= h <= MAX_WIDTH
                                          for h in v),
             f"gan.{name} must be a list of at most {MAX_LAYERS} integers in [1, {MAX_WIDTH}], got "
             f"{_short(v)}")
    need(g.leaky_slope > 0, f"gan.leaky_slope must be > 0, got {g.leaky_slope}")
    need(g.d_lr_scale > 0, f"gan.d_lr_scale must be > 0, got {g.d_lr_scale}")
    need(0 <= g.d_dropout < 1, f"gan.d_dropout must be in [0, 1), got {g.d_dropout}")
    need(0.5 < g.real_label <= 1, f"gan.real_label must be in (0.5, 1], got {g.real_label}")
    need(g.conditioning in ("none", "cgan", "acgan"),
         f"gan.conditioning must be one of none, cgan, acgan, got {_short(g.conditioning)}")
    need(g.label_input in ("crossbar", "digital"),
         f"gan.label_input must be crossbar or digital, got {_short(g.label_input)}")
    need(g.aux_weight > 0, f"gan.aux_weight must be > 0, got {g.aux_weight}")
    need(g.clip_norm >= 0, f"gan.clip_norm must be >= 0 (0 = off), got {g.clip_norm}")
    need(g.eval_samples >= 2, f"gan.eval_samples must be >= 2 (a covariance), got {g.eval_samples}")


TASKS = (TaskSpec(arch="gan", task=GANTask, n_weight_layers=_n_weight_layers, validate=_validate,
                  section=GANSection, configs={"mnist": "gan_mnist"}),)      # configs/gan_mnist_*.toml
