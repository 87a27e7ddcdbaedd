"""The Retroformer experiment behind experiments/retroformer.py.

1. Actor SFT (cached): a Flax LLM (by default fine-tuned from the shipped SFT policy) learns the
   multi-attempt task format of `rlpost.llm.agents.retroformer`: follow the operation a
   reflection names; without a reflection, guess an operation (uniformly random targets), so it
   never learns the environment's hidden topic -> operation rule. Then it is frozen.
2. First attempts (greedy, no reflection) on training and held-out problems; the failures are the
   trials the retrospective model reflects on.
3. Retrospective model (a second small LLM, initialised from `retro.init_dir`, which is also the
   frozen KL reference): per step, `retro.batch_failures` failed trials x `retro.group_size`
   sampled reflections; the actor retries greedily with the reflection; rating = G_2 - G_1;
   REINFORCE with leave-one-out baseline + beta KL (see retroformer.py).
4. Held-out evaluation of the retry after each failed first attempt, with: no reflection (the
   actor resamples at temperature `eval.retry_temperature`; the greedy actor would only repeat
   itself), a uniformly random reflection, the untrained retrospective model (frozen, Reflexion-
   like), the trained one (Retroformer; argmax reflection), and the oracle hint (an upper bound).
   Headline: success within two attempts, Retroformer vs the no-reflection retry.
"""
from __future__ import annotations

import json
import pathlib
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from rlpost.llm.agents import common
from rlpost.llm.agents import retroformer as rf

_RETRY_NAMES = ("no_reflection", "random_reflection", "frozen_retro", "retroformer", "oracle_hint")


def validate(c) -> None:
  """Raises ValueError naming the bad config field."""
  for name in ("seed", "rule_seed"):
    common.positive_int(c[name], name, allow_zero=True)
  a, r = c.actor, c.retro
  common.positive_int(a.steps, "actor.steps", allow_zero=True)
  common.positive_int(a.batch_size, "actor.batch_size")
  common.positive_int(a.prompt_len, "actor.prompt_len")
  common.positive_int(a.max_new_tokens, "actor.max_new_tokens")
  common.positive_int(a.pool_size, "actor.pool_size")
  common.positive_float(a.learning_rate, "actor.learning_rate")
  for name in ("hint_prob", "previous_prob"):
    if not 0.0 <= a[name] <= 1.0:
      raise ValueError(f"config.actor.{name} must be in [0, 1], got {a[name]!r}")
  common.positive_int(r.steps, "retro.steps", allow_zero=True)
  common.positive_int(r.batch_failures, "retro.batch_failures")
  common.positive_int(r.group_size, "retro.group_size")
  common.positive_int(r.prompt_len, "retro.prompt_len")
  common.positive_int(r.train_size, "retro.train_size")
  common.positive_float(r.learning_rate, "retro.learning_rate")
  common.positive_float(r.kl_coef, "retro.kl_coef", allow_zero=True)
  common.positive_float(r.temperature, "retro.temperature")
  if r.group_size < 2:
    raise ValueError(f"config.retro.group_size must be >= 2 (leave-one-out baseline), got "
                     f"{r.group_size}")
  common.positive_int(c.eval.size, "eval.size")
  common.positive_float(c.eval.retry_temperature, "eval.retry_temperature", allow_zero=True)
  common.positive_int(c.solve_batch_size, "solve_batch_size")


def _problems(c, split: str, n: int, start: int = 0):
  return [rf.sample_problem(seed=c.seed, split=split, index=start + i, rule_seed=c.rule_seed)
          for i in range(n)]


