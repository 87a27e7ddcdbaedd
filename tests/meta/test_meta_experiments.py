"""Smoke run of experiments/discover_objective.py (CI-sized config)."""
import json
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_discover_objective_smoke(tmp_path, run_binary):
  stdout, summary = run_binary("discover_objective.py",
                         "experiments/configs/discover_objective.py:smoke", tmp_path)
  assert set(summary["history"]) == {"lpo", "ta_lpo"}
  assert len(summary["history"]["lpo"]) == 2  # two generations
  table = summary["generalisation"]["CartPole-v1"]["table"]
  assert set(table) == {"ppo", "dpo", "lpo", "ta_lpo"}
  assert set(table["ppo"]) == {"2", "4"}
  # Every final return is a real CartPole return (>= 0), and none is NaN.
  assert all(c["mean"] is not None and c["mean"] >= 0.0 for row in table.values()
             for c in row.values())
  lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
  assert len(lines) == 4 and json.loads(lines[0])["objective"] == "lpo"
  assert "Generalisation table" in stdout and "TA-LPO minus LPO" in stdout
