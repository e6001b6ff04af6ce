"""Array backend: selection, fallback, clear errors, seeded reproducibility."""
import numpy as np
import pytest

from gpu_model import backend as backend_mod
from gpu_model import BackendError, make_backend


SELECTION = "tests the backend selection that MCASIM_TEST_BACKEND=cupy replaces"


@pytest.mark.numpy_only(SELECTION)
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


@pytest.mark.numpy_only(SELECTION)
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


def test_cupy_backend_on_a_gpu():
    """Where CuPy sees a GPU: arrays live on the device, come back to the host, and named streams
    are reproducible and independent."""
    cupy, why = backend_mod._cupy_status()
    if cupy is None:
        pytest.skip(f"no CuPy GPU here: {why}")
    be = make_backend("cupy", seed=5)
    a = be.asarray([1.0, 2.0], dtype="float32")
    assert isinstance(a, cupy.ndarray) and isinstance(be.asnumpy(a), np.ndarray)
    np.testing.assert_array_equal(be.asnumpy(a), [1.0, 2.0])
    r1 = be.asnumpy(be.child_rng(3).standard_normal(1000))
    r2 = be.asnumpy(make_backend("cupy", seed=5).child_rng(3).standard_normal(1000))
    r3 = be.asnumpy(be.child_rng(4).standard_normal(1000))
    np.testing.assert_array_equal(r1, r2)
    assert abs(np.corrcoef(r1, r3)[0, 1]) < 0.15 and abs(r1.mean()) < 0.15 and abs(r1.std() - 1) < 0.1


def test_checkpointable_cupy_generator_resumes_its_stream():
    """The CuPy stream wrapper's logic (run here over NumPy's generators, as it is module-neutral):
    reading the state re-seeds to the next generation; restoring it gives the same draws as the
    stream that was never interrupted, also in a generator of another stream (as a NumPy state
    does); a NumPy state is refused."""
    from gpu_model.backend import CheckpointableCupyGenerator as G
    a = G(np, [3, 17])
    first = a.random(5)
    np.testing.assert_array_equal(first, np.random.default_rng(
        np.random.SeedSequence([3, 17]).generate_state(1)[0]).random(5))   # generation 0 = plain child stream
    st = a.bit_generator.state                     # a checkpoint: the stream moves to generation 1
    after = a.standard_normal(4)
    b = G(np, [3, 17])
    b.random(11)                                   # whatever it drew before
    b.bit_generator.state = st                     # resumed from the checkpoint
    np.testing.assert_array_equal(b.standard_normal(4), after)
    assert st == {"cupy_generation": 1, "entropy": [3, 17]}
    c = G(np, [9, 1])                               # another stream takes the saved one over
    c.bit_generator.state = st
    np.testing.assert_array_equal(c.standard_normal(4), after)
    with pytest.raises(ValueError, match="NumPy"):
        b.bit_generator.state = np.random.default_rng(0).bit_generator.state
