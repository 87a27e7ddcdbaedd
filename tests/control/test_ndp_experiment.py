"""Smoke test of the experiments/ndp.py binary (CI-sized config) and the notebook plot helper."""
import json
import os
import subprocess
import sys


def test_ndp_binary_smoke(repo_root, tmp_path):
  env = dict(os.environ, XLA_FLAGS="--xla_backend_optimization_level=0", JAX_PLATFORMS="cpu")
  proc = subprocess.run(
      [sys.executable, "experiments/ndp.py", "--config=experiments/configs/ndp.py:smoke",
       f"--workdir={tmp_path}"], cwd=repo_root, env=env, capture_output=True, text=True,
      timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  for name in ("metrics.jsonl", "summary.json", "curves.png", "rollouts.png"):
    assert (tmp_path / name).stat().st_size > 0, name
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert {r["model"] for r in summary["imitation"]} == {"ndp", "mlp"}
  assert {r["run"] for r in summary["rl"]} == {"throwing/ndp", "throwing/mlp"}
  assert "== NDP summary ==" in proc.stdout
  lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
  assert any(json.loads(l).get("part") == "rl" for l in lines)
