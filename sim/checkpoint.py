"""Checkpoint files that cannot execute code on load, written atomically.

A checkpoint is one ``.npz`` file (a zip archive, members stored uncompressed): every NumPy array
of the saved structure is a member ``a<N>.npy`` (read back with ``allow_pickle=False``), and the
member ``manifest.json`` holds everything else::

    {"format": "mcasim-checkpoint", "version": 1,
     "arrays": {"a0": {"dtype": "<f4", "shape": [16, 64], "sha256": "..."}, ...},
     "state": <the structure, encoded as below>}

Encoding of the structure (JSON values stand for themselves; every JSON object is a tagged node):
``None``, ``bool``, ``str``, ``list`` and ``float`` as JSON (non-finite floats as
``{"float": "<IEEE-754 bits in hex>"}``); ``int`` as a JSON number within 64 bits, else
``{"int": "<decimal>"}`` (PCG64 states are 128-bit); ``tuple`` as ``{"tuple": [...]}``; a dict
with string keys as ``{"dict": {...}}``, any other dict as ``{"items": [[key, value], ...]}``
(order kept); an array as ``{"array": "a<N>"}``; a NumPy scalar as ``{"scalar": "a<N>"}`` (a 0-d
member). Only these exact types are saved (subclasses, objects and object arrays are refused), so
what :func:`load` returns equals what :func:`save` was given, types included.

``version`` is the container's; the meaning of the structure (the trainer's state layout) carries
its own version inside it (``sim.train.CHECKPOINT_FORMAT``). A reader refuses newer versions.

:func:`save` writes ``NAME.part`` in the same folder (flush + fsync), keeps the checkpoint it
replaces as ``<stem>.prev.npz`` (a hard link, else a copy), renames the new file over ``NAME`` and
fsyncs the folder: at every moment ``NAME`` is a complete checkpoint (once one was written). A
truncated or corrupted file (zip structure, JSON or an array's SHA-256) is a
:class:`CheckpointError` naming the file.

``MCASIM_CRASH_AT=POINT[:N]`` (tests only) SIGKILLs the process the N-th time (default 1st) it
reaches the named :func:`crash_point`: ``checkpoint-arrays`` (half the arrays written),
``checkpoint-written`` (the ``.part`` file complete, not renamed), ``checkpoint-rotated`` (the old
checkpoint linked to ``.prev``, the new one not renamed), ``text-written`` (a text file's
temporary copy complete, not renamed), ``summary`` (``mcasim train``: plots written, summary.json not).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import signal
import struct
import sys
import zipfile
from pathlib import Path

import numpy as np

FORMAT_NAME = "mcasim-checkpoint"
FORMAT_VERSION = 1          # the container's version (bump when the encoding above changes)
MANIFEST = "manifest.json"
CRASH_ENV = "MCASIM_CRASH_AT"
_INT64_MIN, _INT64_MAX = -2 ** 63, 2 ** 63 - 1


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written or read (the message names the file)."""


# --- test hook ------------------------------------------------------------------------------------
_crash_counts: dict[str, int] = {}


def crash_point(name: str) -> None:
    """SIGKILL this process here when ``MCASIM_CRASH_AT`` names this point (tests of crash safety)."""
    spec = os.environ.get(CRASH_ENV)
    if not spec:
        return
    point, _, nth = spec.partition(":")
    if point != name:
        return
    _crash_counts[name] = _crash_counts.get(name, 0) + 1
    if _crash_counts[name] == int(nth or 1):
        sys.stdout.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


# --- atomic file replacement ----------------------------------------------------------------------
def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (no-op where directories cannot be fsynced)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text_atomic(path, text: str) -> None:
    """Replace ``path`` by ``text`` so that a crash leaves the old file or the new one, never a mix."""
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    crash_point("text-written")
    os.replace(tmp, path)
    fsync_dir(path.parent)


def previous_path(path) -> Path:
    """Where :func:`save` keeps the checkpoint it replaced: ``checkpoint.npz`` -> ``checkpoint.prev.npz``."""
    path = Path(path)
    return path.with_name(path.stem + ".prev" + path.suffix)


def link_or_copy(src: Path, dst: Path) -> None:
    """``dst`` becomes a complete copy of ``src`` atomically (hard link, else copy + fsync)."""
    tmp = dst.with_name(dst.name + ".part")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
    os.replace(tmp, dst)


