"""The DMLR experiment: test-time latent optimisation on held-out synthetic TabMWP problems.

Used by experiments/dmlr.py. For each held-out problem (level 1, sum/difference, "rows" style,
unique) it compares three greedy decodes of the same frozen policy:
  plain     the ordinary prompt, no think tokens (the baseline: no latent optimisation);
  init      the N think tokens at their initial value T_0, no optimisation, no retrieval;
  dmlr      the best T~ found by the ES loop (with its retrieved table tokens).
and reports accuracy, the DMLR confidence reward R (think span) and the mean top-k confidence of
the generated answer tokens.
"""
from __future__ import annotations

import json
import pathlib
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from rlpost.llm.agents import dmlr

_INT_FIELDS = ("seed", "num_problems", "batch_size", "prefix_len", "max_new_tokens",
               "dmlr.num_think_tokens", "dmlr.num_steps", "dmlr.top_k", "dmlr.num_samples",
               "dmlr.injection_start_step", "dmlr.injection_interval", "dmlr.insert_stride",
               "dmlr.num_retrieved")


def _field(c, name):
  section, _, leaf = name.rpartition(".")
  return (c[section] if section else c)[leaf]


def validate(c) -> None:
  """Raises ValueError naming the bad config field."""
  for name in _INT_FIELDS:
    v = _field(c, name)
    lowest = 0 if name in ("seed", "dmlr.injection_start_step", "dmlr.num_retrieved") else 1
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lowest:
      raise ValueError(f"config.{name} must be an int >= {lowest}, got {v!r}")
  for name in ("dmlr.sigma", "dmlr.learning_rate"):
    v = _field(c, name)
    if not isinstance(v, (int, float)) or not v >= 0 or (name == "dmlr.sigma" and v == 0):
      raise ValueError(f"config.{name} must be a {'positive' if name == 'dmlr.sigma' else 'non-negative'} "
                       f"number, got {v!r}")
  if not 0 < c.dmlr.sigma_decay <= 1:
    raise ValueError(f"config.dmlr.sigma_decay must be in (0, 1], got {c.dmlr.sigma_decay!r}")
  if c.dmlr.baseline and c.dmlr.num_samples < 2:
    raise ValueError("config.dmlr.baseline=True needs config.dmlr.num_samples >= 2")
  if c.num_problems % c.batch_size:
    raise ValueError(f"config.num_problems ({c.num_problems}) must be a multiple of "
                     f"config.batch_size ({c.batch_size})")
  if not pathlib.Path(c.checkpoint, "config.json").exists():
    raise ValueError(f"config.checkpoint {c.checkpoint!r} has no config.json")


def _decode_texts(tokenizer, out) -> tuple[list[str], np.ndarray, np.ndarray]:
  toks, mask, conf = (np.asarray(x) for x in out)
  rows = [t[m.astype(bool)].tolist() for t, m in zip(toks, mask)]
  return tokenizer.batch_decode(rows, skip_special_tokens=True), mask, conf


