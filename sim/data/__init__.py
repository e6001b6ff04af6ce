"""Datasets: one module per dataset on one shared helper (search paths, checksums, errors).

``load_dataset(name, data_dir, allow_fallback)`` is what the CLI and the tasks call.
"""
from __future__ import annotations

import sys

from .common import Dataset, DatasetCorruptError, DatasetError, candidate_dirs, user_cache  # noqa: F401
from .mnist import load_digits_fallback, load_mnist  # noqa: F401

DATASETS = ("mnist", "digits", "cifar10", "ptb-char")


def load_dataset(name: str, data_dir=None, allow_fallback: bool = False) -> Dataset:
    if name == "mnist":
        try:
            return load_mnist(data_dir)
        except DatasetCorruptError:
            raise
        except DatasetError as exc:
            if not allow_fallback:
                raise
            print("=" * 78 + f"\nWARNING: MNIST is not available ({exc}).\n"
                  "WARNING: falling back to the 8x8 digits bundled with scikit-learn.\n"
                  "WARNING: results are NOT MNIST results.\n" + "=" * 78, file=sys.stderr)
            return load_digits_fallback()
    if name == "digits":
        return load_digits_fallback()
    if name == "cifar10":
        from .cifar10 import load_cifar10
        return load_cifar10(data_dir)
    if name == "ptb-char":
        from .ptb import load_ptb_char
        return load_ptb_char(data_dir)
    raise DatasetError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
