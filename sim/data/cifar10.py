"""CIFAR-10 from the official binary or python versions, verified by content, and seeded augmentation.

Formats. CIFAR-10 is found like every dataset (:mod:`sim.data.common`), in each search location in
a sub-folder ``cifar10/``, ``cifar-10-batches-bin/`` or ``cifar-10-batches-py/``, or directly. Two
layouts are read: the official *binary version* (``data_batch_1.bin`` .. ``data_batch_5.bin``,
``test_batch.bin``; each raw or ``.xz``/``.gz`` compressed; 10,000 records of 1 label byte + 3,072
pixel bytes, 1,024 red then green then blue, row-major 32x32), and the official *python version*
(``data_batch_1`` .. ``data_batch_5``, ``test_batch``; raw or compressed; Python 2 pickles of a dict
with ``b"data"`` (10000x3072 uint8) and ``b"labels"``). The pickles are read by a restricted
unpickler that only builds numpy arrays (``_reconstruct``, ``ndarray``, ``dtype``, ``scalar``) and
latin-1 byte strings; any other global (``os.system``, ``builtins.eval``...) is refused with
:class:`DatasetCorruptError` naming the file, before anything is called. The binary version is
preferred where both are present; no download is attempted.

Checksums. The SHA-256 of the six official binary-version files (over the *decompressed* content)
are kept in this module. A binary file is checked as read; a python-version batch is turned back
into the bytes of the equivalent binary file (label byte + 3,072 pixel bytes per record, in order)
and checked against the same values, so both formats are verified by content, whoever pickled
them. A wrong size, a checksum mismatch, a truncated or corrupt compressed file, a refused pickle,
or a missing file of an otherwise present set raises :class:`DatasetError` (all but "incomplete" as
:class:`DatasetCorruptError`) naming the file; nothing is ever silently replaced.

Output. Images are float32 NHWC ``(N, 32, 32, 3)``, normalised per channel as
``(x/255 - mean_c) / std_c`` with the mean and (population) standard deviation of the 50,000
training images (about (0.4914, 0.4822, 0.4465) and (0.2470, 0.2435, 0.2616); kept in
``Dataset.notes``); labels are int64.

Augmentation. :func:`augment` does the standard CIFAR augmentation on a batch, on NumPy or CuPy
arrays: a random 32x32 crop out of the image zero-padded by 4 pixels on each side (offsets uniform
in [0, 8]) and a horizontal flip with probability 1/2, all random numbers drawn in bulk from a
seeded NumPy generator and the whole batch gathered in one indexing operation. Padding happens
after normalisation, so the zero border is the per-channel training mean.
"""
from __future__ import annotations

import io
import os
import pickle
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .common import Dataset, DatasetCorruptError, DatasetError, candidate_dirs, find_file, read_bytes, sha256

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST = ("test_batch",)
CIFAR10_BATCHES = CIFAR10_TRAIN + CIFAR10_TEST
# SHA-256 of the decompressed official binary-version files (shared/data/cifar10/SHA256SUMS).
CIFAR10_SHA256 = {
    "data_batch_1": "cee916563c9f80d84e3cc88e17fdc0941787f1244f00a67874d45b261883ada5",
    "data_batch_2": "a591ca11fa1708a91ee40f54b3da4784ccd871ecf2137de63f51ada8b3fa57ed",
    "data_batch_3": "bbe8596564c0f86427f876058170b84dac6670ddf06d79402899d93ceea26f67",
    "data_batch_4": "014e562d6e23c72197cc727519169a60359f5eccd8945ad5a09d710285ff4e48",
    "data_batch_5": "755304fc0b379caeae8c14f0dac912fbc7d6cd469eb67a1029a08a39453a9add",
    "test_batch": "8e2eb146ae340b09e24670f29cabc6326dba54da8789dab6768acf480273f65b",
}
SUBDIRS = ("cifar10", "cifar-10-batches-bin", "cifar-10-batches-py", "")
RECORDS = 10_000
PIXELS = 3 * 32 * 32
RECORD_BYTES = 1 + PIXELS
BATCH_BYTES = RECORDS * RECORD_BYTES   # 30,730,000
SUFFIXES = (".xz", ".gz", "")
FORMATS = {"binary": ".bin", "python": ""}   # file name of a batch: stem + this + compression suffix


# ---------------------------------------------------------------- restricted unpickling (python version)

def _latin1_encode(obj, encoding="latin1", errors="strict"):
    """``_codecs.encode`` as protocol-2 pickles use it for bytes: latin-1 of a str, nothing else."""
    if not isinstance(obj, str) or encoding.lower() not in ("latin1", "latin-1", "iso-8859-1"):
        raise pickle.UnpicklingError(f"_codecs.encode allowed only as latin-1 of a str, not {encoding!r}")
    return obj.encode("latin1")


def _empty_bytes(*args):
    """``bytes()`` as protocol-2 pickles use it for b'' (no arguments: no allocation by count)."""
    if args:
        raise pickle.UnpicklingError("bytes(...) with arguments is not allowed")
    return b""


