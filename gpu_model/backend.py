"""One array backend, chosen once: NumPy (CPU) or CuPy (GPU).

All device, crossbar and golden-model code is written once against ``Backend.xp`` (the array
module) and ``Backend.rng`` (a seeded generator of the same module). ``auto`` picks CuPy when it
imports *and* sees a CUDA device, otherwise NumPy.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

BACKEND_NAMES = ("numpy", "cupy", "auto")


class BackendError(RuntimeError):
    """Raised when the requested array backend cannot be used."""


def _cupy_status() -> tuple[Any | None, str]:
    """Return (cupy module or None, reason it is unusable)."""
    try:
        import cupy  # type: ignore
    except Exception as exc:  # ImportError, or a broken CUDA install
        return None, f"CuPy does not import ({exc.__class__.__name__}: {exc}); install the 'gpu' extra"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return None, f"CuPy imports but CUDA is unusable ({exc})"
    if count < 1:
        return None, "CuPy imports but sees no CUDA device"
    return cupy, ""


class CheckpointableCupyGenerator:
    """A CuPy random generator whose stream can be checkpointed and resumed bit for bit.

    CuPy's bit generator keeps one cuRAND state per GPU thread in device memory (~13 MB on an
    H200) and exposes no portable state to save. This wrapper makes the stream checkpointable by
    re-seeding instead: reading ``bit_generator.state`` (what a checkpoint does) moves the stream
    to its next *generation*, a fresh CuPy generator seeded from (entropy, generation), and
    returns ``{"cupy_generation": g, "entropy": [...]}``; setting it re-creates that stream at that
    generation (whatever stream this generator had, as setting a NumPy state does).
    A run that checkpoints every epoch and one resumed from any of its checkpoints therefore draw
    the same numbers. Every other attribute (``random``, ``standard_normal``, ``integers``, ...) is
    the wrapped generator's.
    """

    def __init__(self, xp, entropy):
        self._xp = xp
        self._entropy = [int(e) for e in entropy]
        self.generation = 0
        self._gen = self._make(0)

    def _make(self, generation: int):
        # generation 0 is seeded as a plain child stream; later ones append the generation number
        words = self._entropy + ([generation] if generation else [])
        return self._xp.random.default_rng(np.random.SeedSequence(words).generate_state(1)[0])

    @property
    def bit_generator(self):
        return self

    @property
    def state(self) -> dict:
        self.generation += 1
        self._gen = self._make(self.generation)
        return {"cupy_generation": self.generation, "entropy": list(self._entropy)}

    @state.setter
    def state(self, st: dict) -> None:
        if not isinstance(st, dict) or "cupy_generation" not in st:
            raise ValueError("not a CuPy generator state (was the checkpoint made on NumPy? "
                             "resume a run on the backend that made it)")
        self._entropy = [int(e) for e in st["entropy"]]   # the saved stream replaces this one (as NumPy's state does)
        self.generation = int(st["cupy_generation"])
        self._gen = self._make(self.generation)

    def __getattr__(self, name):
        return getattr(self._gen, name)


def rng_state(rng):
    """A generator's checkpointable state: a dict (NumPy's bit-generator state, or a
    :class:`CheckpointableCupyGenerator` generation), or None where there is none to save (a bare
    CuPy generator, whose ``state`` is a method returning a device pointer)."""
    bg = getattr(rng, "bit_generator", None)
    st = getattr(bg, "state", None) if bg is not None else None
    return st if isinstance(st, dict) else None


def set_rng_state(rng, state) -> None:
    """Restore what :func:`rng_state` returned (None: nothing to restore)."""
    if state is not None:
        rng.bit_generator.state = state


@dataclass
class Backend:
    """Array module plus a seeded random generator.

    name: "numpy" or "cupy"; xp: the array module; rng: ``xp.random.Generator``.
    """

    name: str
    xp: Any
    rng: Any
    seed: int

    def asnumpy(self, a):
        """Copy an array of this backend to host NumPy."""
        if self.name == "cupy":
            return self.xp.asnumpy(a)
        return np.asarray(a)

    def asarray(self, a, dtype=None):
        return self.xp.asarray(a, dtype=dtype)

    def child_rng(self, stream: int):
        """An independent, reproducible generator for a named stream (e.g. one per layer)."""
        if self.name == "cupy":
            # CuPy's Generator takes an integer seed: mix the stream id in deterministically, and
            # make the stream checkpointable (CheckpointableCupyGenerator)
            return CheckpointableCupyGenerator(self.xp, [self.seed, stream])
        return np.random.default_rng(np.random.SeedSequence([self.seed, stream]))

    def synchronize(self) -> None:
        if self.name == "cupy":
            self.xp.cuda.Stream.null.synchronize()


def make_backend(name: str = "auto", seed: int = 0) -> Backend:
    """Build the backend named ``name`` ("numpy", "cupy" or "auto"), seeded with ``seed``."""
    if name not in BACKEND_NAMES:
        raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(BACKEND_NAMES)}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise BackendError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    if name in ("cupy", "auto"):
        cupy, why = _cupy_status()
        if cupy is not None:
            return Backend("cupy", cupy, cupy.random.default_rng(seed), seed)
        if name == "cupy":
            raise BackendError(f"backend 'cupy' requested but unavailable: {why}")
    return Backend("numpy", np, np.random.default_rng(seed), seed)
