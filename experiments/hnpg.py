"""HNPG experiment binary: success rate against on-policy samples for hybrid / on-policy / offline.

Writes metrics.jsonl, curves.png and summary.json into --workdir and prints a final table.
"""
import json
import os
import time

from absl import app
from absl import flags
from ml_collections import config_flags

from rlpost.offline import hnpg

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiments/configs/hnpg.py[:arg]")
_WORKDIR = flags.DEFINE_string("workdir", None, "output directory", required=True)

VARIANTS = {
    "hnpg": dict(use_offline=True, on_policy=True),
    "npg": dict(use_offline=False, on_policy=True),
    "offline": dict(use_offline=True, on_policy=False),
}


def main(argv):
  del argv
  cfg = _CONFIG.value
  for v in cfg.variants:
    if v not in VARIANTS:
      raise ValueError(f"config.variants has unknown variant {v!r}; valid: {', '.join(VARIANTS)}")
  os.makedirs(_WORKDIR.value, exist_ok=True)
  env = hnpg.CombinationLock(horizon=cfg.horizon, num_actions=cfg.num_actions,
                             noise_dims=cfg.noise_dims)
  curves, summary = {}, {"horizon": cfg.horizon, "num_actions": cfg.num_actions, "variants": {}}
  start = time.time()
  with open(os.path.join(_WORKDIR.value, "metrics.jsonl"), "w") as metrics:
    for variant in cfg.variants:
      finals = []
      for seed in range(cfg.seeds):
        run_cfg = hnpg.HNPGConfig(iterations=cfg.iterations, batch=cfg.batch,
                                  offline_episodes=cfg.offline_episodes,
                                  critic_steps=cfg.critic_steps, max_kl=cfg.max_kl, seed=seed,
                                  **VARIANTS[variant])

        def log(it, sr, variant=variant, seed=seed):
          metrics.write(json.dumps({"variant": variant, "seed": seed, "iteration": it,
                                    "success": sr}) + "\n")
          metrics.flush()
          print(f"[{variant} seed {seed}] iteration {it}/{cfg.iterations} success {sr:.3f}",
                flush=True)

        curve = hnpg.train_hnpg(env, run_cfg, log=log)
        curves.setdefault(variant, []).append(curve)
        finals.append(curve["success"][-1])
      summary["variants"][variant] = {"final_success_mean": sum(finals) / len(finals),
                                      "final_success_per_seed": finals}
  summary["wall_s"] = round(time.time() - start, 1)

  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(6, 4))
  for variant, runs in curves.items():
    ax.plot(runs[0]["iteration"], np.mean([r["success"] for r in runs], 0), label=variant)
  ax.set_xlabel("iteration")
  ax.set_ylabel("success rate")
  ax.set_title(f"Combination lock H={cfg.horizon}, A={cfg.num_actions}")
  ax.legend()
  fig.tight_layout()
  fig.savefig(os.path.join(_WORKDIR.value, "curves.png"), dpi=100)
  with open(os.path.join(_WORKDIR.value, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2)
  print(f"{'variant':<10} {'final success (mean over seeds)':>32}")
  for variant, row in summary["variants"].items():
    print(f"{variant:<10} {row['final_success_mean']:>32.3f}")


if __name__ == "__main__":
  app.run(main)
