"""What every dataset loader shares: search paths, reading compressed files, checksums, errors.

Where datasets are looked for, in order: ``--data-dir``, ``$MCASIM_DATA``, ``../shared/data``
beside the checkout, the user cache ``~/.cache/mcasim`` (or ``$XDG_CACHE_HOME/mcasim``). Each
location may hold a dataset's files directly or in its own sub-folder (``mnist/``, ``cifar10/``...).
A file that is present but truncated or corrupt raises :class:`DatasetCorruptError` naming it: it is
never silently replaced by a fallback.
"""
from __future__ import annotations

import gzip
import hashlib
import lzma
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]


class DatasetError(RuntimeError):
    """A dataset is missing, or a dataset file is truncated or corrupt."""


class DatasetCorruptError(DatasetError):
    """A dataset file exists but is truncated, corrupt or inconsistent: never fall back over it."""


@dataclass
class Dataset:
    name: str
    x_train: np.ndarray   # (N, D) float32 (MNIST: in [0, 1]) or (N, H, W, C) images (NHWC, normalised)
    y_train: np.ndarray   # (N,) int64
    x_test: np.ndarray
    y_test: np.ndarray
    source: str           # where it was read from
    n_classes: int = 10
    class_names: list = field(default_factory=list)
    notes: dict = field(default_factory=dict)   # e.g. normalisation constants

    @property
    def n_features(self) -> int:
        return int(np.prod(self.x_train.shape[1:]))

    @property
    def input_shape(self) -> tuple:
        return tuple(int(s) for s in self.x_train.shape[1:])


def user_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mcasim"


def candidate_dirs(data_dir: str | os.PathLike | None) -> list[Path]:
    out = []
    if data_dir:
        out.append(Path(data_dir))
    if os.environ.get("MCASIM_DATA"):
        out.append(Path(os.environ["MCASIM_DATA"]))
    out.append(REPO.parent / "shared" / "data")
    out.append(user_cache())
    return out



def read_bytes(path: Path) -> bytes:
    """The decompressed content of ``path`` (``.gz``, ``.xz`` or raw)."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        if path.suffix == ".xz":
            with lzma.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile, lzma.LZMAError, zlib.error) as exc:
        raise DatasetCorruptError(f"cannot read {path}: {exc} (file truncated or corrupt?)") from exc


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def find_file(folder: Path, subdirs, stem: str, suffixes=(".gz", ".xz", "")) -> Path | None:
    """First ``folder/sub/stem+suffix`` that exists."""
    for sub in subdirs:
        for suf in suffixes:
            p = folder / sub / (stem + suf) if sub else folder / (stem + suf)
            if p.is_file():
                return p
    return None
