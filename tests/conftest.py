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


def _run_binary(binary: str, config: str, workdir: pathlib.Path, *, timeout: int = 900):
  """Runs experiments/<binary> with --config/--workdir from the repo root; checks the artefacts.

  Returns (stdout, parsed summary.json).
  """
  import json  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  proc = subprocess.run(
      [sys.executable, str(REPO_ROOT / "experiments" / binary), f"--config={config}",
       f"--workdir={workdir}"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  for name in ("metrics.jsonl", "curves.png", "summary.json"):
    assert (workdir / name).exists(), name
  return proc.stdout, json.loads((workdir / "summary.json").read_text())


@pytest.fixture(scope="session")
def run_binary():
  """The shared smoke runner for experiment binaries (see `_run_binary`)."""
  return _run_binary
