"""Smoke run of experiments/ppo_gymnax.py, and its config-error path."""
import importlib.util
import pathlib

import pytest

from rlpost.meta import discovery

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_ppo_gymnax_smoke(tmp_path, run_binary):
  stdout, summary = run_binary("ppo_gymnax.py", "experiments/configs/ppo_gymnax.py:smoke", tmp_path)
  assert summary["env_name"] == "CartPole-v1" and summary["num_seeds"] == 2
  assert len(summary["final_return_per_seed"]) == 2
  assert summary["steps_per_s"] > 0
  assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 3
  assert "steps/s" in stdout


def test_bad_config_values_name_the_field():
  spec = importlib.util.spec_from_file_location(
      "ppo_gymnax_config", REPO / "experiments" / "configs" / "ppo_gymnax.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("smoke")
  config.ppo.num_minibatches = 3
  with pytest.raises(ValueError, match="num_minibatches"):
    discovery.ppo_config_from_dict(config.ppo)
  with pytest.raises(ValueError, match="lerning_rate"):
    discovery.ppo_config_from_dict({"lerning_rate": 1e-3})
  with pytest.raises(ValueError, match="config arg"):
    module.get_config("large")
