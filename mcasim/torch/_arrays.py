"""Zero-copy views between torch tensors and the tile's arrays (NumPy on CPU, CuPy on CUDA).

NumPy arrays and CPU tensors share memory through ``torch.from_numpy`` / ``Tensor.numpy``; CuPy
arrays and CUDA tensors through DLPack (``torch.from_dlpack`` / ``cupy.from_dlpack``). Nothing here
copies, except :func:`as_array` when a tensor is not contiguous (a strided input is made contiguous
once, as the crossbar reads whole vectors).
"""
from __future__ import annotations

import numpy as np
import torch

TILE_DTYPE = torch.float32       # the tiles compute in float32 (gpu_model.devices.FLOAT)


class AnalogTensorError(TypeError):
    """A tensor that cannot go through an analog tile as it is (device or dtype)."""


def check_tensor(t: torch.Tensor, xp, what: str) -> None:
    """Raise a one-line error (with what to do) when ``t`` cannot meet a tile of array module ``xp``."""
    on_gpu = xp is not np
    if on_gpu and t.device.type != "cuda":
        raise AnalogTensorError(f"{what}: the analog tiles run on CuPy (GPU) but the tensor is on {t.device}; "
                                f"move the input to CUDA (x.cuda()) or convert with backend='numpy'")
    if not on_gpu and t.device.type != "cpu":
        raise AnalogTensorError(f"{what}: the analog tiles run on NumPy (CPU) but the tensor is on {t.device}; "
                                f"move the input to the CPU (x.cpu()) or convert with backend='cupy'")
    if t.dtype != TILE_DTYPE:
        raise AnalogTensorError(f"{what}: analog tiles compute in float32, got {t.dtype}; "
                                f"cast the input (x.float()) or the model (model.float())")


def as_array(t: torch.Tensor, xp, what: str = "input"):
    """The tile-side array viewing ``t``'s memory (contiguous; a strided tensor is copied once)."""
    check_tensor(t, xp, what)
    t = t.detach()
    if not t.is_contiguous():
        t = t.contiguous()
    if xp is np:
        return t.numpy()
    return xp.from_dlpack(t)


def as_tensor(a) -> torch.Tensor:
    """The tensor viewing a tile-side array's memory (NumPy -> CPU tensor, CuPy -> CUDA tensor)."""
    if isinstance(a, np.ndarray):
        if not a.flags.writeable:          # torch.from_numpy warns on read-only arrays
            a = a.copy()
        return torch.from_numpy(a)
    return torch.from_dlpack(a)


def same_memory(t: torch.Tensor, a) -> bool:
    """Whether tensor ``t`` starts at array ``a``'s first element (shared memory, no copy)."""
    ptr = a.ctypes.data if isinstance(a, np.ndarray) else int(a.data.ptr)
    return t.data_ptr() == ptr
