"""Smoke test of the experiments/lpn.py binary (CI-sized config) and the plot helper."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from rlpost.control import lpn


def test_lpn_binary_smoke(repo_root, tmp_path):
  env = dict(os.environ, XLA_FLAGS="--xla_backend_optimization_level=0", JAX_PLATFORMS="cpu")
  proc = subprocess.run(
      [sys.executable, "experiments/lpn.py", "--config=experiments/configs/lpn.py:smoke",
       f"--workdir={tmp_path}"], cwd=repo_root, env=env, capture_output=True, text=True,
      timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  for name in ("metrics.jsonl", "summary.json", "curves.png", "smoothness.png"):
    assert (tmp_path / name).stat().st_size > 0, name
  rows = json.loads((tmp_path / "summary.json").read_text())["rows"]
  assert [r["variant"] for r in rows] == ["lpn_jacobian"]
  for r in rows:
    assert all(np.isfinite(r[k]) for k in ("tracking_error", "hf_power", "train_wall_s"))
  assert "== LPN summary" in proc.stdout


def test_plot_helpers_return_figures():
  import matplotlib
  matplotlib.use("Agg")
  from matplotlib.figure import Figure
  from rlpost.control import ndp
  fake = {"rows": [{"variant": "mlp", "hf_power": 1e-3}, {"variant": "lpn_jacobian",
                                                          "hf_power": 1e-4}],
          "example_actions": {"mlp": np.random.randn(20, 2), "lpn_jacobian": np.zeros((20, 2))},
          "dt": 0.05}
  assert isinstance(lpn.plot_smoothness(fake), Figure)
  strokes = np.random.randn(2, 11, 2)
  imitation = {"examples": {"target": strokes, "ndp": strokes, "mlp": strokes}}
  hist = {"throwing/ndp": [{"env_steps": 10, "return": -1.0}, {"env_steps": 20, "return": -0.5}]}
  assert isinstance(ndp.plot_rollout(imitation, hist), Figure)


def test_config_rejects_bad_arg():
  import importlib.util
  import pathlib
  root = pathlib.Path(__file__).resolve().parents[2]
  for name in ("lpn", "ndp"):
    spec = importlib.util.spec_from_file_location(f"cfg_{name}",
                                                  root / "experiments" / "configs" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.get_config("smoke") is not None
    with pytest.raises(ValueError, match="config arg"):
      mod.get_config("huge")
