"""A tile's state dict (nested dicts of NumPy arrays, ints, floats, strings and generator-state
dicts) as torch state and back: every array becomes a tensor (a copy: the state is a snapshot),
everything else stays a plain Python value, so ``torch.save`` / ``torch.load(weights_only=True)``
carry it."""
from __future__ import annotations

import numpy as np
import torch


def arrays_to_tensors(obj):
    """NumPy (or CuPy) arrays -> CPU tensors (copies), NumPy scalars -> Python, recursively."""
    if isinstance(obj, dict):
        return {k: arrays_to_tensors(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(arrays_to_tensors(v) for v in obj)
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.array(obj, copy=True))
    if isinstance(obj, np.generic):
        return obj.item()
    if hasattr(obj, "__cuda_array_interface__"):          # a CuPy array: to the host
        return torch.from_numpy(np.asarray(obj.get()))
    return obj


def tensors_to_arrays(obj):
    """Inverse of :func:`arrays_to_tensors`: tensors -> NumPy arrays (the stores move them to
    their backend on load)."""
    if isinstance(obj, dict):
        return {k: tensors_to_arrays(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(tensors_to_arrays(v) for v in obj)
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().numpy()
    return obj
