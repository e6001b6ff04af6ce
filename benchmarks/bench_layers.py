"""Forward and backward at matmul speed (issue 24): the native fp32 nets on both layer engines
against their PyTorch twins, and the fused crossbar read against a plain matmul.

One process, one core (BLAS pinned to one thread, ``torch.set_num_threads(1)``; run it with
``OMP_NUM_THREADS=1``), interleaved repetitions (reference, fast, torch, reference, ...; the
minimum of each kept) so that machine noise hits all alike.

* ``cnn`` / ``lstm``: a training step (forward + backward + optimizer) of the fp32 net of
  ``configs/cnn_cifar10_fp32.toml`` (batch 64; augmentation off: the torch twin has none) and of
  ``configs/lstm_ptb_fp32.toml`` (32 streams x 100 characters), native on the ``reference`` and the
  ``fast`` layer engine and as the torch twin (``benchmarks/torch_twins.py``), as seconds per epoch
  (50,000 images; 5,017,482 characters) and the ratios native / torch; per layer kind the
  native milliseconds per step (im2col, conv matmul, col2im, pooling, BatchNorm, ...) and torch's
  largest ops (torch.profiler). Without torch the native figures alone (``torch: null``).
* ``crossbar``: ``gpu_model.kernels.crossbar_read.fused_mvm`` (forward and transposed read, DAC,
  read noise, ADC) against a plain matmul of the same shape, for every weight layer of the CNN
  (patch matrices at batch 64), the MLP (784-250-10, batch 10) and the LSTM gate matrix (B = 32),
  and the tile's present read (``AnalogMatrix.forward/backward``) for comparison.

    OMP_NUM_THREADS=1 python -m benchmarks.run layers
"""
from __future__ import annotations

import time

import numpy as np

from sim.nn import layers as L

from . import torch_twins as tt
from .common import blas_threads, config_trainer

WARMUP = 2
CNN_BATCHES = 4        # steps timed per repetition (256 images)
LSTM_BATCHES = 3       # windows timed per repetition (9,600 characters)
REPEATS = 3
EPOCH_IMAGES = 50_000
EPOCH_CHARS = 5_017_482
ENGINES = L.LAYER_ENGINES
NO_AUGMENT = {"train": {"augment": False}}


# --- native per-layer timing --------------------------------------------------------------------------
class LayerTimer:
    """Wraps every layer's forward/backward (and the module-level im2col/col2im) of ``net`` with
    timers: milliseconds per kind ("Conv2d fwd", "im2col", ...), accumulated until ``restore``."""

    def __init__(self, net):
        self.t, self.restores = {}, []
        for m in net.modules():
            if m is net:
                continue
            for meth in ("forward", "backward"):
                self._wrap(m, meth, f"{type(m).__name__} {meth[:3]}")
        for fn in ("im2col", "col2im"):
            self._wrap(L, fn, fn)

    def _wrap(self, obj, name, key):
        orig = getattr(obj, name)

        def timed(*a, **k):
            t0 = time.perf_counter()
            out = orig(*a, **k)
            self.t[key] = self.t.get(key, 0.0) + time.perf_counter() - t0
            return out

        setattr(obj, name, timed)
        self.restores.append((obj, name, orig, obj is L))

    def restore(self):
        for obj, name, orig, is_module in self.restores:
            if is_module:
                setattr(obj, name, orig)
            else:
                delattr(obj, name)              # back to the class's method

    def per_step(self, steps: int) -> dict:
        """ms per step; the conv forward/backward less their im2col/col2im (the matmuls)."""
        ms = {k: 1e3 * v / steps for k, v in self.t.items()}
        if "Conv2d for" in ms:
            ms["conv matmul fwd (Conv2d for - im2col)"] = ms.pop("Conv2d for") - ms.get("im2col", 0.0)
        if "Conv2d bac" in ms:
            ms["conv matmuls bwd (Conv2d bac - col2im)"] = ms.pop("Conv2d bac") - ms.get("col2im", 0.0)
        return dict(sorted(ms.items(), key=lambda kv: -kv[1]))


