"""Character-level language model (Penn Treebank characters): LSTM on crossbars, BPC.

Network (``[lstm]`` config, weight stores in this order for ``synapse.w_max``/``epsilon_uS``):

    [embedding: Dense (E, V) store on one-hot inputs, no bias]   (only with lstm.embedding > 0)
    LSTM gates: one (4H, in + H) store (in = V one-hot, or E)
    projection: Dense (V, H) store + digital bias -> logits -> softmax cross-entropy

Batches: the training text (the first ``train.train_subset`` characters when set) is cut into
``train.batch_size`` contiguous streams (rows); a mini-batch is the next window of ``lstm.bptt``
characters of every stream (the last window may be shorter). The LSTM state is carried (detached)
from one window to the next and reset to zero at the start of every epoch, so a checkpoint (written
at an epoch end) needs nothing beyond the networks for a bit-exact resume. Per mini-batch: forward
through the window (one crossbar read of the gate matrix per character and stream, the projection
on all B*T states at once), BPTT, digital gradient clipping (global L2 norm > ``lstm.clip_norm``:
scaled down), then every weight update through chi and the digital unit once.

Metric: bits per character, BPC = cross-entropy (nats) / ln 2, on valid and test (``valid_bpc``
ranks epochs; lower is better) through noisy crossbar reads, ``lstm.eval_streams`` streams in
parallel (the first ``train.test_subset`` characters of each split when set).
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import numpy as np

from ..config import MAX_WIDTH
from ..nn import LSTM, Dense, Sequential, apply_updates, init_weights, softmax_cross_entropy
from ..nn.recurrent import clip_gradients
from . import TaskSpec
from .base import Task
from .models import INIT_STREAM, make_store

LN2 = math.log(2.0)


def _streams(data: np.ndarray, n: int):
    """Cut a symbol array into ``n`` contiguous streams: inputs (n, L) and next-symbol targets (n, L)."""
    L = (len(data) - 1) // n
    if L < 1:
        raise ValueError(f"{len(data)} characters cannot feed {n} streams")
    return data[:n * L].reshape(n, L), data[1:n * L + 1].reshape(n, L)


class CharLMTask(Task):
    metric = "valid_bpc"
    higher_is_better = False
    train_metric = "train_bpc"
    eval_metrics = ("valid_bpc", "test_bpc")
    maximised = ()

    def __init__(self, cfg, ds, be):
        self.cfg, self.ds, self.be, self.xp = cfg, ds, be, be.xp
        if not hasattr(ds, "vocab"):
            raise ValueError(f"model.arch = 'lstm' needs a character corpus (--dataset ptb-char), got {ds.name}")
        xp, t, lc = self.xp, cfg.train, cfg.lstm
        self.V, self.H, self.E, self.T = len(ds.vocab), lc.hidden, lc.embedding, lc.bptt
        train = ds.train[:t.train_subset] if t.train_subset else ds.train
        x, y = _streams(np.asarray(train), t.batch_size)
        self.x_train, self.y_train = xp.asarray(x), xp.asarray(y)
        self.eval_sets = {}
        for split in ("valid", "test"):
            d = getattr(ds, split)
            d = d[:t.test_subset] if t.test_subset else d
            ex, ey = _streams(np.asarray(d), min(lc.eval_streams, max(1, (len(d) - 1) // 2)))
            self.eval_sets[split] = (xp.asarray(ex), xp.asarray(ey))
        self.eye = xp.eye(self.V, dtype="float32")
        if self.E == 0 and lc.input_scale != 1.0:
            self.eye *= lc.input_scale       # one-hot amplitude on the gate crossbar's DAC
        self.net = self._build()
        self.networks = {"net": self.net}
        self.h = self.c = None              # state carried across the windows of an epoch
        self.last_grad_norm = 0.0

    # --- network ---------------------------------------------------------------------------------
    def _build(self) -> Sequential:
        cfg, be, xp, m = self.cfg, self.be, self.xp, self.cfg.model
        n = cfg.n_weight_layers()
        analog = cfg.synapse.mode != "fp32"
        w_max = cfg.per_layer("w_max", n) if analog else [None] * n
        eps = cfg.per_layer("epsilon_uS", n) if analog else [None] * n
        rng = np.random.default_rng(np.random.SeedSequence([cfg.train.seed, INIT_STREAM]))
        shapes = ([(self.E, self.V)] if self.E else []) + [(4 * self.H, (self.E or self.V) + self.H),
                                                           (self.V, self.H)]
        stores = []
        for i, (o, k) in enumerate(shapes):
            w0 = init_weights(o, k, m.init, m.init_gain, rng)
            stores.append(make_store(cfg, be, w0, i, w_max[i], eps[i]))
        layers = []
        if self.E:
            self.embed = Dense("embed", stores.pop(0), xp, bias=False)
            layers.append(self.embed)
        else:
            self.embed = None
        self.lstm = LSTM("lstm", stores[0], xp, self.E or self.V, self.H, forget_bias=cfg.lstm.forget_bias)
        self.proj = Dense("proj", stores[1], xp, bias=True)
        return Sequential(layers + [self.lstm, self.proj], name="charlm")

    def _inputs(self, idx):
        """Symbol indices (B, T) -> LSTM inputs (B, T, in): one-hot, or its embedding (a crossbar read)."""
        x = self.eye[idx]
        if self.embed is None:
            return x
        B, T = idx.shape
        return self.embed.forward(x.reshape(B * T, self.V)).reshape(B, T, self.E)

    def _logits(self, idx, h, c):
        """Logits (B*T, V) of a window, and the final state."""
        hs = self.lstm.forward(self._inputs(idx), h, c)
        B, T = idx.shape
        return self.proj.forward(hs.reshape(B * T, self.H)), self.lstm.h, self.lstm.c

    # --- trainer interface -----------------------------------------------------------------------
    @property
    def n_train(self) -> int:
        return int(self.x_train.size)

    def epoch_batches(self, epoch: int) -> list:
        self.h = self.c = None              # every epoch starts from a zero state
        L = int(self.x_train.shape[1])
        return list(range(0, L, self.T))

    def train_step(self, s, lr, rand_rng, opt, events) -> dict:
        xp, net = self.xp, self.net
        xb = self.x_train[:, s:s + self.T]
        yb = self.y_train[:, s:s + self.T]
        B, T = int(xb.shape[0]), int(xb.shape[1])
        net.train()
        net.bind_events(events)
        logits, self.h, self.c = self._logits(xb, self.h, self.c)    # state carried, detached
        loss, _, d = softmax_cross_entropy(xp, logits, yb.reshape(-1))
        opt.step_begin()
        dh = self.proj.backward(d, need_dx=True).reshape(B, T, self.H)
        dx = self.lstm.backward(dh, need_dx=self.embed is not None)
        if self.embed is not None:
            self.embed.backward(dx.reshape(B * T, self.E), need_dx=False)
        self.last_grad_norm = clip_gradients(net.params(), self.cfg.lstm.clip_norm, xp)
        pulses, refreshes = apply_updates(net.update_order(), opt, lr, rand_rng, events, B * T)
        events.add(softmax_outputs=B * T * self.V)
        n = B * T
        return {"loss_sum": loss * n, "metric_sum": loss / LN2 * n, "n": n, "pulses": pulses,
                "refreshes": refreshes}

    def bpc(self, x, y) -> float:
        """Bits per character of next-symbol prediction over the streams (x, y): (S, L)."""
        xp, net = self.xp, self.net
        net.eval()
        net.bind_events(None)
        h = c = None
        nats, n = 0.0, 0
        for s in range(0, int(x.shape[1]), self.T):
            xb, yb = x[:, s:s + self.T], y[:, s:s + self.T]
            z, h, c = self._logits(xb, h, c)
            z = z - z.max(axis=1, keepdims=True)
            lse = xp.log(xp.exp(z).sum(axis=1))
            tgt = yb.reshape(-1)
            nats += float((lse - z[xp.arange(z.shape[0]), tgt]).sum())
            n += int(tgt.shape[0])
        self.lstm._cache = None
        return nats / n / LN2

    def evaluate(self) -> dict:
        """Valid and test BPC through fresh noisy crossbar reads (not training events)."""
        with self.uncounted():
            return {f"{k}_bpc": self.bpc(*v) for k, v in self.eval_sets.items()}

    # --- outputs ---------------------------------------------------------------------------------
    def sample(self, args, out) -> int:
        """``mcasim sample``: read ``--prime`` (after an end of sentence), then generate ``--chars``
        symbols at ``--temperature`` with a seeded generator, all through the crossbar reads."""
        ds, xp = self.ds, self.xp
        try:
            prime = ds.text_to_symbols(args.prime)
        except ValueError as exc:
            print(f"mcasim sample: error: --prime: {exc}", file=sys.stderr)
            return 2
        rng = np.random.default_rng(args.seed)
        self.net.eval()
        self.net.bind_events(None)
        h = c = None
        seq = [ds.vocab.index("\n")] + [ds.vocab.index(s) for s in prime]
        z, h, c = self._logits(xp.asarray(np.array([seq], dtype=np.int64)), h, c)
        out.write(args.prime)
        last = z[-1]
        for _ in range(int(args.chars)):
            logit = self.be.asnumpy(last).astype(np.float64) / args.temperature
            p = np.exp(logit - logit.max())
            p /= p.sum()
            k = int(rng.choice(self.V, p=p))
            out.write(ds.symbols_to_text([k]))
            z, h, c = self._logits(xp.asarray(np.array([[k]], dtype=np.int64)), h, c)
            last = z[-1]
        out.write("\n")
        out.flush()
        self.lstm._cache = None
        return 0

    def plot(self, out_dir, metrics) -> None:
        """``bpc.png``: train (running), valid and test BPC per epoch."""
        from ..plots import epoch_curves
        epoch_curves(out_dir / "bpc.png", metrics, (("train_bpc", "o-", "train (running)"), ("valid_bpc", "s-", "valid"),
                                                    ("test_bpc", "^-", "test")),
                     "bits per character", f"{self.ds.name} — LSTM {self.H}, synapse {self.cfg.synapse.mode}")


# --- registration (sim/tasks/__init__.py): the [lstm] section, its checks, the layer count ---------
@dataclass
class LSTMSection:
    """``[lstm]``: character-level LSTM language model (model.arch = "lstm")."""
    hidden: int = 256                # LSTM state size H (units), 1..MAX_WIDTH
    bptt: int = 100                  # truncated backprop-through-time length (characters)
    clip_norm: float = 1.0           # digital gradient clipping: global L2 norm per mini-batch (> 0)
    embedding: int = 0               # 0: one-hot inputs; > 0: learned embedding (a weight store) of that size
    forget_bias: float = 1.0         # initial forget-gate bias (engineering choice, standard practice:
                                     # the cell keeps its state at the start of training)
    input_scale: float = 1.0         # amplitude of the one-hot input on the gate crossbar's DAC (engineering
                                     # choice: > 1 shrinks the input-column weights by that factor, so they
                                     # share one w_max with the smaller recurrent weights; docs/lstm.md)
    eval_streams: int = 100          # parallel streams for valid/test BPC (evaluation batch; each stream
                                     # starts from a zero state, so more streams = more warm-up characters)


def _n_weight_layers(cfg) -> int:
    return (1 if cfg.lstm.embedding > 0 else 0) + 2          # [embedding], gate matrix, projection


def _validate(cfg, need) -> None:
    lc = cfg.lstm
    need(1 <= lc.hidden <= MAX_WIDTH, f"lstm.hidden must be in [1, {MAX_WIDTH}], got {lc.hidden}")
    need(lc.bptt >= 1, f"lstm.bptt must be >= 1, got {lc.bptt}")
    need(lc.clip_norm > 0, f"lstm.clip_norm must be > 0, got {lc.clip_norm}")
    need(0 <= lc.embedding <= MAX_WIDTH, f"lstm.embedding must be in [0, {MAX_WIDTH}], got {lc.embedding}")
    need(lc.input_scale > 0, f"lstm.input_scale must be > 0, got {lc.input_scale}")
    need(lc.eval_streams >= 1, f"lstm.eval_streams must be >= 1, got {lc.eval_streams}")


TASKS = (TaskSpec(arch="lstm", task=CharLMTask, n_weight_layers=_n_weight_layers, validate=_validate,
                  section=LSTMSection, configs={"ptb-char": "lstm_ptb"}),)   # configs/lstm_ptb_*.toml
