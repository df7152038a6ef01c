"""Shared fixtures.

``ml100k_path``: the read-only copy of MovieLens 100K in ``../shared/data/ml-100k``
(beside the repository, for every developer and in CI), or the folder named by
``METAREC_TEST_ML100K``. Tests that need it are skipped when it is absent, except
in CI (``CI`` set), where its absence is a failure. Never copy MovieLens into the
repository: its license forbids redistribution.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def _ml100k_candidate() -> Path:
    env = os.environ.get("METAREC_TEST_ML100K")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k"


@pytest.fixture(scope="session")
def ml100k_path() -> Path:
    path = _ml100k_candidate()
    if not (path / "u.data").is_file():
        msg = (f"MovieLens 100K not found at {path} (expected {path / 'u.data'}); "
               "set METAREC_TEST_ML100K to its folder")
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@pytest.fixture(scope="session")
def ml100k(ml100k_path):
    from metarec_fast.data import load_ml100k

    return load_ml100k(ml100k_path)