def _native_steps(tr, keys, engine: str) -> float:
    with L.layer_engine(engine):
        t0 = time.perf_counter()
        for k in keys:
            tr.step(k, tr.lr_at(0), tr.be.child_rng(8))
        return time.perf_counter() - t0


def _layer_profile(tr, keys, engine: str) -> dict:
    net = tr.task.net
    lt = LayerTimer(net)
    try:
        t = _native_steps(tr, keys, engine)
    finally:
        lt.restore()
    return {"step_ms": 1e3 * t / len(keys), "layers_ms": lt.per_step(len(keys))}


def _interleaved(fns: dict, warmup_keys, rounds) -> dict:
    """Best seconds per entry of ``fns`` ({name: fn(keys) -> seconds}) over the rounds."""
    for fn in fns.values():
        fn(warmup_keys)
    best = {n: float("inf") for n in fns}
    for keys in rounds:
        for n, fn in fns.items():
            best[n] = min(best[n], fn(keys))
    return best


def _ratios(per_epoch: dict) -> dict:
    if "torch" not in per_epoch:
        return {}
    return {f"{e}_over_torch": per_epoch[e] / per_epoch["torch"] for e in ENGINES}


# --- CNN ------------------------------------------------------------------------------------------------
def cnn(torch_ok: bool) -> dict:
    from .bench_cnn import _data
    ds = _data(64 * (WARMUP + CNN_BATCHES * REPEATS + CNN_BATCHES))
    tr = config_trainer("cnn_cifar10_fp32", ds, "numpy", NO_AUGMENT)
    keys = tr.task.epoch_batches(0)
    B = tr.cfg.train.batch_size
    fns = {e: (lambda ks, e=e: _native_steps(tr, ks, e)) for e in ENGINES}
    if torch_ok:
        import torch
        twin = tt.cnn_twin(tr.cfg, ds.x_train.shape[1:], ds.n_classes)
        ts = tt.TorchStep(twin, tr.cfg)
        xs = torch.from_numpy(np.ascontiguousarray(ds.x_train.transpose(0, 3, 1, 2)))
        ys = torch.from_numpy(np.asarray(ds.y_train, dtype=np.int64))
        tb = [(xs[i * B:(i + 1) * B], ys[i * B:(i + 1) * B]) for i in range(len(keys))]
        fns["torch"] = lambda ks: tt.time_steps(ts.step, tb[:len(ks)])   # same batch size and count
    rounds = [keys[WARMUP + r * CNN_BATCHES: WARMUP + (r + 1) * CNN_BATCHES] for r in range(REPEATS)]
    best = _interleaved(fns, keys[:WARMUP], rounds)
    per_epoch = {n: t / (CNN_BATCHES * B) * EPOCH_IMAGES for n, t in best.items()}
    prof_keys = keys[WARMUP:WARMUP + CNN_BATCHES]
    out = {"batch_size": B, "dataset": ds.name, "seconds_per_epoch": per_epoch, **_ratios(per_epoch),
           "native_layers": {e: _layer_profile(tr, prof_keys, e) for e in ENGINES}}
    if torch_ok:
        out["torch_ops"] = tt.op_profile(ts.step, tb[:CNN_BATCHES])
    return out


