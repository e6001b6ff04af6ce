"""Image-quality metric for generated MNIST digits, with no downloads.

Fréchet distance (FD) between Gaussian fits of classifier features of two image sets, and the
class coverage of the generated set, both in the feature space of an MNIST classifier that the
project trains itself (fp32, the layer library's CNN; nothing is ever fetched):

* classifier: ``CLASSIFIER_CONFIG`` (conv 16 -> pool -> conv 32 -> pool -> dense 128 -> 10, ReLU,
  BatchNorm, Adam), trained on the 60,000 MNIST training images, seeded (same machine and BLAS
  threading -> the same bytes). Feature = the 128 penultimate activations (after BatchNorm and
  ReLU of the hidden dense layer), read in evaluation mode.
* FD = |mu_1 - mu_2|^2 + tr(C_1 + C_2 - 2 (C_1 C_2)^(1/2)) in float64, NumPy only:
  tr((C_1 C_2)^(1/2)) = sum of sqrt(eig(C_1^(1/2) C_2 C_1^(1/2))) (a symmetric PSD matrix with the
  same eigenvalues as C_1 C_2), C_1^(1/2) from an eigen-decomposition.
* coverage: histogram of the classifier's predicted classes of the generated images
  (``coverage_min`` = smallest class fraction, ``classes_covered`` = classes with >= 1 %).

Train the cached classifier once (minutes on one CPU core):

    python -m sim.quality train-classifier            # -> ~/.cache/mcasim/mnist_fd_classifier.npz (+ .json)
    python -m sim.quality info                        # accuracy, command, SHA-256 of the cached weights

The ``.json`` beside the weights records the command, the test accuracy, the SHA-256 of the
weights file (written deterministically: fixed zip timestamps, sorted keys) and of the weight
content. If the cached file is missing, the GAN evaluation trains it (with a loud message).
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import io
import json
import shlex
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

CLASSIFIER_FILE = "mnist_fd_classifier.npz"
# The FD classifier (engineering choice: the smallest layer-library CNN that passes 99 % test
# accuracy in a few epochs on one CPU core; BatchNorm speeds up convergence, no augmentation: a
# flipped digit is another digit).
CLASSIFIER_CONFIG = {
    "train": {"epochs": 4, "batch_size": 64, "lr": 0.002, "lr_decay": 0.5, "optimizer": "adam", "seed": 0,
              "augment": False, "eval_batch": 500},
    "model": {"arch": "cnn", "conv": [16, "M", 32, "M"], "hidden": [128], "activation": "relu",
              "batch_norm": True, "init": "he_normal"},
    "synapse": {"mode": "fp32"},
}
COVERAGE_FLOOR = 0.01      # a class counts as covered with at least 1 % of the samples


def default_path() -> Path:
    from .data.common import user_cache
    return user_cache() / CLASSIFIER_FILE


# --- Fréchet distance ----------------------------------------------------------------------------
def gaussian_stats(feats) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (float64) of features (N, F)."""
    f = np.asarray(feats, dtype=np.float64)
    mu = f.mean(axis=0)
    c = f - mu
    return mu, (c.T @ c) / max(f.shape[0] - 1, 1)


