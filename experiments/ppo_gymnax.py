"""Train PPO on a gymnax env over many vmapped seeds and write the return curve.

  python experiments/ppo_gymnax.py --config=experiments/configs/ppo_gymnax.py:smoke \
    --workdir=/tmp/ppo_smoke

Writes metrics.jsonl (one line per update: env steps, mean/min/max return over seeds), curves.png,
summary.json (final returns, steps/s, first step reaching the solved return) and prints a table.
"""
import json
import math
import pathlib
import warnings

from absl import app
from absl import flags
import jax
from ml_collections import config_flags
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from rlpost.control import ppo  # pylint: disable=g-import-not-at-top
from rlpost.meta import discovery  # pylint: disable=g-import-not-at-top

_CONFIG = config_flags.DEFINE_config_file("config", None, "ppo_gymnax config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.")
flags.mark_flags_as_required(["config", "workdir"])


def _nan_to_none(x: float):
  return x if math.isfinite(x) else None


def main(argv):
  del argv
  config = _CONFIG.value
  workdir = pathlib.Path(_WORKDIR.value)
  workdir.mkdir(parents=True, exist_ok=True)
  if config.objective not in ("ppo", "dpo"):
    raise ValueError(f"config.objective must be 'ppo' or 'dpo'; got {config.objective!r}")
  if config.num_seeds < 1:
    raise ValueError(f"config.num_seeds must be >= 1; got {config.num_seeds}")
  ppo_config = discovery.ppo_config_from_dict(config.ppo)
  drift_fn = None if config.objective == "ppo" else discovery.objective_fns()["dpo"]
  print(f"{config.objective} on {ppo_config.env_name}: {config.num_seeds} seeds x "
        f"{ppo_config.num_updates} updates x {ppo_config.batch_size} steps; compiling...",
        flush=True)
  keys = jax.random.split(jax.random.key(config.seed), config.num_seeds)
  out, timing = ppo.train_seeds(ppo_config, keys, drift_fn=drift_fn,
                                fast_compile=config.fast_compile)
  print(f"compiled in {timing['compile_s']:.1f}s, trained in {timing['run_s']:.1f}s "
        f"({timing['steps_per_s']:.0f} env steps/s)", flush=True)

  returns = np.asarray(out["metrics"]["episode_return"])  # [S, U], NaN where no episode ended
  steps = (np.arange(returns.shape[1]) + 1) * ppo_config.batch_size
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)
    mean, lo, hi = (np.nanmean(returns, 0), np.nanmin(returns, 0), np.nanmax(returns, 0))
  with open(workdir / "metrics.jsonl", "w") as f:
    for u in range(returns.shape[1]):
      f.write(json.dumps({"update": u, "env_steps": int(steps[u]),
                          "return_mean": _nan_to_none(float(mean[u])),
                          "return_min": _nan_to_none(float(lo[u])),
                          "return_max": _nan_to_none(float(hi[u]))}) + "\n")

  final = np.asarray(out["final_return"])
  solved_at = []
  for r in returns:
    hit = np.nonzero(r >= config.solved_return)[0]
    solved_at.append(int(steps[hit[0]]) if hit.size else None)
  summary = {
      "env_name": ppo_config.env_name,
      "objective": config.objective,
      "num_seeds": config.num_seeds,
      "total_env_steps_per_seed": ppo_config.num_updates * ppo_config.batch_size,
      "final_return_mean": float(final.mean()),
      "final_return_per_seed": [float(x) for x in final],
      "first_env_step_reaching_solved_return": solved_at,
      "seeds_solved": int(sum(x is not None for x in solved_at)),
      **timing,
      "config": config.to_dict(),
  }
  with open(workdir / "summary.json", "w") as f:
    json.dump(summary, f, indent=1)

  fig, ax = plt.subplots(figsize=(6, 4))
  ax.plot(steps, mean, label=f"{config.objective} (mean of {config.num_seeds} seeds)")
  ax.fill_between(steps, lo, hi, alpha=0.2, label="min-max over seeds")
  ax.axhline(config.solved_return, color="k", ls="--", lw=0.8)
  ax.set(xlabel="env steps", ylabel="episode return", title=ppo_config.env_name)
  ax.legend()
  fig.tight_layout()
  fig.savefig(workdir / "curves.png", dpi=100)

  print(f"\n{'env':14s}{'objective':>10s}{'seeds':>7s}{'final return':>15s}{'solved':>8s}"
        f"{'steps/s':>10s}")
  print(f"{ppo_config.env_name:14s}{config.objective:>10s}{config.num_seeds:7d}"
        f"{final.mean():10.1f} +-{final.std():4.1f}{summary['seeds_solved']:5d}/"
        f"{config.num_seeds:<2d}{timing['steps_per_s']:10.0f}")
  print(f"wrote {workdir}/summary.json, curves.png, metrics.jsonl")


if __name__ == "__main__":
  app.run(main)
