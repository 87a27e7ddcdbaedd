"""Tests of the TRL side of benchmarks/grpo_step.py (the run test skips when trl is absent)."""
import importlib.util
import math
import sys

import pytest


def _load_bench(repo_root):
  spec = importlib.util.spec_from_file_location("grpo_step_bench",
                                                repo_root / "benchmarks" / "grpo_step.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_trl_side_returns_none_when_trl_is_absent(repo_root, monkeypatch):
  bench = _load_bench(repo_root)
  monkeypatch.setitem(sys.modules, "trl", None)  # makes `import trl` raise ImportError
  assert bench.bench_trl(1) is None


@pytest.mark.slow
def test_trl_side_runs_one_timed_step(repo_root):
  pytest.importorskip("trl")
  bench = _load_bench(repo_root)
  out = bench.bench_trl(1, completions=16, new_tokens=8)
  assert out["side"] == "trl"
  assert math.isfinite(out["s_per_step"]) and out["s_per_step"] > 0
  assert 0 < out["generate_s"] < out["s_per_step"]
  # min_new_tokens masks EOS, so every completion has exactly new_tokens tokens.
  assert out["response_len_mean"] == 8.0
  assert out["completions"] == 16 and out["reps"] == 1
