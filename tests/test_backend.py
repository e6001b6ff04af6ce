"""Array backend: selection, fallback, clear errors, seeded reproducibility."""
import numpy as np
import pytest

from gpu_model import backend as backend_mod
from gpu_model import BackendError, make_backend


def test_numpy_backend():
    be = make_backend("numpy", seed=3)
    assert be.name == "numpy" and be.xp is np and be.seed == 3
    a = be.asarray([1.0, 2.0], dtype="float32")
    assert isinstance(be.asnumpy(a), np.ndarray) and a.dtype == np.float32


def test_auto_matches_environment():
    """auto gives CuPy exactly when CuPy imports and sees a GPU; here (no GPU) NumPy."""
    cupy, why = backend_mod._cupy_status()
    be = make_backend("auto", seed=0)
    if cupy is None:
        assert be.name == "numpy" and be.xp is np
        assert why  # a reason is always given
    else:
        assert be.name == "cupy"


def test_auto_falls_back_when_cupy_unusable(monkeypatch):
    monkeypatch.setattr(backend_mod, "_cupy_status", lambda: (None, "CuPy imports but sees no CUDA device"))
    assert make_backend("auto").name == "numpy"


def test_cupy_request_without_gpu_raises(monkeypatch):
    monkeypatch.setattr(backend_mod, "_cupy_status", lambda: (None, "CuPy does not import (ImportError: x)"))
    with pytest.raises(BackendError, match=r"backend 'cupy' requested but unavailable: CuPy does not import"):
        make_backend("cupy")


def test_cupy_real_environment():
    cupy, _ = backend_mod._cupy_status()
    if cupy is not None:
        pytest.skip("CuPy with a GPU is available here")
    with pytest.raises(BackendError, match="cupy"):
        make_backend("cupy")


@pytest.mark.parametrize("name,seed", [("tensorflow", 0), ("NumPy", 0), ("numpy", -1), ("numpy", 1.5)])
def test_bad_arguments(name, seed):
    with pytest.raises(BackendError):
        make_backend(name, seed)


def test_seeded_streams_reproducible():
    a, b, c = make_backend("numpy", 7), make_backend("numpy", 7), make_backend("numpy", 8)
    xa, xb, xc = (be.rng.standard_normal(100) for be in (a, b, c))
    assert np.array_equal(xa, xb)
    assert not np.array_equal(xa, xc)
    # child streams: reproducible, independent of each other and of the parent draws
    s1 = make_backend("numpy", 7).child_rng(1).standard_normal(100)
    assert np.array_equal(s1, a.child_rng(1).standard_normal(100))
    assert not np.array_equal(s1, a.child_rng(2).standard_normal(100))
    assert not np.array_equal(s1, make_backend("numpy", 8).child_rng(1).standard_normal(100))
