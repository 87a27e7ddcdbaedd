"""Smoke run of experiments/offline.py (all methods, tiny) and the dataset cache it creates."""
import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from rlpost.offline import datasets

REPO = pathlib.Path(__file__).resolve().parents[2]


def shared_cache(tmp_path_factory) -> pathlib.Path:
  # One dataset cache per pytest session, shared with test_offline_notebook.py.
  return tmp_path_factory.getbasetemp() / "rlpost_offline_cache"


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("offline_smoke")
  env = dict(os.environ, RLPOST_CACHE=str(shared_cache(tmp_path_factory)))
  proc = subprocess.run(
      [sys.executable, "experiments/offline.py", "--config=experiments/configs/offline.py:smoke",
       f"--workdir={workdir}"], cwd=REPO, capture_output=True, text=True, timeout=1800, env=env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir, proc.stdout, shared_cache(tmp_path_factory)


def test_offline_binary_smoke_outputs(smoke_run):
  workdir, stdout, _ = smoke_run
  summary = json.loads((workdir / "summary.json").read_text())
  methods = {row["method"] for row in summary["rows"]}
  assert {"td3_bc", "prdc", "cdsa:frozen_td3_bc", "cdsa", "pgd:real_only", "pgd:unguided",
          "pgd"} <= methods
  for row in summary["rows"]:
    assert np.isfinite(row["score"]) and np.isfinite(row["cvar10_score"])
    assert row["cvar10_score"] <= row["score"] + 1e-6  # lower tail never exceeds the mean
  assert (workdir / "curves.png").stat().st_size > 0
  lines = (workdir / "metrics.jsonl").read_text().splitlines()
  assert any('"phase": "online"' in line for line in lines)
  assert "score" in stdout and "prdc" in stdout


def test_smoke_datasets_cached_with_d4rl_fields(smoke_run):
  _, _, cache = smoke_run
  config = datasets.default_dataset_config("point_mass", "smoke")
  directory = datasets.dataset_dir("point_mass", config, cache)
  assert sorted(p.name for p in directory.glob("*.npz")) == sorted(
      f"{k}.npz" for k in datasets.DATASET_KINDS)
  metadata = datasets.load_metadata("point_mass", config=config, cache_dir=cache)
  loaded = {k: datasets.load_dataset("point_mass", k, config=config, cache_dir=cache)
            for k in datasets.DATASET_KINDS}  # cache hits: no training here
  for kind, ds in loaded.items():
    assert ds.observations.shape == ds.next_observations.shape == (ds.size, 4)
    assert ds.actions.shape == (ds.size, 2) and np.all(np.abs(ds.actions) <= 1.0)
    assert ds.rewards.shape == ds.terminals.shape == ds.timeouts.shape == (ds.size,)
    assert not ds.terminals.any()  # point mass only times out
  assert loaded["random"].size == loaded["expert"].size == 1000
  assert loaded["medium-replay"].size == metadata["medium_env_steps"]
  # Random data scores about 0 by construction of the reference returns.
  random_returns = loaded["random"].episode_returns()
  assert len(random_returns) == 10
  assert abs(float(loaded["random"].normalized_score(random_returns.mean()))) < 100.0
  mean, std = loaded["medium"].normalization()
  data = loaded["medium"].as_arrays()
  np.testing.assert_allclose(np.asarray(data["observations"]).mean(0), 0.0, atol=1e-4)
  with pytest.raises(ValueError, match="dataset kind"):
    datasets.load_dataset("point_mass", "medium-expert", config=config, cache_dir=cache)


def test_config_errors_name_the_field(tmp_path):
  spec = importlib.util.spec_from_file_location("offline_config",
                                                REPO / "experiments" / "configs" / "offline.py")
  offline_config = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(offline_config)
  from rlpost.offline import experiment
  config = offline_config.get_config("td3_bc:point_mass:medium")
  config.methods = ["cql"]
  with pytest.raises(ValueError, match="config.methods"):
    experiment.run_experiment(config, tmp_path)
  config = offline_config.get_config("prdc:point_mass:expert")
  config.eval_every = 300
  with pytest.raises(ValueError, match="config.num_steps"):
    experiment.run_experiment(config, tmp_path)