# --- LSTM -----------------------------------------------------------------------------------------------
def lstm(torch_ok: bool) -> dict:
    from .bench_lstm import _data
    ds = _data()
    tr = config_trainer("lstm_ptb_fp32", ds, "numpy")
    keys = tr.task.epoch_batches(0)
    lc, B = tr.cfg.lstm, tr.cfg.train.batch_size
    fns = {e: (lambda ks, e=e: _native_steps(tr, ks, e)) for e in ENGINES}
    if torch_ok:
        import torch
        twin = tt.lstm_twin(tr.cfg, tr.task.V)
        ts = tt.TorchStep(twin, tr.cfg, clip_norm=lc.clip_norm)
        xt = torch.from_numpy(np.array(tr.task.x_train, dtype=np.int64))
        yt = torch.from_numpy(np.array(tr.task.y_train, dtype=np.int64))
        fns["torch"] = lambda ks: tt.time_steps(ts.step, [(xt[:, s:s + lc.bptt], yt[:, s:s + lc.bptt]) for s in ks])
    rounds = [keys[WARMUP + r * LSTM_BATCHES: WARMUP + (r + 1) * LSTM_BATCHES] for r in range(REPEATS)]
    best = _interleaved(fns, keys[:WARMUP], rounds)
    chars = B * lc.bptt * LSTM_BATCHES
    per_epoch = {n: t / chars * EPOCH_CHARS for n, t in best.items()}
    prof_keys = keys[WARMUP:WARMUP + LSTM_BATCHES]
    out = {"streams": B, "bptt": lc.bptt, "hidden": lc.hidden, "dataset": ds.name,
           "seconds_per_epoch": per_epoch, **_ratios(per_epoch),
           "native_layers": {e: _layer_profile(tr, prof_keys, e) for e in ENGINES}}
    if torch_ok:
        out["torch_ops"] = tt.op_profile(ts.step, [(xt[:, s:s + lc.bptt], yt[:, s:s + lc.bptt]) for s in prof_keys])
    return out


# --- entry points ---------------------------------------------------------------------------------------
def run(threads: int | None = 1) -> dict:
    torch_ok = tt.have_torch()
    if torch_ok:
        import torch
        torch.set_num_threads(threads or torch.get_num_threads())
    with blas_threads(threads):
        res = {"torch": None if not torch_ok else __import__("torch").__version__,
               "cnn": cnn(torch_ok), "lstm": lstm(torch_ok)}
        res["crossbar"] = crossbar()
    return res


# --- crossbar read ---------------------------------------------------------------------------------------
# (name, batch vectors, in_features, out_features): every weight layer of the CNN at batch 64 (the
# conv layers' patch matrices: 64 images x H*W positions), the MLP 784-250-10 at batch 10, the LSTM
# gate matrix (4H x (V + H)) at B = 32 streams
CROSSBAR_SHAPES = [
    ("cnn conv1", 64 * 32 * 32, 27, 32), ("cnn conv2", 64 * 16 * 16, 288, 64),
    ("cnn conv3", 64 * 8 * 8, 576, 128), ("cnn fc1", 64, 2048, 256), ("cnn fc2", 64, 256, 10),
    ("mlp fc1", 10, 784, 250), ("mlp fc2", 10, 250, 10), ("lstm gates", 32, 50 + 256, 4 * 256),
]
CROSSBAR_REPEATS = 7       # best of (each timed call is a few ms at most)


def _interleaved_ms(fns: dict, repeats: int = CROSSBAR_REPEATS) -> dict:
    """Best milliseconds per entry of ``fns`` ({name: fn()}): after one warm-up call each,
    ``repeats`` rounds call every fn once in turn (so that machine noise hits a variant and its
    plain-matmul baseline alike)."""
    for fn in fns.values():
        fn()
    best = {n: float("inf") for n in fns}
    for _ in range(repeats):
        for n, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[n] = min(best[n], time.perf_counter() - t0)
    return {n: 1e3 * t for n, t in best.items()}


