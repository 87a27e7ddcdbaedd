"""Smoke test of the experiments/inventory.py absl binary and its config."""
import importlib.util
import json
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


def _config_module():
  spec = importlib.util.spec_from_file_location("inventory_config",
                                                REPO / "experiments" / "configs" / "inventory.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def test_inventory_binary_smoke(tmp_path):
  cmd = [sys.executable, str(REPO / "experiments" / "inventory.py"),
         "--config=experiments/configs/inventory.py:setting=lost_sales,lead_time=1,p=4,smoke",
         f"--workdir={tmp_path}"]
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  summary = json.loads((tmp_path / "summary.json").read_text())
  for k in ("setting", "lead_time", "p", "policy", "test_cost", "optimal_cost", "gap_pct",
            "train_wall_s"):
    assert k in summary
  assert summary["optimal_cost"] == pytest.approx(4.0407, abs=1e-3)
  assert summary["test_cost"] >= summary["optimal_cost"] - 0.1  # nothing beats the optimum
  assert (tmp_path / "curves.png").stat().st_size > 0
  lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
  assert len(lines) >= 2 and "dev_cost" in json.loads(lines[-1])
  assert "test_cost" in proc.stdout


def test_config_parsing_and_errors_name_the_field():
  mod = _config_module()
  c = mod.get_config("setting=backlogged,lead_time=4,p=19")
  assert (c.setting, c.lead_time, c.p, c.policy) == ("backlogged", 4, 19.0, "mlp")
  assert mod.get_config("setting=one_warehouse,n_stores=50").policy == "gnn"
  assert mod.get_config("smoke").hdpo.n_steps < mod.get_config("").hdpo.n_steps
  with pytest.raises(ValueError, match="lead_tme"):
    mod.get_config("lead_tme=2")
  from rlpost.control.inventory import experiment
  with pytest.raises(ValueError, match="setting"):
    experiment.validate(mod.get_config("setting=perishable"))
  with pytest.raises(ValueError, match="policy"):
    experiment.validate(mod.get_config("setting=serial,policy=gnn"))
  with pytest.raises(ValueError, match="lead_time"):
    experiment.validate(mod.get_config("lead_time=0"))