def _actor_batch_fn(c, pool):
  a = c.actor

  def batch_fn(step: int):
    rng = np.random.default_rng([c.seed, 29, step])
    ps, ts = [], []
    for i in rng.integers(len(pool), size=a.batch_size):
      prob = pool[int(i)]
      op = rf.OPS[int(rng.integers(len(rf.OPS)))]
      hint = rf.HINTS[op] if rng.random() < a.hint_prob else None
      prev = str(int(rng.integers(0, 19))) if rng.random() < a.previous_prob else None
      ps.append(rf.actor_prompt(prob, previous=prev, reflection=hint))
      ts.append(rf.actor_target(prob, op))
    return ps, ts

  return batch_fn


def plot(records, path, title: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, 3, figsize=(15, 4))
  rows = [r for r in records if r.get("phase") == "retro"]
  steps = [r["step"] for r in rows]
  axes[0].plot(steps, [r["rating_mean"] for r in rows], label="mean rating (G2 - G1)")
  axes[0].set(xlabel="retro step", title="reflection reward")
  axes[1].plot(steps, [r["kl"] for r in rows], label="KL to init")
  axes[1].plot(steps, [r["entropy"] for r in rows], label="entropy over hints")
  axes[1].set(xlabel="retro step", title="KL / entropy")
  evals = [r for r in records if r.get("phase") == "eval"]
  names = [r["retry"] for r in evals]
  axes[2].bar(range(len(evals)), [r["two_attempt_success"] for r in evals])
  axes[2].axhline(evals[0]["first_attempt_success"] if evals else 0.0, color="k", ls="--",
                  label="first attempt")
  axes[2].set_xticks(range(len(names)), names, rotation=20, fontsize=8)
  axes[2].set(title="held-out success within 2 attempts")
  for ax in axes:
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=8)
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)


def format_table(summary) -> str:
  lines = [f"{'retry after a failed attempt':<30} success within 2 attempts "
           f"(n={summary['eval_size']}"
           f"; first attempt {100 * summary['first_attempt_success']:.1f}%)  retry success on "
           f"{summary['eval_failures']} failures"]
  for name in _RETRY_NAMES:
    s = summary["results"][name]
    lines.append(f"{name:<30} {100 * s['two_attempt_success']:6.2f}   "
                 f"{100 * s['retry_success']:6.2f}")
  lines.append(f"Retroformer - no-reflection retry: {100 * summary['lift']:+.2f} points; "
               f"wall {summary['wall_s']:.0f} s")
  return "\n".join(lines)