def run_experiment(config, workdir: str | pathlib.Path, *, progress: bool = True,
                   log: Callable[[str], None] = print) -> dict[str, Any]:
  """Runs DMLR vs the plain prompt; writes metrics.jsonl, curves.png, summary.json."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from rlpost.llm import tasks  # pylint: disable=g-import-not-at-top
  from rlpost.llm import train  # pylint: disable=g-import-not-at-top
  from rlpost.llm.hf import load_hf_checkpoint  # pylint: disable=g-import-not-at-top
  validate(config)
  c = config
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  start = time.time()
  model, _, tokenizer = load_hf_checkpoint(c.checkpoint)
  if tokenizer is None:
    tokenizer = tasks.load_tokenizer()
  records = tasks.generate_dataset(c.num_problems, seed=c.seed, split="test", level=1,
                                   families=("sum", "difference"), style="rows", unique=True)
  kwargs = dict(c.dmlr.to_dict())
  top_k = kwargs.pop("top_k")
  opt, dec = dmlr.make_runner(model, layout_kwargs=kwargs, max_new_tokens=c.max_new_tokens,
                              stop_id=tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id or 0,
                              top_k=top_k)
  _, params = nnx.split(model)
  layout = dmlr.ThinkLayout(c.dmlr.num_think_tokens, c.dmlr.insert_stride, c.dmlr.num_retrieved)
  writer = train.MetricsWriter(workdir, tensorboard=False)
  writer.path.write_text("")
  correct = {"plain": [], "init": [], "dmlr": []}
  answer_conf = {k: [] for k in correct}
  r0, rbest, step_rewards, new_best = [], [], [], []
  batches = range(0, c.num_problems, c.batch_size)
  bar = None
  if progress:
    from tqdm import tqdm  # pylint: disable=g-import-not-at-top
    bar = tqdm(total=len(batches), desc="dmlr batches", leave=False)
  for bi, lo in enumerate(batches):
    recs = records[lo:lo + c.batch_size]
    batch = dmlr.encode_batch(tokenizer, recs, prefix_len=c.prefix_len)
    pt, pm, tm, st = (jnp.asarray(x) for x in (batch.prefix_tokens, batch.prefix_mask,
                                               batch.table_mask, batch.suffix_tokens))
    res = opt(params, pt, pm, tm, st, jax.random.fold_in(jax.random.key(c.seed), bi))
    n_ins = len(layout.inserting)
    off_idx = jnp.zeros((len(recs), n_ins, c.dmlr.num_retrieved), jnp.int32)
    off_on = jnp.zeros((len(recs), n_ins, c.dmlr.num_retrieved), bool)
    think0 = dmlr.initial_think(model.embed_tokens[...], pt, pm, tm, c.dmlr.num_think_tokens)
    outs = {"plain": dec(params, pt, pm, st, None, None, None),
            "init": dec(params, pt, pm, st, think0, off_idx, off_on),
            "dmlr": dec(params, pt, pm, st, res.best_think, res.best_retrieved_idx,
                        res.best_retrieved_on)}
    for name, out in outs.items():
      texts, mask, conf = _decode_texts(tokenizer, out)
      correct[name] += [tasks.accuracy_reward(t, r) for t, r in zip(texts, recs)]
      answer_conf[name] += list(conf.sum(1) / np.maximum(mask.sum(1), 1))
    r0 += np.asarray(res.initial_reward).tolist()
    rbest += np.asarray(res.best_reward).tolist()
    step_rewards.append(np.asarray(res.rewards))
    new_best.append(np.asarray(res.new_best))
    if bar is not None:
      bar.update(1)
    else:
      log(f"batch {bi + 1}/{len(batches)}: reward {np.mean(r0):.3f} -> {np.mean(rbest):.3f}")
  if bar is not None:
    bar.close()
  rewards = np.concatenate(step_rewards, axis=1)  # [steps, N]
  best_so_far = np.maximum.accumulate(np.concatenate([np.asarray(r0)[None], rewards]), axis=0)
  sigmas = np.asarray(dmlr.sigma_at(np.arange(c.dmlr.num_steps), sigma=c.dmlr.sigma,
                                    sigma_decay=c.dmlr.sigma_decay))
  for s in range(c.dmlr.num_steps):
    writer.write({"phase": "dmlr", "step": s + 1, "reward_mean": float(rewards[s].mean()),
                  "best_reward_mean": float(best_so_far[s + 1].mean()), "sigma": float(sigmas[s]),
                  "new_best_frac": float(np.concatenate(new_best, axis=1)[s].mean())})
  summary: dict[str, Any] = {"method": "dmlr", "eval_split": "test", "eval_size": c.num_problems,
                             "num_steps": c.dmlr.num_steps,
                             "num_think_tokens": c.dmlr.num_think_tokens}
  for name in correct:
    stats = train.accuracy_stats(correct[name])
    summary[f"{name}_accuracy"] = stats["accuracy"]
    summary[f"{name}_accuracy_stderr"] = stats["accuracy_stderr"]
    summary[f"{name}_answer_confidence"] = float(np.mean(answer_conf[name]))
  summary["initial_reward"] = float(np.mean(r0))
  summary["dmlr_reward"] = float(np.mean(rbest))
  summary["baseline_accuracy"] = summary["plain_accuracy"]  # no latent optimisation
  summary["wall_s"] = round(time.time() - start, 1)
  for name in correct:
    writer.write({"phase": "eval", "policy": name, "step": c.dmlr.num_steps,
                  "accuracy": summary[f"{name}_accuracy"],
                  "answer_confidence": summary[f"{name}_answer_confidence"]})
  writer.close()
  (workdir / "summary.json").write_text(json.dumps(summary, indent=2))
  _plot(best_so_far, rewards, summary, workdir / "curves.png")
  log(format_table(summary))
  return summary


def format_table(s: dict[str, Any]) -> str:
  rows = [("plain prompt (baseline)", "plain", "-"), ("think tokens T_0", "init",
                                                      f"{s['initial_reward']:.3f}"),
          ("DMLR best T", "dmlr", f"{s['dmlr_reward']:.3f}")]
  lines = [f"DMLR on {s['eval_size']} held-out problems ({s['num_steps']} ES steps, "
           f"{s['num_think_tokens']} think tokens)",
           f"{'variant':<26}{'accuracy':>18}{'answer conf':>13}{'reward R':>10}"]
  for label, key, reward in rows:
    acc = f"{s[key + '_accuracy']:.3f} +- {s[key + '_accuracy_stderr']:.3f}"
    lines.append(f"{label:<26}{acc:>18}{s[key + '_answer_confidence']:>13.3f}{reward:>10}")
  return "\n".join(lines)


def _plot(best_so_far: np.ndarray, rewards: np.ndarray, summary: dict[str, Any], path) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  steps = np.arange(best_so_far.shape[0])
  axes[0].plot(steps, best_so_far.mean(1), label="best reward so far")
  axes[0].plot(steps[1:], rewards.mean(1), "--", label="reward of T~ at step")
  axes[0].set(xlabel="ES step", ylabel="confidence reward R", title="test-time optimisation")
  axes[0].legend(fontsize=8)
  names = ["plain", "init", "dmlr"]
  axes[1].bar(names, [summary[f"{n}_accuracy"] for n in names],
              yerr=[summary[f"{n}_accuracy_stderr"] for n in names], capsize=4)
  axes[1].set(ylabel="greedy accuracy", title="held-out accuracy")
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)
