"""Smoke tests for experiments/pg_optimizers.py (N-PG-IGT / N-HARPG sample-complexity binary)."""
import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
BINARY = REPO / "experiments" / "pg_optimizers.py"
CONFIG = REPO / "experiments" / "configs" / "pg_optimizers.py"


def _run_binary(workdir, *overrides):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  cmd = [sys.executable, str(BINARY), f"--config={CONFIG}:smoke", f"--workdir={workdir}",
         *overrides]
  proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


def _check_outputs(workdir, envs, methods):
  summary = json.loads((workdir / "summary.json").read_text())
  for env_name in envs:
    for method in methods:
      row = summary["table"][env_name][method]
      assert np.isfinite(row["final_return_mean"])
  lines = (workdir / "metrics.jsonl").read_text().splitlines()
  assert {json.loads(l)["method"] for l in lines} == set(methods)
  assert (workdir / "curves.png").stat().st_size > 1000


def test_pg_optimizers_smoke_lq(tmp_path):
  """CI-sized run of the binary on the LQ task with the two paper methods."""
  proc = _run_binary(tmp_path, "--config.envs=('lq',)", "--config.methods=('n_pg_igt','n_harpg')")
  assert "n_harpg" in proc.stdout and "final return" in proc.stdout
  _check_outputs(tmp_path, ["lq"], ["n_pg_igt", "n_harpg"])


@pytest.mark.slow
def test_pg_optimizers_smoke_full(tmp_path):
  _run_binary(tmp_path)
  _check_outputs(tmp_path, ["cartpole", "lq"], ["reinforce", "n_momentum", "n_pg_igt", "n_harpg"])


def test_pg_optimizers_bad_config_names_field():
  def load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
  configs = load("pg_optimizers_config", CONFIG)
  with pytest.raises(ValueError, match="config arg"):
    configs.get_config("huge")
  binary = load("pg_optimizers_binary", BINARY)  # defines absl flags; imported once here
  config = configs.get_config("smoke")
  config.batch_size = 0
  with pytest.raises(ValueError, match="config.batch_size"):
    binary.run(config)
  config = configs.get_config("smoke")
  config.methods = ("adam",)
  config.envs = ("lq",)
  with pytest.raises(ValueError, match="config.methods"):
    binary.run(config)