def _allowed_globals() -> dict:
    try:   # NumPy 2 (numpy._core); pickles name either module, whichever NumPy wrote them
        from numpy._core import multiarray
    except ImportError:   # NumPy 1.x
        from numpy.core import multiarray
    mods = ("numpy.core.multiarray", "numpy._core.multiarray")
    allowed = {(m, "_reconstruct"): multiarray._reconstruct for m in mods}
    allowed.update({(m, "scalar"): multiarray.scalar for m in mods})
    allowed.update({
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
        ("builtins", "bytes"): _empty_bytes,
        ("__builtin__", "bytes"): _empty_bytes,
    })
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals numpy-array pickles need; anything else is refused."""

    def __init__(self, file, path):
        super().__init__(file, encoding="bytes")
        self._path = path
        self._allowed = _allowed_globals()

    def find_class(self, module, name):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise DatasetCorruptError(f"{self._path}: refusing to unpickle global {module}.{name} "
                                      "(a CIFAR-10 python batch holds only numpy arrays and lists; "
                                      "file corrupt or malicious?)") from None


def _unpickle(raw: bytes, path: Path):
    try:
        return _RestrictedUnpickler(io.BytesIO(raw), path).load()
    except DatasetError:
        raise
    except Exception as exc:   # UnpicklingError, EOFError, ValueError, TypeError... from bad content
        raise DatasetCorruptError(f"{path}: not a readable CIFAR-10 python batch: "
                                  f"{type(exc).__name__}: {exc}") from exc


# ---------------------------------------------------------------- reading one batch

def _get(d: dict, key: str):
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    return None


def _check_labels(labels: np.ndarray, path: Path) -> None:
    if labels.size and int(labels.max()) > 9:
        raise DatasetCorruptError(f"{path}: label {int(labels.max())} out of range 0..9 (file corrupt?)")


def _verify(raw, stem: str, path: Path, what: str = "") -> None:
    digest = sha256(raw)
    if digest != CIFAR10_SHA256[stem]:
        raise DatasetCorruptError(f"{path}: SHA-256 {digest[:16]}… {what}does not match the official CIFAR-10 "
                                  f"file {stem}.bin (corrupt or a different file)")


def _read_binary(path: Path, stem: str, verify: bool) -> tuple[np.ndarray, np.ndarray]:
    raw = read_bytes(path)
    if len(raw) != BATCH_BYTES:
        raise DatasetCorruptError(f"{path}: {len(raw):,} bytes after decompression, expected {BATCH_BYTES:,} "
                                  f"({RECORDS:,} records of {RECORD_BYTES:,} bytes; file truncated or corrupt)")
    if verify:
        _verify(raw, stem, path)
    rec = np.frombuffer(raw, dtype=np.uint8).reshape(RECORDS, RECORD_BYTES)
    labels, pixels = rec[:, 0], rec[:, 1:]
    _check_labels(labels, path)
    return labels, pixels


def _read_python(path: Path, stem: str, verify: bool) -> tuple[np.ndarray, np.ndarray]:
    obj = _unpickle(read_bytes(path), path)
    if not isinstance(obj, dict):
        raise DatasetCorruptError(f"{path}: expected a pickled dict, found {type(obj).__name__}")
    data, labels = _get(obj, "data"), _get(obj, "labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.shape != (RECORDS, PIXELS):
        desc = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DatasetCorruptError(f"{path}: b'data' must be a uint8 array of shape ({RECORDS}, {PIXELS}), "
                                  f"found {desc}")
    try:
        lab = np.asarray(labels)
        ok = lab.shape == (RECORDS,) and lab.dtype.kind in "iu" and (lab.size == 0 or int(lab.min()) >= 0)
    except Exception:
        ok = False
    if not ok:
        raise DatasetCorruptError(f"{path}: b'labels' must be {RECORDS} integers in 0..9")
    _check_labels(lab, path)
    if verify:   # the bytes of the equivalent binary-version file, checked against the same SHA-256
        rec = np.empty((RECORDS, RECORD_BYTES), dtype=np.uint8)
        rec[:, 0] = lab
        rec[:, 1:] = data
        _verify(rec.data, stem, path, "(as binary-version records) ")
    return lab.astype(np.uint8), data


# ---------------------------------------------------------------- locating and loading

def _locate(data_dir) -> tuple[Path, str, dict]:
    """(folder, format, {stem: path}) of the first complete set; an incomplete set is an error."""
    searched = []
    for base in candidate_dirs(data_dir):
        for sub in SUBDIRS:
            folder = base / sub if sub else base
            searched.append(str(folder))
            if not folder.is_dir():
                continue
            sets = {fmt: {s: find_file(folder, ("",), s + ext, SUFFIXES) for s in CIFAR10_BATCHES}
                    for fmt, ext in FORMATS.items()}
            for fmt, paths in sets.items():
                if all(paths.values()):
                    return folder, fmt, paths
            for fmt, paths in sets.items():
                if any(paths.values()):
                    missing = [s + FORMATS[fmt] for s, p in paths.items() if p is None]
                    raise DatasetError(f"{folder}: CIFAR-10 ({fmt} version) incomplete, missing "
                                       f"{', '.join(missing)} (raw, .xz or .gz)")
    raise DatasetError("CIFAR-10 not found in: " + ", ".join(dict.fromkeys(searched)) +
                       f". Get the binary or python version from {CIFAR10_URL} and unpack it into one of "
                       "these places (e.g. <data-dir>/cifar-10-batches-bin/), or pass --data-dir; "
                       "no download is attempted.")


def _channel_hist(pixels: np.ndarray) -> np.ndarray:
    """(3, 256) counts of each pixel value per channel of (N, 3072) uint8 pixels."""
    planes = pixels.reshape(len(pixels), 3, 1024)
    return np.stack([np.bincount(planes[:, c].ravel(), minlength=256) for c in range(3)])


def load_cifar10(data_dir=None, verify: bool = True) -> Dataset:
    """CIFAR-10 as float32 NHWC images normalised per channel (training mean/std) and int64 labels."""
    folder, fmt, paths = _locate(data_dir)
    reader = _read_binary if fmt == "binary" else _read_python
    # Decompression and hashing release the GIL: read the six files on parallel threads; map() keeps
    # the file order, so the first bad file in that order is the one reported.
    with ThreadPoolExecutor(max_workers=max(1, min(len(CIFAR10_BATCHES), os.cpu_count() or 1))) as ex:
        read = list(ex.map(lambda s: reader(paths[s], s, verify), CIFAR10_BATCHES))
    batches = dict(zip(CIFAR10_BATCHES, read))   # (labels, pixels) uint8 views, ~184 MB in all

    hist = sum(_channel_hist(batches[s][1]) for s in CIFAR10_TRAIN).astype(np.float64)   # (3, 256)
    v = np.arange(256, dtype=np.float64) / 255.0
    n = hist.sum(axis=1)
    mean = hist @ v / n
    std = np.sqrt(hist @ (v * v) / n - mean ** 2)
    lut = ((v[None, :] - mean[:, None]) / std[:, None]).astype(np.float32)   # (3, 256) value -> normalised

    def convert(stems):
        x = np.empty((RECORDS * len(stems), 32, 32, 3), dtype=np.float32)
        y = np.empty(RECORDS * len(stems), dtype=np.int64)
        for i, s in enumerate(stems):
            labels, pixels = batches.pop(s)
            planes = pixels.reshape(RECORDS, 3, 32, 32)
            sl = slice(i * RECORDS, (i + 1) * RECORDS)
            for c in range(3):
                x[sl, :, :, c] = lut[c][planes[:, c]]
            y[sl] = labels
        return x, y

    x_train, y_train = convert(CIFAR10_TRAIN)
    x_test, y_test = convert(CIFAR10_TEST)
    return Dataset("cifar10", x_train, y_train, x_test, y_test, source=str(folder), n_classes=10,
                   class_names=list(CIFAR10_CLASSES),
                   notes={"mean": [float(m) for m in mean], "std": [float(s) for s in std], "format": fmt})


# ---------------------------------------------------------------- augmentation

def augment(xp, x, rng: np.random.Generator, pad: int = 4, flip: bool = True):
    """Random crop (zero padding ``pad``) and horizontal flip of a batch ``x`` (B, H, W, C) of module ``xp``.

    Each output image is the HxW window at offsets (dy, dx), drawn uniformly in [0, 2*pad], of the
    image zero-padded by ``pad`` pixels on every side, mirrored left-right with probability 1/2 when
    ``flip``. The images are already normalised, so the zero border equals the per-channel training
    mean. All random numbers come in bulk from the NumPy generator ``rng`` (dy for the batch, then
    dx, then the flip coins: 3*B draws), are moved to ``xp`` with ``xp.asarray``, and the batch is
    gathered in one fancy-indexing operation, so the same seed gives the same batch on NumPy and
    CuPy. ``pad=0, flip=False`` returns ``x`` itself and draws nothing.
    """
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    if pad == 0 and not flip:
        return x
    b, h, w, _ = x.shape
    dy = rng.integers(0, 2 * pad + 1, size=b)
    dx = rng.integers(0, 2 * pad + 1, size=b)
    coins = rng.random(b) < 0.5
    if not flip:
        coins[:] = False
    xpad = xp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0))) if pad else x
    dy, dx, coins = xp.asarray(dy), xp.asarray(dx), xp.asarray(coins)
    rows = dy[:, None] + xp.arange(h)[None, :]                                        # (B, H)
    cols = dx[:, None] + xp.where(coins[:, None], xp.arange(w - 1, -1, -1)[None, :],
                                  xp.arange(w)[None, :])                              # (B, W)
    return xpad[xp.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]
