"""IWOCS robust MDPs: tabular (vs robust VI) and deep (PPO + CMA-ES on parametric CartPole).

  python experiments/iwocs.py --config=experiments/configs/iwocs.py:smoke --workdir=/tmp/iwocs

Writes metrics.jsonl, curves.png, summary.json and prints the final table. Logic lives in
rlpost.planning.iwocs_deep (run_tabular, run_deep).
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

from rlpost.planning import iwocs_deep  # pylint: disable=g-import-not-at-top

_CONFIG = config_flags.DEFINE_config_file("config", None, "iwocs config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  config = _CONFIG.value
  workdir = pathlib.Path(_WORKDIR.value)
  workdir.mkdir(parents=True, exist_ok=True)
  t0 = time.perf_counter()
  log = lambda s: print(s, flush=True)
  for v in config.variants:
    if v not in ("tabular", "deep"):
      raise ValueError(f"config.variants entries must be 'tabular' or 'deep'; got {v!r}")
  summary = {"config": config.to_dict()}
  with open(workdir / "metrics.jsonl", "w") as metrics:
    if "tabular" in config.variants:
      summary["tabular"] = iwocs_deep.run_tabular(config.tabular, log=log)
      for row in summary["tabular"]["rows"]:
        metrics.write(json.dumps({"variant": "tabular", **row}) + "\n")
    if "deep" in config.variants:
      summary["deep"] = iwocs_deep.run_deep(config.deep, log=log)
      for i, v in enumerate(summary["deep"]["search_values"]):
        metrics.write(json.dumps({"variant": "deep", "iteration": i, "set_worst_case": v,
                                  "model": summary["deep"]["models"][i + 1]}) + "\n")
  summary["wall_seconds"] = time.perf_counter() - t0

  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  for row in summary.get("tabular", {}).get("rows", []):
    axes[0].plot(row["set_worst_values"], marker="o", label=f"problem {row['problem']}")
    axes[0].axhline(row["robust_vi"], ls=":", color="gray")
  axes[0].set(xlabel="IWOCS iteration", ylabel="worst value over the model set",
              title="tabular (dotted: robust VI)")
  if "deep" in summary:
    d = summary["deep"]
    axes[1].plot(d["search_values"], marker="o", label="set worst case found by CMA-ES")
    axes[1].axhline(d["worst_case"]["nominal_ppo"]["return"], color="r", ls="--",
                    label="nominal PPO worst case")
    axes[1].axhline(d["worst_case"]["iwocs"]["return"], color="g", ls="--",
                    label="IWOCS set worst case")
    axes[1].legend()
  axes[1].set(xlabel="IWOCS iteration", ylabel="return", title="deep (CartPole)")
  fig.tight_layout()
  fig.savefig(workdir / "curves.png", dpi=100)
  with open(workdir / "summary.json", "w") as f:
    json.dump(summary, f, indent=1, default=float)

  if "tabular" in summary:
    print("\ntabular: worst-case start value (robust policy evaluation over the hull)")
    print(f"{'problem':>8s} {'nominal VI':>11s} {'IWOCS':>8s} {'robust VI':>10s}")
    for r in summary["tabular"]["rows"]:
      print(f"{r['problem']:8d} {r['nominal_worst']:11.3f} {r['iwocs_worst']:8.3f} "
            f"{r['robust_vi']:10.3f}")
  if "deep" in summary:
    d = summary["deep"]
    print(f"\ndeep (CartPole, parameters {d['names']}): return, CMA-ES worst case vs nominal model")
    for k in ("nominal_ppo", "iwocs"):
      w = d["worst_case"][k]
      print(f"{k:12s} worst {w['return']:7.1f} at {[round(x, 3) for x in w['xi']]}   "
            f"nominal model {d['nominal_model_return'][k]:7.1f}")
  print(f"wrote {workdir}/summary.json ({summary['wall_seconds']:.0f}s)")


if __name__ == "__main__":
  app.run(main)
