"""Shared pytest fixtures and paths for the rlpost test suite."""
import os
import pathlib

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
TABMWP_DIR = SHARED_DATA / "tabmwp"


@pytest.fixture(scope="session")
def repo_root() -> pathlib.Path:
  return REPO_ROOT


@pytest.fixture(scope="session")
def tabmwp_dir() -> pathlib.Path:
  """The real TabMWP samples; tests that use them skip when the folder is absent."""
  if not (TABMWP_DIR / "problems_dev1k.json").exists():
    pytest.skip(f"real TabMWP data not found under {TABMWP_DIR}")
  return TABMWP_DIR


def pytest_configure(config):
  # Keep XLA from grabbing every core for intra-op threads in each worker; tests are small.
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