def run(config, workdir, *, progress: bool = True, log: Callable[[str], None] = print):
  """Runs the experiment; writes metrics.jsonl, curves.png, summary.json; returns the summary."""
  import optax  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from rlpost.llm import tasks  # pylint: disable=g-import-not-at-top
  from rlpost.llm.hf import load_hf_checkpoint  # pylint: disable=g-import-not-at-top
  from rlpost.llm.model import init_model  # pylint: disable=g-import-not-at-top
  from rlpost.llm.config import ModelConfig  # pylint: disable=g-import-not-at-top
  from rlpost.llm.sampler import Sampler  # pylint: disable=g-import-not-at-top
  from rlpost.llm.train import MetricsWriter, check_finite  # pylint: disable=g-import-not-at-top
  t_begin = time.perf_counter()
  c = config
  validate(c)
  tokenizer = tasks.load_tokenizer(None)
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / "metrics.jsonl").unlink(missing_ok=True)
  writer = MetricsWriter(workdir, tensorboard=False)
  a, r = c.actor, c.retro
  pool = _problems(c, "train", a.pool_size)
  retro_pool = _problems(c, "train", r.train_size, start=50_000)
  eval_set = _problems(c, "test", c.eval.size)
  # 1. Actor SFT (cached).
  spec = {"seed": c.seed, "rule_seed": c.rule_seed, "actor": a.to_dict()}
  spec["actor"].pop("cache_dir", None)
  train_fn = lambda: common.train_text_solver(
      tokenizer=tokenizer, model_spec=a.model.to_dict(), batch_fn=_actor_batch_fn(c, pool),
      steps=a.steps, learning_rate=a.learning_rate, seed=c.seed, prompt_len=a.prompt_len,
      response_len=a.max_new_tokens, init_dir=a.init_dir, progress=progress, desc="actor SFT")
  actor, _, actor_info = common.cached_solver(a.cache_dir or str(workdir / "actor_cache"), spec,
                                              train_fn, log=log)
  writer.write({"phase": "actor", **{k: v for k, v in actor_info.items() if k != "spec"}})
  sampler = Sampler(actor, min_prompt_bucket=a.prompt_len)
  actor_params = nnx.state(actor)
  bs = c.solve_batch_size

  def attempt(problems, previous=None, reflections=None, temperature=0.0, seed=0):
    texts = [rf.actor_prompt(p, previous=None if previous is None else previous[i],
                             reflection=None if reflections is None else reflections[i])
             for i, p in enumerate(problems)]
    outs = common.generate_texts(sampler, actor_params, tokenizer, texts,
                                 prompt_len=a.prompt_len, max_new_tokens=a.max_new_tokens,
                                 batch_size=bs, temperature=temperature, seed=seed)
    return outs, common.correctness(outs, [p.record for p in problems])

  # 2. First attempts.
  train_out, train_g1 = attempt(retro_pool)
  eval_out, eval_g1 = attempt(eval_set)
  fails = [i for i in range(len(retro_pool)) if train_g1[i] == 0]
  eval_fails = [i for i in range(len(eval_set)) if eval_g1[i] == 0]
  writer.write({"phase": "first_attempt", "train_success": float(train_g1.mean()),
                "eval_success": float(eval_g1.mean()), "train_failures": len(fails),
                "eval_failures": len(eval_fails)})
  if not fails:
    raise ValueError("the actor solved every training problem at the first attempt: nothing to "
                     "reflect on (lower config.actor.steps or change config.rule_seed)")
  # 3. The retrospective model.
  if r.init_dir:
    retro_model, _, _ = load_hf_checkpoint(r.init_dir, load_tokenizer=False)
  else:
    m = dict(r.model.to_dict())
    m["vocab_size"] = m.get("vocab_size") or len(tokenizer)
    retro_model = init_model(ModelConfig(**m, tie_word_embeddings=True), seed=c.seed + 1)
  graphdef, ref_params = nnx.split(retro_model)
  params = jax.tree.map(jnp.copy, ref_params)
  hints = [rf.HINTS[o] for o in rf.OPS]
  optimizer = optax.adam(r.learning_rate)
  opt_state = optimizer.init(params)
  logp_fn, step_fn = rf.make_reflection_fns(graphdef, optimizer, num_hints=len(hints),
                                            group_size=r.group_size, kl_coef=r.kl_coef,
                                            temperature=r.temperature)

  def retro_batch(idx, outs, problems):
    prompts = [rf.reflection_prompt(problems[i], outs[i], 0.0) for i in idx]
    return {k: jnp.asarray(v) for k, v in rf.encode_reflection_batch(
        tokenizer, prompts, hints, prompt_len=r.prompt_len).items()}

  key = jax.random.key(c.seed + 3)
  pbar = common.progress_bar(r.steps, "retroformer", progress)
  order = np.random.default_rng([c.seed, 31]).permutation(np.resize(fails, r.steps *
                                                                     r.batch_failures))
  for step in range(r.steps):
    idx = order[step * r.batch_failures:(step + 1) * r.batch_failures].tolist()
    batch = retro_batch(idx, train_out, retro_pool)
    logp_all = logp_fn(params, batch)
    ref_logp_all = logp_fn(ref_params, batch)
    actions = np.asarray(rf.sample_reflections(jax.random.fold_in(key, step), logp_all,
                                               group_size=r.group_size))
    probs = [retro_pool[i] for i in idx for _ in range(r.group_size)]
    prev = [rf.short_answer(train_out[i]) for i in idx for _ in range(r.group_size)]
    _, g2 = attempt(probs, previous=prev, reflections=[hints[k] for k in actions])
    g1 = np.asarray([train_g1[i] for i in idx for _ in range(r.group_size)])
    ratings = rf.reflection_rating(g1, g2)
    params, opt_state, met = step_fn(params, opt_state, batch, ref_logp_all,
                                      jnp.asarray(actions), ratings)
    rec = {k: float(v) for k, v in jax.device_get(met).items()}
    rec.update(phase="retro", step=step + 1, rating_mean=float(np.mean(ratings)))
    check_finite(rec, phase="retro", step=step + 1)
    writer.write(rec)
    if pbar is not None:
      pbar.update(1)
      pbar.set_postfix(rating=f"{rec['rating_mean']:.2f}", kl=f"{rec['kl']:.3f}")
  if pbar is not None:
    pbar.close()
  # 4. Held-out retries after failed first attempts.
  probs = [eval_set[i] for i in eval_fails]
  prev = [rf.short_answer(eval_out[i]) for i in eval_fails]
  results = {}
  n_fail = len(probs)
  for name in _RETRY_NAMES:
    if not probs:
      g2 = np.zeros((0,), np.float32)
    elif name == "no_reflection":
      _, g2 = attempt(probs, previous=prev, temperature=c.eval.retry_temperature, seed=c.seed + 5)
    else:
      if name == "random_reflection":
        ks = np.random.default_rng([c.seed, 37]).integers(len(hints), size=n_fail)
      elif name == "oracle_hint":
        ks = np.asarray([rf.OPS.index(p.op) for p in probs])
      else:
        p_use = ref_params if name == "frozen_retro" else params
        ks = []
        for s in range(0, n_fail, r.batch_failures):
          idx = list(range(s, min(s + r.batch_failures, n_fail)))
          idx += [idx[-1]] * (r.batch_failures - len(idx))  # fixed shapes
          lp = logp_fn(p_use, retro_batch([eval_fails[i] for i in idx], eval_out, eval_set))
          ks.extend(np.asarray(jnp.argmax(lp, axis=-1))[:min(r.batch_failures, n_fail - s)])
        ks = np.asarray(ks)
      _, g2 = attempt(probs, previous=prev, reflections=[hints[k] for k in ks])
    retry = float(g2.mean()) if n_fail else 0.0
    two = float((eval_g1.sum() + g2.sum()) / len(eval_set))
    results[name] = {"retry_success": retry, "two_attempt_success": two}
    writer.write({"phase": "eval", "retry": name, "retry_success": retry,
                  "two_attempt_success": two, "first_attempt_success": float(eval_g1.mean()),
                  "failures": n_fail})
  summary = {
      "headline": "retroformer_two_attempt_success",
      "retroformer_two_attempt_success": results["retroformer"]["two_attempt_success"],
      "baseline": "no_reflection_two_attempt_success",
      "no_reflection_two_attempt_success": results["no_reflection"]["two_attempt_success"],
      "lift": (results["retroformer"]["two_attempt_success"] -
               results["no_reflection"]["two_attempt_success"]),
      "first_attempt_success": float(eval_g1.mean()), "eval_size": len(eval_set),
      "eval_failures": n_fail, "train_failures": len(fails), "results": results,
      "actor": {k: v for k, v in actor_info.items() if k != "spec"},
      "retro_steps": r.steps, "wall_s": time.perf_counter() - t_begin,
  }
  writer.close()
  plot(writer.records(), workdir / "curves.png",
       title=f"Retroformer: 2-attempt success "
             f"{100 * summary['retroformer_two_attempt_success']:.1f}"
             f"% vs no-reflection retry {100 * summary['no_reflection_two_attempt_success']:.1f}%")
  common.write_summary(workdir, summary)
  (workdir / "config.json").write_text(json.dumps(c.to_dict(), indent=2, default=str))
  log(format_table(summary))
  return summary
