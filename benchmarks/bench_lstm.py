"""LSTM training cost: PCM vs fp32 epoch of the same character LSTM, side by side.

One process, BLAS pinned to one thread, interleaved repetitions (fp32, pcm, fp32, pcm, ...; the
minimum of each is reported) so that machine noise hits both alike. The net and its knobs are
those of ``configs/lstm_ptb_{fp32,pcm}.toml`` (H = 256, one-hot inputs, 32 streams x 100
characters per mini-batch); PTB characters when found, else random symbols of its vocabulary size.
Per epoch = the timed seconds per character x the 5,017,482 training characters of PTB. Also: one
time step of the gate matrix (B = 32 vectors of in + H) as a plain matmul and as a crossbar read
(DAC, read noise, ADC), forward and transposed.
"""
from __future__ import annotations

import time

import numpy as np

from sim.data import DatasetError
from sim.data.ptb import CharCorpus

from .common import best_time, blas_threads, interleaved_best, mode_trainer

BATCHES = 6            # mini-batches timed per repetition (6 x 3,200 characters; with 3 the fp32
                       # figure, ~0.4 s a window, moved 234-267 s/epoch over six quiet runs)
REPEATS = 6            # interleaved rounds (fp32, pcm, fp32, ...), the fastest of each mode kept: with
                       # 3 rounds the 2-core VM's noise moved the ratio 2.98-3.52x over three quiet runs
EPOCH_CHARS = 5_017_482
STEP_REPEATS = 20


def _data(n: int = 200_000) -> CharCorpus:
    try:
        from sim.data.ptb import load_ptb_char
        c = load_ptb_char()
        return CharCorpus("ptb-char", c.vocab, c.train[:n], c.valid[:20_000], c.test[:20_000], source=c.source)
    except DatasetError:
        rng = np.random.default_rng(0)
        vocab = [chr(33 + i) for i in range(50)]
        return CharCorpus("random-ptb-shape", vocab, rng.integers(0, 50, n), rng.integers(0, 50, 20_000),
                          rng.integers(0, 50, 20_000), source="random")


def _trainer(mode: str, ds, backend: str, pcm_overrides: dict | None = None):
    return mode_trainer("lstm_ptb", mode, ds, backend, pcm_overrides)


def epoch_ratio(backend: str = "numpy", pcm_overrides: dict | None = None) -> dict:
    ds = _data()
    trainers = {m: _trainer(m, ds, backend, pcm_overrides) for m in ("fp32", "pcm", "pcm_fused", "pcm_ziggurat")}
    keys = {m: tr.task.epoch_batches(0) for m, tr in trainers.items()}
    best = interleaved_best(trainers, keys, 1, BATCHES, REPEATS)
    chars = trainers["fp32"].cfg.train.batch_size * trainers["fp32"].cfg.lstm.bptt * BATCHES
    per_epoch = {m: best[m] / chars * EPOCH_CHARS for m in trainers}
    t = {}
    for m in ("fp32", "pcm"):                  # evaluation (valid + test slices, 40,000 chars)
        t0 = time.perf_counter()
        trainers[m].task.evaluate()
        t[m] = time.perf_counter() - t0
    lc = trainers["fp32"].cfg.lstm
    return {"backend": backend, "dataset": ds.name, "hidden": lc.hidden, "bptt": lc.bptt,
            "streams": trainers["fp32"].cfg.train.batch_size, "seconds_per_epoch": per_epoch,
            "pcm_over_fp32": per_epoch["pcm"] / per_epoch["fp32"],
            "pcm_ziggurat_over_fp32": per_epoch["pcm_ziggurat"] / per_epoch["fp32"],
            "pcm_fused_over_fp32": per_epoch["pcm_fused"] / per_epoch["fp32"],
            "eval_seconds_per_1M_chars": {m: t[m] / 40_000 * 1e6 for m in t}}


def step_costs(backend: str = "numpy", pcm_overrides: dict | None = None) -> dict:
    ds = _data(20_000)
    tr = _trainer("pcm", ds, backend, pcm_overrides)
    xp = tr.xp
    L = tr.task.lstm
    B = tr.cfg.train.batch_size
    rng = np.random.default_rng(0)
    z = xp.asarray(rng.uniform(-1, 1, (B, L.n_in + L.H)).astype(np.float32))
    d = xp.asarray(rng.normal(0, 0.01, (B, 4 * L.H)).astype(np.float32))
    w = L.store.weights()

    def best(fn):
        return best_time(fn, STEP_REPEATS, tr.be)

    with tr.task.uncounted():
        mm, mmt = best(lambda: z @ w.T), best(lambda: d @ w)
        fw, bw = best(lambda: L.store.forward(z)), best(lambda: L.store.backward(d))
    return {"shape": [int(w.shape[0]), int(w.shape[1])], "batch": B, "matmul_s": mm,
            "crossbar_forward_over_matmul": fw / mm, "crossbar_backward_over_matmul": bw / mmt}


def run(backend: str = "numpy", threads: int | None = 1, pcm_overrides: dict | None = None) -> dict:
    """``pcm_overrides``: ``{section: {key: value}}`` applied to the PCM config (``--set``)."""
    with blas_threads(threads):
        return {"epoch": epoch_ratio(backend, pcm_overrides), "step": step_costs(backend, pcm_overrides)}


def table(res: dict) -> str:
    e, s = res["epoch"], res["step"]
    return "\n".join([
        f"  LSTM epoch ({EPOCH_CHARS:,} characters, H {e['hidden']}, {e['streams']} streams x {e['bptt']}, "
        f"{e['dataset']}, backend {e['backend']}):",
        f"    fp32 {e['seconds_per_epoch']['fp32']:.0f} s   pcm {e['seconds_per_epoch']['pcm']:.0f} s   "
        f"pcm / fp32 = {e['pcm_over_fp32']:.2f}x (reference engine)   fused engine: pcm "
        f"{e['seconds_per_epoch']['pcm_fused']:.0f} s = {e['pcm_fused_over_fp32']:.2f}x (target <= 2x)",
        f"    the PCM config with the ziggurat read noise (tile.noise_sampler): "
        f"{e['seconds_per_epoch']['pcm_ziggurat']:.0f} s = {e['pcm_ziggurat_over_fp32']:.2f}x",
        f"    evaluation per 1M characters: fp32 {e['eval_seconds_per_1M_chars']['fp32']:.0f} s   "
        f"pcm {e['eval_seconds_per_1M_chars']['pcm']:.0f} s",
        f"  one time step of the gate matrix {s['shape'][0]}x{s['shape'][1]}, {s['batch']} vectors: matmul "
        f"{1e3 * s['matmul_s']:.2f} ms; crossbar read {s['crossbar_forward_over_matmul']:.2f}x, "
        f"transposed read {s['crossbar_backward_over_matmul']:.2f}x",
    ])


if __name__ == "__main__":
    r = run()
    print(table(r))