# --- encoding -------------------------------------------------------------------------------------
def _encode(v, where: str, arrays: list):
    t = type(v)
    if v is None or t is bool or t is str:
        return v
    if t is int:
        return v if _INT64_MIN <= v <= _INT64_MAX else {"int": str(v)}
    if t is float:
        return v if math.isfinite(v) else {"float": struct.pack("<d", v).hex()}
    if t is list:
        return [_encode(x, f"{where}[{i}]", arrays) for i, x in enumerate(v)]
    if t is tuple:
        return {"tuple": [_encode(x, f"{where}[{i}]", arrays) for i, x in enumerate(v)]}
    if t is dict:
        if all(type(k) is str for k in v):
            return {"dict": {k: _encode(x, f"{where}.{k}", arrays) for k, x in v.items()}}
        return {"items": [[_encode(k, f"{where} key {k!r}", arrays), _encode(x, f"{where}[{k!r}]", arrays)]
                          for k, x in v.items()]}
    if t is np.ndarray or isinstance(v, np.generic):
        arr = np.asarray(v)
        if arr.dtype.hasobject:
            raise CheckpointError(f"cannot checkpoint an object array at {where}")
        name = f"a{len(arrays)}"
        arrays.append(arr)
        return {"array" if t is np.ndarray else "scalar": name}
    raise CheckpointError(f"cannot checkpoint a {t.__module__}.{t.__qualname__} at {where} "
                          "(dicts, lists, tuples, str, int, float, bool, None and NumPy arrays only)")


def _decode(node, arrays: dict):
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    if isinstance(node, list):
        return [_decode(x, arrays) for x in node]
    if not isinstance(node, dict) or len(node) != 1:
        raise ValueError(f"unknown manifest node {str(node)[:80]}")
    (tag, val), = node.items()
    if tag == "dict":
        return {k: _decode(x, arrays) for k, x in val.items()}
    if tag == "items":
        return {_decode(k, arrays): _decode(x, arrays) for k, x in val}
    if tag == "tuple":
        return tuple(_decode(x, arrays) for x in val)
    if tag == "int":
        return int(val)
    if tag == "float":
        return struct.unpack("<d", bytes.fromhex(val))[0]
    if tag == "array":
        return arrays[val]
    if tag == "scalar":
        return arrays[val][()]
    raise ValueError(f"unknown manifest tag {tag!r}")


def _sha256(arr: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(arr).reshape(-1).view(np.uint8)).hexdigest()


# --- save / load ----------------------------------------------------------------------------------
def save(path, state) -> None:
    """Write ``state`` (a nested structure, module docstring) to ``path`` atomically, keeping the
    checkpoint it replaces as :func:`previous_path`."""
    path = Path(path)
    arrays: list[np.ndarray] = []
    manifest = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "arrays": {}, "state": None}
    manifest["state"] = _encode(state, "state", arrays)
    for i, arr in enumerate(arrays):
        manifest["arrays"][f"a{i}"] = {"dtype": arr.dtype.str, "shape": list(arr.shape), "sha256": _sha256(arr)}
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as f:
        with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            zf.writestr(MANIFEST, json.dumps(manifest, allow_nan=False))
            for i, arr in enumerate(arrays):
                if i == len(arrays) // 2:
                    crash_point("checkpoint-arrays")
                with zf.open(f"a{i}.npy", "w", force_zip64=True) as m:
                    np.lib.format.write_array(m, arr, allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())
    crash_point("checkpoint-written")
    if path.is_file():
        link_or_copy(path, previous_path(path))
        crash_point("checkpoint-rotated")
    os.replace(tmp, path)
    fsync_dir(path.parent)


