"""experiments/train_llm.py: the smoke run writes every artefact, and a run killed with SIGKILL at
a random point then resumed ends with bit-identical params."""
import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
BINARY = REPO / "experiments" / "train_llm.py"
SMOKE = f"--config={REPO / 'experiments' / 'configs' / 'train_llm.py'}:smoke"


def _env(cache_dir):
  env = dict(os.environ)
  # A shared persistent compilation cache: the resumed runs reuse the smoke run's executables.
  env.update(JAX_COMPILATION_CACHE_DIR=str(cache_dir),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  return env


def _cmd(workdir, *extra):
  return [sys.executable, str(BINARY), SMOKE, f"--workdir={workdir}", *extra]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("jax_cache")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, cache_dir):
  workdir = tmp_path_factory.mktemp("smoke") / "run"
  proc = subprocess.run(_cmd(workdir), cwd=REPO, env=_env(cache_dir), capture_output=True,
                        text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir, proc


def test_train_llm_smoke_writes_every_artefact(smoke_run):
  workdir, proc = smoke_run
  summary = json.loads((workdir / "summary.json").read_text())
  for key in ("objective", "sft_accuracy", "final_accuracy", "final_accuracy_stderr",
              "control_sft_accuracy", "eval_split", "eval_size", "steps", "wall_s"):
    assert key in summary, key
  assert summary["objective"] == "grpo" and summary["steps"] == 3 and summary["eval_size"] == 32
  assert summary["control_sft_accuracy"] is not None
  records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  phases = {r["phase"] for r in records}
  assert {"sft", "rl", "eval", "control"} <= phases
  rl_rows = [r for r in records if r["phase"] == "rl"]
  assert [r["step"] for r in rl_rows] == [1, 2, 3]
  for key in ("reward_mean", "reward_std", "accuracy", "zero_spread_frac", "clip_frac_low",
              "clip_frac_high", "ratio_min", "ratio_max", "kl", "entropy", "response_len_mean",
              "response_len_max", "truncation_rate", "tokens_per_s_rollout",
              "tokens_per_s_logprob", "tokens_per_s_train"):
    assert key in rl_rows[-1], key
  assert list((workdir / "tensorboard").glob("events.out.tfevents.*"))
  assert (workdir / "curves.png").stat().st_size > 1000
  assert (workdir / "policy" / "model.safetensors").exists()
  assert "accuracy on test (n=32" in proc.stdout and "after grpo (3 steps)" in proc.stdout
  assert "train_llm" in proc.stderr  # the tqdm bar
  # A finished workdir is only re-reported, nothing is retrained.
  again = subprocess.run(_cmd(workdir), cwd=REPO, capture_output=True, text=True, timeout=600)
  assert again.returncode == 0 and "after grpo (3 steps)" in again.stdout


def test_train_llm_sigkill_and_resume_is_bit_identical(smoke_run, cache_dir, tmp_path):
  ref_dir, _ = smoke_run
  workdir = tmp_path / "killed"
  total = 4 + 3  # smoke: 4 SFT steps + 3 RL steps, one metrics line each
  kill_after = random.Random(time.time_ns()).randint(1, total - 1)
  proc = subprocess.Popen(_cmd(workdir), cwd=REPO, env=_env(cache_dir),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  metrics = workdir / "metrics.jsonl"
  deadline = time.time() + 600
  while time.time() < deadline and proc.poll() is None:
    lines = metrics.read_text().count('"phase": "') if metrics.exists() else 0
    if lines >= kill_after:
      time.sleep(random.uniform(0.0, 0.3))
      break
    time.sleep(0.05)
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
  assert not (workdir / "summary.json").exists()
  resumed = subprocess.run(_cmd(workdir), cwd=REPO, env=_env(cache_dir), capture_output=True,
                           text=True, timeout=900)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  ref = (ref_dir / "policy" / "model.safetensors").read_bytes()
  got = (workdir / "policy" / "model.safetensors").read_bytes()
  assert got == ref, f"resumed params differ from the uninterrupted run (killed after {kill_after})"
  rl_steps = [json.loads(l)["step"] for l in metrics.read_text().splitlines()
              if '"phase": "rl"' in l]
  assert rl_steps == [1, 2, 3]  # stale lines of the killed run were dropped