def _sqrt_psd(c):
    w, v = np.linalg.eigh((c + c.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1, c1, mu2, c2) -> float:
    """|mu1 - mu2|^2 + tr(c1 + c2 - 2 sqrt(c1 c2)), NumPy only (float64)."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    c1, c2 = np.asarray(c1, np.float64), np.asarray(c2, np.float64)
    s1 = _sqrt_psd(c1)
    m = s1 @ c2 @ s1                         # symmetric PSD, same eigenvalues as c1 c2
    ev = np.linalg.eigvalsh((m + m.T) / 2)
    tr_sqrt = float(np.sqrt(np.clip(ev, 0, None)).sum())
    d = mu1 - mu2
    return float(max(d @ d + np.trace(c1) + np.trace(c2) - 2.0 * tr_sqrt, 0.0))


def coverage(pred, n_classes: int = 10) -> dict:
    """Class histogram of predicted labels: fractions, smallest fraction, classes with >= 1 %."""
    h = np.bincount(np.asarray(pred, dtype=np.int64), minlength=n_classes)[:n_classes]
    frac = h / max(int(h.sum()), 1)
    return {"hist": frac.tolist(), "coverage_min": float(frac.min()),
            "classes_covered": int((frac >= COVERAGE_FLOOR).sum())}


# --- the classifier --------------------------------------------------------------------------------
def _images(x):
    """(N, 784) or (N, 28, 28[, 1]) in [0, 1] -> NHWC float32 (N, 28, 28, 1)."""
    x = np.asarray(x, dtype=np.float32)
    n = x.shape[0]
    side = int(round(np.sqrt(x[0].size)))
    return x.reshape(n, side, side, 1)


def _cfg(overrides: dict | None = None):
    from .config import config_from_dict
    d = copy.deepcopy(CLASSIFIER_CONFIG)
    for sec, kv in (overrides or {}).items():
        d.setdefault(sec, {}).update(kv)
    return config_from_dict(d)


class FDClassifier:
    """The fp32 CNN with its feature read-out (NumPy)."""

    def __init__(self, cfg, input_shape=(28, 28, 1), n_classes: int = 10):
        from gpu_model.backend import make_backend
        from .tasks.models import build_network
        self.cfg = cfg
        self.be = make_backend("numpy", cfg.train.seed)
        self.net = build_network(cfg, tuple(input_shape), n_classes, self.be)
        self.n_classes = n_classes
        self.meta: dict = {}

    def _run(self, x, upto: int, batch: int):
        net = self.net
        net.eval()
        net.bind_events(None)
        x = _images(x)
        out = []
        for i in range(0, x.shape[0], batch):
            h = x[i:i + batch]
            for L in net.layers[:upto]:
                h = L.forward(h)
            out.append(h)
        return np.concatenate(out)

    def features(self, x, batch: int = 500):
        """Penultimate activations (N, hidden)."""
        return self._run(x, len(self.net.layers) - 1, batch)

    def logits(self, x, batch: int = 500):
        return self._run(x, len(self.net.layers), batch)

    def features_and_predictions(self, x, batch: int = 500):
        f = self.features(x, batch)
        last = self.net.layers[-1]
        return f, np.argmax(last.forward(f), axis=1)

    def predict(self, x, batch: int = 500):
        return np.argmax(self.logits(x, batch), axis=1)

    # --- files ------------------------------------------------------------------------------------
    def arrays(self) -> dict:
        out = {}

        def walk(prefix, d):
            for k, v in d.items():
                if isinstance(v, dict):
                    walk(f"{prefix}{k}/", v)
                else:
                    out[f"{prefix}{k}"] = np.asarray(v)
        walk("", self.net.state_dict(self.be))
        return dict(sorted(out.items()))

    def save(self, path: Path, meta: dict) -> dict:
        """Weights to ``path`` (deterministic zip) and ``path.json`` (meta + checksums)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrs = self.arrays()
        tmp = path.with_suffix(".part")
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
            for k, a in arrs.items():
                buf = io.BytesIO()
                np.lib.format.write_array(buf, np.ascontiguousarray(a), allow_pickle=False)
                zf.writestr(zipfile.ZipInfo(k + ".npy", date_time=(1980, 1, 1, 0, 0, 0)), buf.getvalue())
        tmp.replace(path)
        meta = dict(meta, file=path.name, file_sha256=_sha256(path.read_bytes()),
                    weights_sha256=weights_digest(arrs), config=self.cfg.to_dict())
        meta_path(path).write_text(json.dumps(meta, indent=2) + "\n")
        self.meta = meta
        return meta

    @classmethod
    def load(cls, path: Path) -> "FDClassifier":
        from .config import config_from_dict
        path = Path(path)
        mp = meta_path(path)
        meta = json.loads(mp.read_text()) if mp.is_file() else {}
        if meta.get("file_sha256") and _sha256(path.read_bytes()) != meta["file_sha256"]:
            raise RuntimeError(f"{path}: SHA-256 does not match {mp.name} (corrupt); delete both and re-make "
                               "it with `python -m sim.quality train-classifier`")
        cfg = config_from_dict(meta["config"]) if "config" in meta else _cfg()
        clf = cls(cfg, tuple(meta.get("input_shape", (28, 28, 1))))
        with np.load(path, allow_pickle=False) as z:
            arrs = {k: z[k] for k in z.files}
        st: dict = {}
        for k, v in arrs.items():           # "layer/param[/field]" -> nested state dicts
            *parents, leaf = k.split("/")
            d = st
            for p in parents:
                d = d.setdefault(p, {})
            d[leaf] = v
        clf.net.load_state_dict(st)
        clf.meta = meta
        return clf


def meta_path(path: Path) -> Path:
    return Path(path).with_suffix(".json")


def _sha256(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def weights_digest(arrs: dict) -> str:
    """SHA-256 over (name, dtype, shape, bytes) of every array in key order."""
    h = hashlib.sha256()
    for k in sorted(arrs):
        a = np.ascontiguousarray(arrs[k])
        h.update(f"{k}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def train_classifier(x_train, y_train, x_test, y_test, *, overrides: dict | None = None,
                     max_steps: int = 0, progress: bool = False) -> tuple[FDClassifier, float]:
    """Train the fp32 CNN (seeded). ``max_steps`` > 0 stops early (quick classifiers for tests).
    Returns (classifier, test accuracy)."""
    from .data import Dataset
    from .events import EventCounts
    from .nn import Optimizer
    from .tasks.classify import ClassifyTask
    cfg = _cfg(overrides)
    t = cfg.train
    xtr, xte = _images(x_train), _images(x_test)
    ds = Dataset("mnist-nhwc", xtr, np.asarray(y_train), xte, np.asarray(y_test), source="memory")
    clf = FDClassifier(cfg, ds.input_shape)
    task = ClassifyTask.__new__(ClassifyTask)      # the classification task around our own net
    task.cfg, task.ds, task.be, task.xp = cfg, ds, clf.be, np
    task.x_train, task.y_train = xtr, ds.y_train
    task.x_test, task.y_test = xte, ds.y_test
    task.net, task.networks, task.augment, task._aug_rng = clf.net, {"net": clf.net}, False, None
    opt = Optimizer(t.optimizer, np, t.momentum, t.adam_beta1, t.adam_beta2, t.adam_eps)
    ev = EventCounts()
    steps = 0
    for ep in range(t.epochs):
        lr = max(t.lr * t.lr_decay ** ep, t.lr_min)
        t0 = time.perf_counter()
        loss = seen = correct = 0
        for key in task.epoch_batches(ep):
            st = task.train_step(key, lr, None, opt, ev)
            loss, correct, seen = loss + st["loss_sum"], correct + st["metric_sum"], seen + st["n"]
            steps += 1
            if max_steps and steps >= max_steps:
                break
        if progress:
            acc = float((clf.predict(xte) == ds.y_test).mean())
            print(f"classifier epoch {ep + 1}/{t.epochs}: loss {loss / seen:.4f} train {correct / seen:.4f} "
                  f"test {acc:.4f} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
        if max_steps and steps >= max_steps:
            break
    acc = float((clf.predict(xte) == ds.y_test).mean())
    return clf, acc


def train_and_cache(path: Path | None = None, data_dir=None, command: str | None = None,
                    progress: bool = True) -> FDClassifier:
    """Train the FD classifier on MNIST and write it (plus its .json) to ``path``."""
    from .data.mnist import load_mnist
    path = Path(path) if path else default_path()
    ds = load_mnist(data_dir, download=False)
    t0 = time.perf_counter()
    clf, acc = train_classifier(ds.x_train, ds.y_train, ds.x_test, ds.y_test, progress=progress)
    meta = {"test_accuracy": acc, "train_seconds": time.perf_counter() - t0,
            "command": command or "python -m sim.quality train-classifier", "dataset_source": ds.source,
            "input_shape": [28, 28, 1], "numpy": np.__version__}
    meta = clf.save(path, meta)
    print(f"FD classifier: test accuracy {acc:.4f}; weights {path} (SHA-256 {meta['file_sha256']})", file=sys.stderr)
    return clf


def load_or_train(path: Path | None = None, data_dir=None) -> FDClassifier:
    """The cached classifier; trained (loudly) when missing. Never downloads anything."""
    path = Path(path) if path else default_path()
    if path.is_file():
        return FDClassifier.load(path)
    print("=" * 78 + f"\nFD CLASSIFIER NOT FOUND at {path}\ntraining it now (once, minutes; "
          "`python -m sim.quality train-classifier` does the same)\n" + "=" * 78, file=sys.stderr)
    return train_and_cache(path, data_dir, command="python -m sim.quality train-classifier "
                           f"--out {shlex.quote(str(path))} (automatically, from the GAN evaluation)")


class FDMetric:
    """FD and coverage against fixed reference images (their statistics computed once)."""

    def __init__(self, clf: FDClassifier, reference):
        self.clf = clf
        self.mu_ref, self.c_ref = gaussian_stats(clf.features(reference))

    def __call__(self, images) -> dict:
        f, pred = self.clf.features_and_predictions(images)
        mu, c = gaussian_stats(f)
        out = {"fd": frechet_distance(mu, c, self.mu_ref, self.c_ref)}
        out.update(coverage(pred, self.clf.n_classes))
        out["pred"] = pred
        return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sim.quality", description="FD classifier for generated MNIST")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("train-classifier", help="train the fp32 MNIST classifier and cache it")
    p.add_argument("--out", help=f"weights file (default: user cache / {CLASSIFIER_FILE})")
    p.add_argument("--data-dir", help="folder holding MNIST")
    p = sub.add_parser("info", help="print the cached classifier's record")
    p.add_argument("--path", help="weights file (default: the user cache)")
    args = ap.parse_args(argv)
    if args.cmd == "train-classifier":
        cmd = "python -m sim.quality " + shlex.join(sys.argv[1:] if argv is None else list(argv))
        train_and_cache(args.out, args.data_dir, command=cmd)
        return 0
    path = Path(args.path) if args.path else default_path()
    if not meta_path(path).is_file():
        print(f"no classifier record at {meta_path(path)}", file=sys.stderr)
        return 1
    print(meta_path(path).read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
