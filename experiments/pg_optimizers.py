"""Return vs trajectories for REINFORCE, N-MPG, N-PG-IGT and N-HARPG (arXiv 2302.01734).

  python experiments/pg_optimizers.py \
    --config=experiments/configs/pg_optimizers.py:smoke --workdir=/tmp/pg_optimizers_smoke

Policies are linear (softmax for CartPole-v1 from gymnax, Gaussian with fixed std for the
linear-quadratic task); the gradient is GPOMDP (discounted rewards-to-go, no baseline), the
optimizers come from rlpost.core.optim; the training loop lives in
rlpost.control.pg_optimizers. Each (env, method) trains num_seeds seeds vmapped in one
jitted lax.scan. Writes metrics.jsonl, curves.png, summary.json and prints the final table.
"""
import json
import pathlib

from absl import app
from absl import flags
from ml_collections import config_flags
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from rlpost.control import pg_optimizers  # pylint: disable=g-import-not-at-top

_CONFIG = config_flags.DEFINE_config_file("config", None, "pg_optimizers config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.")
flags.mark_flags_as_required(["config", "workdir"])

# Re-exported so that callers (and tests) can use the binary module directly.
run = pg_optimizers.run
summarize = pg_optimizers.summarize


def main(argv):
  del argv
  config = _CONFIG.value
  workdir = pathlib.Path(_WORKDIR.value)
  workdir.mkdir(parents=True, exist_ok=True)
  with open(workdir / "metrics.jsonl", "w") as metrics_file:
    def callback(env_name, method, res):
      mean = res["returns"].mean(axis=0)
      for i in range(0, len(mean), max(1, len(mean) // 50)):
        metrics_file.write(json.dumps(dict(
            env=env_name, method=method, iteration=i, trajectories=int(res["trajectories"][i]),
            return_mean=float(mean[i]))) + "\n")
      metrics_file.flush()
    results = run(config, log=lambda s: print(s, flush=True), callback=callback)

  fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4), squeeze=False)
  for ax, (env_name, methods) in zip(axes[0], results.items()):
    for method, res in methods.items():
      mean, std = res["returns"].mean(0), res["returns"].std(0)
      ax.plot(res["trajectories"], mean, label=method)
      ax.fill_between(res["trajectories"], mean - std, mean + std, alpha=0.2)
    ax.set_title(env_name)
    ax.set_xlabel("trajectories sampled")
    ax.set_ylabel("episode return")
    ax.legend()
  fig.tight_layout()
  fig.savefig(workdir / "curves.png", dpi=100)

  table = summarize(results, {e: float(config[e].threshold) for e in results})
  with open(workdir / "summary.json", "w") as f:
    json.dump(dict(config=config.to_dict(), table=table), f, indent=2, default=str)
  print(f"{'env':10s} {'method':12s} {'final return':>14s} {'std':>8s} {'trajs':>7s} "
        f"{'to thresh':>10s} {'sec':>6s}")
  for env_name, methods in table.items():
    for method, row in methods.items():
      hit = row["trajectories_to_threshold"]
      print(f"{env_name:10s} {method:12s} {row['final_return_mean']:14.2f} "
            f"{row['final_return_std']:8.2f} {row['trajectories']:7d} "
            f"{'never' if hit is None else hit:>10} {row['seconds']:6.1f}")


if __name__ == "__main__":
  app.run(main)