def crossbar() -> list[dict]:
    """Per matrix: a plain float32 matmul (x W^T forward, d W backward); :func:`fused_mvm` over the
    tile blocks with JAP-2018 PCM read noise and the PCM configs' converters (8-bit DAC, 9-bit ADC,
    512 x 512 blocks, Box-Muller normals from the tile's generator: ``fused``), with the keyed
    normals drawn in the kernel (``keyed``), and without read noise (``ideal``: no variance
    matmul); and the tile's present read (AnalogMatrix.forward / backward, same preset); each as
    the ratio to the plain matmul of the same direction."""
    from gpu_model import JAP2018, AnalogMatrix, TilePreset
    from gpu_model.backend import make_backend
    from gpu_model.kernels.crossbar_read import ReadWork, read_key, tile_read
    rng = np.random.default_rng(0)
    out = []
    for name, B, K, N in CROSSBAR_SHAPES:
        m = AnalogMatrix(N, K, JAP2018, TilePreset(noise_sampler="box_muller"), make_backend("numpy", 0),
                         w_max=1.0)
        m.program(rng.uniform(-0.5, 0.5, (N, K)).astype(np.float32))
        m.count_events = False
        w, var = m.devices.weights(), m.devices.read_variance()
        x = np.maximum(rng.normal(size=(B, K)), 0).astype(np.float32)     # ReLU-like inputs
        d = rng.normal(0, 0.1, (B, N)).astype(np.float32)
        work, step = ReadWork(), [0]

        def fused(transpose, noise):
            step[0] += 1
            key = read_key(0, m.stream, step[0]) if noise == "keyed" else None
            m.read_noise = noise != "ideal"
            try:
                return tile_read(m, d if transpose else x, transpose, key=key, work=work)
            finally:
                m.read_noise = True

        fns = {"matmul_fwd": lambda: x @ w.T, "matmul_bwd": lambda: d @ w}
        for dr, tr in (("fwd", False), ("bwd", True)):
            for noise, name_ in (("rng", "fused"), ("keyed", "keyed"), ("ideal", "ideal")):
                fns[f"{name_}_{dr}"] = (lambda tr=tr, noise=noise: fused(tr, noise))
            fns[f"tile_{dr}"] = (lambda tr=tr: m.backward(d) if tr else m.forward(x))
        t = _interleaved_ms(fns)
        row = {"name": name, "batch": B, "n_in": K, "n_out": N, "tile_blocks": m.n_tiles,
               "matmul_ms": t["matmul_fwd"], "matmul_bwd_ms": t["matmul_bwd"]}
        for k, v in t.items():
            if not k.startswith("matmul"):
                row[f"{k}_ms"] = v
                row[f"{k}_x"] = v / t["matmul_" + k.rsplit("_", 1)[1]]
        out.append(row)
    return out


def table(res: dict) -> str:
    lines = [f"  torch: {res['torch'] or 'not installed (native figures only)'}"]
    for net, unit in (("cnn", "50,000 images"), ("lstm", "5,017,482 chars")):
        r = res[net]
        e = r["seconds_per_epoch"]
        s = "   ".join(f"{k} {v:.0f} s" for k, v in e.items())
        lines.append(f"  {net.upper()} fp32 epoch ({unit}): {s}")
        if "torch" in e:
            lines.append("    native / torch: " + "   ".join(f"{k} {r[f'{k}_over_torch']:.2f}x" for k in ENGINES))
        for eng, p in r["native_layers"].items():
            top = ", ".join(f"{k} {v:.1f}" for k, v in list(p["layers_ms"].items())[:8])
            lines.append(f"    native {eng} step {p['step_ms']:.0f} ms: {top}")
        if "torch_ops" in r:
            ops = ", ".join(f"{o['op']} {o['ms_per_step']:.1f}" for o in r["torch_ops"][:8])
            lines.append(f"    torch ops ms/step: {ops}")
    cb = res.get("crossbar")
    if cb:
        lines.append("  crossbar read / plain matmul of the same shape (fused: fused_mvm with the tile's Box-Muller "
                     "normals; keyed: normals in the kernel; ideal: no read noise; tile: AnalogMatrix today):")
        lines.append("    matrix        batch x  in -> out   matmul ms fwd/bwd   fused f/b     keyed f/b     "
                     "ideal f/b     tile f/b")
        for c in cb:
            cols = "  ".join(f"{c[f'{k}_fwd_x']:5.2f}/{c[f'{k}_bwd_x']:5.2f}x"
                             for k in ("fused", "keyed", "ideal", "tile"))
            lines.append(f"    {c['name']:12s} {c['batch']:6d} x {c['n_in']:4d} -> {c['n_out']:4d}  "
                         f"{c['matmul_ms']:7.2f} / {c['matmul_bwd_ms']:6.2f}   {cols}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(run()))