def load(path):
    """The structure saved in ``path``; :class:`CheckpointError` (naming the file) when the file is
    missing, truncated, corrupted, not a checkpoint or of a newer version. Never unpickles."""
    path = Path(path)
    try:
        zf = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise CheckpointError(f"{path}: truncated or not a checkpoint ({exc})") from None
    with zf:
        try:
            manifest = json.loads(zf.read(MANIFEST))
        except KeyError:
            raise CheckpointError(f"{path}: not an mcasim checkpoint (no {MANIFEST})") from None
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:   # CRC, JSON or UTF-8 errors
            raise CheckpointError(f"{path}: corrupted manifest ({exc})") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
            raise CheckpointError(f"{path}: not an mcasim checkpoint (manifest format "
                                  f"{manifest.get('format') if isinstance(manifest, dict) else None!r})")
        version = manifest.get("version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise CheckpointError(f"{path}: checkpoint container version {version!r} was written by a newer "
                                  f"mcasim (this one reads up to {FORMAT_VERSION})")
        arrays = {}
        try:
            for name, meta in manifest["arrays"].items():
                with zf.open(f"{name}.npy") as m:
                    arr = np.lib.format.read_array(m, allow_pickle=False)
                if (arr.dtype.str != meta["dtype"] or list(arr.shape) != meta["shape"]
                        or _sha256(arr) != meta["sha256"]):
                    raise ValueError(f"array {name} does not match its checksum")
                arrays[name] = arr
            return _decode(manifest["state"], arrays)
        except (KeyError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"{path}: corrupted manifest ({type(exc).__name__}: {exc})") from None
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            raise CheckpointError(f"{path}: corrupted ({exc})") from None


def load_or_previous(path, fallback: bool):
    """``(state, used_path)`` from ``path``; when it is unreadable and ``fallback`` is set, from
    :func:`previous_path` instead (a warning on stderr names both). Without ``fallback`` the error
    says how to fall back."""
    path = Path(path)
    prev = previous_path(path)
    try:
        return load(path), path
    except CheckpointError as exc:
        if not prev.is_file():
            raise
        if not fallback:
            raise CheckpointError(f"{exc}; --fallback-checkpoint resumes from the previous one, {prev}") from None
        try:
            st = load(prev)
        except CheckpointError as exc2:
            raise CheckpointError(f"{exc}; the previous checkpoint is unusable too: {exc2}") from None
        print(f"warning: {exc}; using the previous checkpoint {prev}", file=sys.stderr)
        return st, prev


# --- checkpoints of older mcasim (pickles) --------------------------------------------------------
_PICKLE_ALLOWED = {      # (module, name) an old checkpoint's arrays need; nothing else is admitted
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),   # protocol 5
    ("numpy", "ndarray"), ("numpy", "dtype"),
}


def read_legacy_pickle(path):
    """The structure in an old ``checkpoint.pkl``, through an unpickler that admits NumPy arrays,
    dtypes and scalars only (any other global, i.e. any code a pickle could name, is refused).
    Used by the explicit conversion command only, never by ``--resume``."""
    import pickle

    class Restricted(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) in _PICKLE_ALLOWED:
                return super().find_class(module, name)
            raise pickle.UnpicklingError(f"refused {module}.{name} (only NumPy arrays and Python "
                                         "builtins are admitted)")

    try:
        with open(path, "rb") as f:
            return Restricted(f).load()
    except (pickle.UnpicklingError, EOFError, OSError, ValueError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{path}: cannot convert ({exc})") from None


def convert_legacy(pkl_path, npz_path) -> None:
    """Rewrite an old pickle checkpoint as an ``.npz`` checkpoint (the pickle is left in place)."""
    state = read_legacy_pickle(pkl_path)
    _reject_object_arrays(state, str(pkl_path))
    save(npz_path, state)


def _reject_object_arrays(v, where):
    if isinstance(v, np.ndarray) and v.dtype.hasobject:
        raise CheckpointError(f"{where}: holds an object array; not converted")
    if isinstance(v, dict):
        for x in v.values():
            _reject_object_arrays(x, where)
    elif isinstance(v, (list, tuple)):
        for x in v:
            _reject_object_arrays(x, where)


def main(argv=None) -> int:
    """``python -m sim.checkpoint convert RUN_DIR``: turn an old ``checkpoint.pkl`` into ``checkpoint.npz``."""
    import argparse
    ap = argparse.ArgumentParser(prog="python -m sim.checkpoint",
                                 description="convert an old run folder's checkpoint.pkl to checkpoint.npz")
    ap.add_argument("action", choices=["convert"])
    ap.add_argument("run_dir")
    args = ap.parse_args(argv)
    run = Path(args.run_dir)
    try:
        convert_legacy(run / "checkpoint.pkl", run / "checkpoint.npz")
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {run / 'checkpoint.npz'} (checkpoint.pkl is left in place; delete it when done)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
