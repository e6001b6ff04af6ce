"""The paper's character-level LSTM (Penn Treebank) written in plain torch.nn, converted onto PCM.

    python examples/lstm_ptb.py --config configs/lstm_ptb_pcm.toml --out runs/torch_lstm \
        [--epochs 1] [--train-subset 200000] [--test-subset 20000]

As ``mcasim train lstm``: one-hot inputs (times ``lstm.input_scale``) onto the (4H, V + H) gate
crossbar, the projection on a second tile, ``batch_size`` contiguous character streams, windows of
``lstm.bptt`` characters with the state carried (detached), global gradient clipping, Adam in
digital with its step through chi and the digital unit. A checkpoint every epoch (resumed).
"""
from __future__ import annotations

from pathlib import Path
import argparse
import json
import math
import shlex
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import mcasim.torch as mt
from sim.config import load_config
from sim.data import load_dataset


class CharLSTM(nn.Module):
    """[one-hot (x input_scale) -> [embedding]] -> LSTM(H) -> projection (V) logits."""

    def __init__(self, vocab: int, hidden: int, embedding: int = 0, input_scale: float = 1.0,
                 forget_bias: float = 1.0):
        super().__init__()
        self.vocab, self.hidden, self.input_scale = vocab, hidden, input_scale
        self.embed = nn.Linear(vocab, embedding, bias=False) if embedding else None
        self.lstm = nn.LSTM(embedding or vocab, hidden, batch_first=True)
        self.proj = nn.Linear(hidden, vocab)
        nn.init.xavier_uniform_(self.proj.weight)
        with torch.no_grad():
            # Xavier over the whole (4H, in + H) gate matrix, as the native LSTM's one crossbar
            # (model.init = "xavier_uniform"), then split into torch's input and recurrent parts
            n_in = embedding or vocab
            gates = nn.init.xavier_uniform_(torch.empty(4 * hidden, n_in + hidden))
            self.lstm.weight_ih_l0.copy_(gates[:, :n_in])
            self.lstm.weight_hh_l0.copy_(gates[:, n_in:])
            for b in (self.lstm.bias_ih_l0, self.lstm.bias_hh_l0, self.proj.bias):
                b.zero_()
            self.lstm.bias_ih_l0[hidden:2 * hidden] = forget_bias      # forget gate open at the start

    def forward(self, idx, state=None):
        """idx (B, T) symbols -> logits (B*T, V), (h, c)."""
        x = F.one_hot(idx, self.vocab).float()
        if self.input_scale != 1.0:
            x = x * self.input_scale
        if self.embed is not None:
            x = self.embed(x)
        hs, state = self.lstm(x, state)
        return self.proj(hs.reshape(-1, self.hidden)), state


def streams(data: np.ndarray, n: int):
    """``n`` contiguous streams: inputs (n, L) and next-symbol targets (n, L)."""
    L = (len(data) - 1) // n
    return torch.from_numpy(data[:n * L].reshape(n, L).astype(np.int64)), \
        torch.from_numpy(data[1:n * L + 1].reshape(n, L).astype(np.int64))


def bpc(model, x, y, T: int) -> float:
    model.eval()
    nats, n, state = 0.0, 0, None
    with torch.no_grad():
        for s in range(0, x.shape[1], T):
            logits, state = model(x[:, s:s + T], state)
            tgt = y[:, s:s + T].reshape(-1)
            nats += float(F.cross_entropy(logits, tgt, reduction="sum"))
            n += int(tgt.numel())
    model.train()
    return nats / n / math.log(2)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="configs/lstm_ptb_pcm.toml")
    ap.add_argument("--out", required=True)
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--train-subset", type=int)
    ap.add_argument("--test-subset", type=int)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    cfg = load_config(a.config)
    t, lc = cfg.train, cfg.lstm
    ds = load_dataset("ptb-char")
    tr = ds.train[:a.train_subset or t.train_subset or len(ds.train)]
    te = ds.test[:a.test_subset or t.test_subset or len(ds.test)]
    x, y = streams(np.asarray(tr), t.batch_size)
    ex, ey = streams(np.asarray(te), min(lc.eval_streams, max(1, (len(te) - 1) // 2)))
    torch.manual_seed(t.seed)
    net = CharLSTM(len(ds.vocab), lc.hidden, lc.embedding, lc.input_scale, lc.forget_bias)
    model = mt.convert_to_analog(net, cfg)
    opt = mt.AnalogOptimizer(torch.optim.Adam(model.parameters(), lr=t.lr, betas=(t.adam_beta1, t.adam_beta2),
                                              eps=t.adam_eps))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    args = sys.argv[1:] if argv is None else list(argv)
    (out / "command.txt").write_text(" ".join(["python examples/lstm_ptb.py"] + [shlex.quote(x) for x in args]) + "\n")
    ck, epoch = out / "checkpoint.pt", 0
    if ck.is_file():
        st = torch.load(ck)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        epoch = st["epoch"]
    while epoch < (a.epochs or t.epochs):
        lr = max(t.lr * t.lr_decay ** epoch, t.lr_min)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.set_epoch(epoch)
        t0, nats, n, state, pulses = time.perf_counter(), 0.0, 0, None, 0
        for s in range(0, x.shape[1], lc.bptt):
            logits, state = model(x[:, s:s + lc.bptt], state)
            state = tuple(v.detach() for v in state)            # carried, no gradient across windows
            tgt = y[:, s:s + lc.bptt].reshape(-1)
            loss = F.cross_entropy(logits, tgt)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), lc.clip_norm)
            opt.step()
            opt.zero_grad()
            nats += float(loss.detach()) * tgt.numel()
            n += tgt.numel()
            pulses += opt.last_pulses
        epoch += 1
        rec = {"epoch": epoch, "lr": lr, "train_bpc": nats / n / math.log(2), "test_bpc": bpc(model, ex, ey, lc.bptt),
               "pulses": pulses, "seconds": time.perf_counter() - t0}
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch}, ck)
        with open(out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")
        print(json.dumps(rec), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
