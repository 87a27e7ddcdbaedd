"""Meta-train LPO / TA-LPO drifts (or LPG / TA-LPG) with Open_ES; report the generalisation table.

  python experiments/discover_objective.py \
    --config=experiments/configs/discover_objective.py:smoke --workdir=/tmp/discover_smoke

Writes metrics.jsonl (one line per objective and generation), discovered_params.npz (the ES means),
curves.png (meta-training curves), summary.json (history, generalisation tables, timing) and
prints the final table.
"""
import json
import math
import pathlib
import time

from absl import app
from absl import flags
from ml_collections import config_flags
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import jax  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from rlpost.meta import discovery  # pylint: disable=g-import-not-at-top

_CONFIG = config_flags.DEFINE_config_file("config", None, "discover_objective config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.")
flags.mark_flags_as_required(["config", "workdir"])


def _clean(x):
  """JSON-safe: NaN/inf -> None."""
  if isinstance(x, dict):
    return {k: _clean(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_clean(v) for v in x]
  if isinstance(x, float) and not math.isfinite(x):
    return None
  return x


def main(argv):
  del argv
  config = _CONFIG.value
  workdir = pathlib.Path(_WORKDIR.value)
  workdir.mkdir(parents=True, exist_ok=True)
  t0 = time.perf_counter()
  metrics_file = open(workdir / "metrics.jsonl", "w")

  def on_generation(name, row):
    metrics_file.write(json.dumps({"objective": name, **row}) + "\n")
    metrics_file.flush()
    print(f"[{name}] gen {row['generation']:3d}  return mean {row['return_mean']:7.1f}  "
          f"max {row['return_max']:7.1f}  lifetime {row['lifetime_mean']:5.1f}  "
          f"{row['seconds']:.1f}s", flush=True)

  def save_params(params):
    flat = {}
    for name, p in params.items():
      for path, leaf in jax.tree_util.tree_flatten_with_path(p)[0]:
        flat[name + jax.tree_util.keystr(path)] = np.asarray(leaf)
    np.savez(workdir / "discovered_params.npz", **flat)
    print(f"saved {workdir}/discovered_params.npz", flush=True)

  out = discovery.run_discovery(config, callback=on_generation,
                                log=lambda s: print(s, flush=True), on_meta_trained=save_params)
  metrics_file.close()

  fig, axes = plt.subplots(1, 1 + len(out["generalisation"]), figsize=(5 * (1 + len(out["generalisation"])), 4),
                           squeeze=False)
  axes = axes[0]
  for name, rows in out["history"].items():
    g = [r["generation"] for r in rows]
    axes[0].plot(g, [r["return_mean"] for r in rows], label=f"{name} population mean")
    axes[0].fill_between(g, [r["return_min"] for r in rows], [r["return_max"] for r in rows],
                         alpha=0.15)
  axes[0].set(xlabel="generation", ylabel="final return (sampled lifetimes)",
              title=f"meta-training on {config.train_env}")
  axes[0].legend()
  for ax, (env_name, res) in zip(axes[1:], out["generalisation"].items()):
    lifetimes = res["lifetimes"]
    for name, cells in res["table"].items():
      means = [cells[str(n)]["mean"] for n in lifetimes]
      errs = [cells[str(n)]["stderr"] for n in lifetimes]
      ax.errorbar(lifetimes, means, yerr=errs, marker="o", capsize=3, label=name)
    ax.set(xscale="log", xlabel="lifetime N (updates)", ylabel="final return",
           title=f"generalisation: {env_name}")
    ax.legend()
  fig.tight_layout()
  fig.savefig(workdir / "curves.png", dpi=100)

  summary = {
      "config": config.to_dict(),
      "history": out["history"],
      "generalisation": {env: {"lifetimes": r["lifetimes"], "table": r["table"]}
                         for env, r in out["generalisation"].items()},
      "wall_seconds": time.perf_counter() - t0,
  }
  ta = {}
  for env_name, res in out["generalisation"].items():
    t = res["table"]
    for base, aware in (("lpo", "ta_lpo"), ("ppo", "ta_lpg"), ("ppo", "lpg")):
      if base in t and aware in t:
        ta.setdefault(f"{aware}_minus_{base}", {})[env_name] = {
            str(n): t[aware][str(n)]["mean"] - t[base][str(n)]["mean"] for n in res["lifetimes"]}
  summary["differences"] = ta
  summary["ta_lpo_minus_lpo"] = ta.get("ta_lpo_minus_lpo", {})
  with open(workdir / "summary.json", "w") as f:
    json.dump(_clean(summary), f, indent=1)

  print("\nGeneralisation table: final return, mean +- stderr over seeds")
  for env_name, res in out["generalisation"].items():
    lifetimes = res["lifetimes"]
    print(f"\n{env_name} " + "".join(f"{'N=' + str(n):>18s}" for n in lifetimes))
    for name, cells in res["table"].items():
      print(f"{name:12s}" + "".join(
          f"{cells[str(n)]['mean']:11.1f} +-{cells[str(n)]['stderr']:5.1f}" for n in lifetimes))
  if config.get("family", "lpo") == "lpo":
    print(f"\nTA-LPO minus LPO: {json.dumps(_clean(summary['ta_lpo_minus_lpo']))}")
  print(f"Differences of means: {json.dumps(_clean(ta))}")
  print(f"wrote {workdir}/summary.json, curves.png, metrics.jsonl "
        f"({summary['wall_seconds']:.0f}s)")


if __name__ == "__main__":
  app.run(main)
