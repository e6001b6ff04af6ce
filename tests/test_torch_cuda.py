"""mcasim.torch on the GPU: CuPy tiles and CUDA tensors share memory through DLPack. Runs where a
GPU, CuPy and a CUDA build of torch are present; skipped elsewhere (CI has no GPU)."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import mcasim.torch as mt  # noqa: E402
from mcasim.torch._arrays import as_tensor  # noqa: E402
from sim.config import config_from_dict  # noqa: E402

PCM = {"synapse": {"mode": "pcm", "w_max": 1.0, "epsilon_uS": 0.5}}


def test_cupy_tiles_share_memory_with_cuda_tensors():
    """The weight Parameter views the CuPy tile's array, forward and backward run on CUDA tensors,
    a CPU tensor is refused with what to do."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device for torch")
    cp = pytest.importorskip("cupy")
    from gpu_model.backend import make_backend
    a = mt.AnalogLinear(6, 4, config=config_from_dict(PCM), backend=make_backend("cupy", 0))
    assert a.weight.is_cuda and a.weight.data_ptr() == int(a.store.weights().data.ptr)
    x = torch.randn(3, 6, device="cuda", requires_grad=True)
    y = a(x)
    y.sum().backward()
    assert y.is_cuda and x.grad.is_cuda
    arr = cp.ones((2, 3), dtype=cp.float32)
    assert mt.same_memory(as_tensor(arr), arr)
    with pytest.raises(mt.AnalogTensorError, match="x.cuda"):
        a(torch.randn(3, 6))
