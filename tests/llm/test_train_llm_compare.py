"""experiments/compare_objectives.py smoke: two objectives from one shared SFT start."""
import json
import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_train_llm_compare_objectives_smoke(tmp_path):
  env = dict(os.environ)
  env.setdefault("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "jax_cache"))
  proc = subprocess.run(
      [sys.executable, str(REPO / "experiments" / "compare_objectives.py"),
       f"--config={REPO / 'experiments' / 'configs' / 'compare_objectives.py'}:smoke",
       f"--workdir={tmp_path / 'cmp'}"], cwd=REPO, env=env, capture_output=True, text=True,
      timeout=1200)
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
  assert [r["objective"] for r in rows] == ["grpo", "dapo"]
  # Same start for every objective: the shared SFT policy, evaluated identically.
  assert rows[0]["start_accuracy"] == rows[1]["start_accuracy"]
  for r in rows:
    for key in ("final_accuracy", "train_accuracy_last", "entropy_last", "zero_spread_mean"):
      assert r[key] == r[key]  # not NaN
  assert (tmp_path / "cmp" / "comparison.png").stat().st_size > 1000
  assert "| grpo |" in proc.stdout and "| dapo |" in proc.stdout
  for name in ("sft", "grpo", "dapo"):
    assert (tmp_path / "cmp" / name / "summary.json").exists()
