import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def dataset_root() -> Path | None:
    """MCASIM_DATA, else ../shared/data beside the checkout."""
    env = os.environ.get("MCASIM_DATA")
    if env:
        return Path(env)
    cand = REPO.parent / "shared" / "data"
    return cand if cand.is_dir() else None


@pytest.fixture
def data_root():
    """Dataset folder; in CI (CI=true) a missing dataset is a failure, elsewhere a skip."""
    root = dataset_root()
    if root is None or not root.is_dir():
        msg = "datasets not found: set MCASIM_DATA or place ../shared/data beside the checkout"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return root


# --- the array backend the suite runs on ---------------------------------------------------------
# MCASIM_TEST_BACKEND=cupy runs the suite on the GPU: every backend a test or the code under test
# asks for by name ("numpy" or "auto") is built as CuPy instead, so the same tests exercise the
# CuPy path. Tests tied to NumPy's random stream or to host arrays by design carry
# @pytest.mark.numpy_only and are skipped there (each says why). Default: numpy (CI has no GPU).
TEST_BACKEND = os.environ.get("MCASIM_TEST_BACKEND", "numpy")
if TEST_BACKEND not in ("numpy", "cupy"):
    raise pytest.UsageError(f"MCASIM_TEST_BACKEND must be numpy or cupy, got {TEST_BACKEND!r}")

if TEST_BACKEND == "cupy":
    import gpu_model
    import gpu_model.backend as _backend_mod

    _cupy, _why = _backend_mod._cupy_status()
    if _cupy is None:
        raise pytest.UsageError(f"MCASIM_TEST_BACKEND=cupy, but {_why}")
    _make_backend = _backend_mod.make_backend

    def _make_backend_on_cupy(name: str = "auto", seed: int = 0):
        return _make_backend("cupy" if name in ("numpy", "auto") else name, seed)

    # patched before any test module (or sim module) binds the name
    _backend_mod.make_backend = _make_backend_on_cupy
    gpu_model.make_backend = _make_backend_on_cupy


def pytest_configure(config):
    config.addinivalue_line("markers", "numpy_only(why): needs NumPy's random stream or host arrays; "
                                       "skipped when MCASIM_TEST_BACKEND=cupy")


def pytest_report_header(config):
    return f"mcasim array backend under test: {TEST_BACKEND} (MCASIM_TEST_BACKEND)"


def pytest_collection_modifyitems(config, items):
    if TEST_BACKEND == "numpy":
        return
    for item in items:
        m = item.get_closest_marker("numpy_only")
        if m is not None:
            why = m.args[0] if m.args else "NumPy only"
            item.add_marker(pytest.mark.skip(reason=f"numpy_only: {why}"))


def to_host(a):
    """A backend array (NumPy or CuPy) as a NumPy array, for assertions."""
    return a.get() if hasattr(a, "get") and not isinstance(a, np.ndarray) else np.asarray(a)


def central_difference(f, arr, idx, h: float) -> float:
    """Central finite difference of the scalar ``f()`` with respect to ``arr[idx]`` (a NumPy or
    CuPy array, changed in place and restored): (f(a + h) - f(a - h)) / 2h."""
    old = float(arr[idx])           # a value: CuPy's arr[idx] is a view
    arr[idx] = old + h
    fp = float(f())
    arr[idx] = old - h
    fm = float(f())
    arr[idx] = old
    return (fp - fm) / (2 * h)
