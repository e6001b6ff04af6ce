"""MNIST from IDX files (gzip or raw), with a bundled fallback (scikit-learn 8x8 digits).

Found like every dataset (:mod:`sim.data.common`), in a ``mnist/`` (or ``MNIST/raw``) sub-folder or
directly; if no location has the files they are downloaded into the user cache from the standard
mirrors and verified against known checksums. Truncated or corrupt files raise
:class:`DatasetCorruptError` naming the file.
"""
from __future__ import annotations

import gzip
import math
import struct
import sys
import urllib.request
from pathlib import Path

import numpy as np

from .common import (Dataset, DatasetCorruptError, DatasetError, candidate_dirs, find_file, read_bytes,
                     sha256, user_cache)

MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# SHA-256 of the *decompressed* IDX files (the same values as shared/data/mnist/SHA256SUMS).
MNIST_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)


def _find(folder: Path, stem: str) -> Path | None:
    return find_file(folder, ("mnist", "MNIST/raw", ""), stem, (".gz", ""))


def parse_idx(raw: bytes, path: Path | str) -> np.ndarray:
    """Parse an IDX byte string (ubyte data only) with size checks."""
    if len(raw) < 4:
        raise DatasetCorruptError(f"{path}: too short to be an IDX file ({len(raw)} bytes)")
    zero, dtype, ndim = raw[0] << 8 | raw[1], raw[2], raw[3]
    if zero != 0 or dtype != 0x08 or not 1 <= ndim <= 4:
        raise DatasetCorruptError(f"{path}: not an unsigned-byte IDX file (header {raw[:4].hex()})")
    if len(raw) < 4 + 4 * ndim:
        raise DatasetCorruptError(f"{path}: truncated IDX header")
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    n = math.prod(dims)
    body = raw[4 + 4 * ndim:]
    if len(body) != n:
        raise DatasetCorruptError(f"{path}: expected {n} data bytes for shape {dims}, found {len(body)} "
                           "(file truncated or corrupt)")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


IMAGE_SHAPE = (28, 28)


def _load_file(path: Path, stem: str, verify: bool) -> np.ndarray:
    raw = read_bytes(path)
    if verify:
        digest = sha256(raw)
        if digest != MNIST_SHA256[stem]:
            raise DatasetCorruptError(f"{path}: SHA-256 {digest[:16]}… does not match the published MNIST "
                               f"file {stem} (corrupt or a different file)")
    arr = parse_idx(raw, path)
    if "images" in stem and arr.shape[1:] != IMAGE_SHAPE:
        raise DatasetCorruptError(f"{path}: images of shape {arr.shape[1:]}, expected (N, 28, 28) (not MNIST?)")
    if "labels" in stem:
        if arr.ndim != 1:
            raise DatasetCorruptError(f"{path}: labels of shape {arr.shape}, expected (N,) (not MNIST?)")
        if arr.size and int(arr.max()) > 9:
            raise DatasetCorruptError(f"{path}: label {int(arr.max())} out of range 0..9 (file corrupt?)")
    return arr


def download_mnist(dest: Path, quiet: bool = False) -> Path:
    """Download the four MNIST files into ``dest/mnist`` and verify them. Raises DatasetError."""
    target = dest / "mnist"
    target.mkdir(parents=True, exist_ok=True)
    for stem in MNIST_FILES.values():
        out = target / (stem + ".gz")
        if out.is_file():
            continue
        last = None
        for mirror in MNIST_MIRRORS:
            try:
                if not quiet:
                    print(f"downloading {mirror}{stem}.gz", file=sys.stderr)
                with urllib.request.urlopen(mirror + stem + ".gz", timeout=30) as r:
                    data = r.read()
                raw = gzip.decompress(data)
                if sha256(raw) != MNIST_SHA256[stem]:
                    raise DatasetError(f"checksum mismatch for {stem} from {mirror}")
                tmp = out.with_suffix(".part")
                tmp.write_bytes(data)
                tmp.replace(out)
                break
            except Exception as exc:  # network errors, checksum mismatch
                last = exc
        else:
            raise DatasetError(f"could not download {stem}: {last}")
    return target


def load_mnist(data_dir=None, download: bool = True, verify: bool = True) -> Dataset:
    """MNIST as float32 in [0, 1], flattened to 784 features."""
    for folder in candidate_dirs(data_dir):
        paths = {k: _find(folder, stem) for k, stem in MNIST_FILES.items()}
        if all(paths.values()):
            arrs = {k: _load_file(p, MNIST_FILES[k], verify) for k, p in paths.items()}
            break
        if data_dir and folder == Path(data_dir) and any(paths.values()):
            missing = [MNIST_FILES[k] for k, p in paths.items() if p is None]
            raise DatasetError(f"{folder}: MNIST incomplete, missing {', '.join(missing)}")
    else:
        if not download:
            raise DatasetError("MNIST not found in: " + ", ".join(str(p) for p in candidate_dirs(data_dir)))
        folder = download_mnist(user_cache())
        return load_mnist(folder, download=False, verify=verify)
    xtr = arrs["train_images"].reshape(len(arrs["train_images"]), -1).astype(np.float32) / 255.0
    xte = arrs["test_images"].reshape(len(arrs["test_images"]), -1).astype(np.float32) / 255.0
    ytr, yte = arrs["train_labels"].astype(np.int64), arrs["test_labels"].astype(np.int64)
    for split in ("train", "test"):
        n_img, n_lab = len(arrs[f"{split}_images"]), len(arrs[f"{split}_labels"])
        if n_img != n_lab:
            raise DatasetCorruptError(f"{paths[split + '_images']} holds {n_img} images but "
                                      f"{paths[split + '_labels']} {n_lab} labels (a file truncated or mixed up?)")
    return Dataset("mnist", xtr, ytr, xte, yte, source=str(paths["train_images"].parent))


def load_digits_fallback() -> Dataset:
    """The 8x8 handwritten digits bundled with scikit-learn (1,797 images), 80/20 split."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise DatasetError("no MNIST and scikit-learn (bundled digits) is not installed: "
                           "pip install scikit-learn, or provide MNIST with --data-dir") from exc
    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    perm = np.random.default_rng(0).permutation(len(x))
    x, y = x[perm], y[perm]
    cut = int(0.8 * len(x))
    return Dataset("digits8x8", x[:cut], y[:cut], x[cut:], y[cut:], source="sklearn.datasets.load_digits")


