"""Test-wide settings: offline hub, headless plots, and one torch thread count for the whole suite.

The thread count is 1 by default (shared CI cores) and follows INDIS_TEST_THREADS or OMP_NUM_THREADS when set, so
the suite can be run at several thread counts to show that no test depends on it (subprocesses started by the
tests get the same count through `fake_models.cli_env`)."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

TEST_THREADS = max(1, int(os.environ.get("INDIS_TEST_THREADS") or os.environ.get("OMP_NUM_THREADS") or 1))
torch.set_num_threads(TEST_THREADS)


@pytest.fixture(autouse=True)
def _restore_threads():
    """Commands such as `indis demo --threads 1` set torch's thread count; put the suite's count back after each test."""
    yield
    if torch.get_num_threads() != TEST_THREADS:
        torch.set_num_threads(TEST_THREADS)
