"""Stock-augmented categorical DQN (expectation vs CVaR agent) on a gymnax env.

  python experiments/distributional_dqn.py \
    --config=experiments/configs/distributional_dqn.py:smoke --workdir=/tmp/dist_dqn_smoke

Writes metrics.jsonl, curves.png, summary.json and prints the final table. Logic lives in
rlpost.control.distributional_dqn (Pires et al., arXiv 2501.13028; C51, arXiv 1707.06887).
"""
import json
import pathlib
import time

from absl import app
from absl import flags
from ml_collections import config_flags
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

from rlpost.control import distributional_dqn  # pylint: disable=g-import-not-at-top

_CONFIG = config_flags.DEFINE_config_file("config", None, "distributional_dqn config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  config = _CONFIG.value
  workdir = pathlib.Path(_WORKDIR.value)
  workdir.mkdir(parents=True, exist_ok=True)
  t0 = time.perf_counter()
  print(f"training {list(config.objectives)} agents, {config.num_seeds} seed(s), "
        f"{config.dqn.num_iterations} iterations x {config.dqn.num_envs} envs", flush=True)
  results = distributional_dqn.run_experiment(config, log=lambda s: print(s, flush=True),
                                              fast_compile=config.fast_compile)
  with open(workdir / "metrics.jsonl", "w") as f:
    for objective, res in results.items():
      curve = res["curve"]
      for i in range(0, len(curve), max(1, len(curve) // 100)):
        f.write(json.dumps({"objective": objective, "iteration": i,
                            "last_return": curve[i]}) + "\n")
  fig, ax = plt.subplots(figsize=(6, 4))
  for objective, res in results.items():
    ax.plot(res["curve"], label=objective)
  ax.set(xlabel="iteration (env steps per env)", ylabel="last episode return (seed mean)",
         title=config.dqn.env_name)
  ax.legend()
  fig.tight_layout()
  fig.savefig(workdir / "curves.png", dpi=100)
  summary = {"config": config.to_dict(), "wall_seconds": time.perf_counter() - t0,
             "results": {k: {kk: vv for kk, vv in v.items() if kk != "curve"}
                         for k, v in results.items()}}
  with open(workdir / "summary.json", "w") as f:
    json.dump(summary, f, indent=1)
  print(f"\n{'objective':12s} {'return mean':>12s} {'CVaR_' + str(config.tau):>10s} "
        f"{'disc. mean':>11s} {'disc. CVaR':>11s} {'c0':>7s}")
  for objective, res in results.items():
    r, d = res["eval"]["return"], res["eval"]["discounted_return"]
    print(f"{objective:12s} {r['mean']:12.1f} {r['cvar']:10.1f} {d['mean']:11.2f} "
          f"{d['cvar']:11.2f} {res['c0_mean']:7.1f}")
  print(f"wrote {workdir}/summary.json ({summary['wall_seconds']:.0f}s)")


if __name__ == "__main__":
  app.run(main)
