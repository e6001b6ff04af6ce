import os
from pathlib import Path

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
