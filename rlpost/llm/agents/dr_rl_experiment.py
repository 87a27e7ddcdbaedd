"""The DR-RL experiment: learn per-layer attention ranks for the shipped SFT policy.

Used by experiments/dr_rl.py. The rank policy is trained with REINFORCE on teacher-forced
synthetic TabMWP train problems (prompt + reference solution), with fidelity computed on the real
activations of those sequences; it is evaluated greedily on held-out test problems (level 1,
sum/difference, "rows", unique). Reported beside it: the full-rank model (the baseline) and every
fixed uniform rank. Perplexity is exp(token-mean NLL) of the reference target tokens.
"""
from __future__ import annotations

import json
import pathlib
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rlpost.llm.agents import dr_rl

_INT_FIELDS = ("seed", "train_size", "eval_size", "seq_len", "steps", "batch_size",
               "eval_batch_size", "r_min", "r_step", "policy_hidden")


def validate(c) -> None:
  """Raises ValueError naming the bad config field."""
  for name in _INT_FIELDS:
    v = c[name]
    lowest = 0 if name == "seed" else 1
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lowest:
      raise ValueError(f"config.{name} must be an int >= {lowest}, got {v!r}")
  for name in ("learning_rate", "epsilon_start"):
    if not isinstance(c[name], (int, float)) or not c[name] >= 0:
      raise ValueError(f"config.{name} must be a non-negative number, got {c[name]!r}")
  if not 0 < c.epsilon_decay <= 1:
    raise ValueError(f"config.epsilon_decay must be in (0, 1], got {c.epsilon_decay!r}")
  for name in ("alpha", "beta", "gamma"):
    if not isinstance(c.reward[name], (int, float)):
      raise ValueError(f"config.reward.{name} must be a number, got {c.reward[name]!r}")
  bad = [m for m in c.matrices if m not in dr_rl.MATRICES]
  if bad or not c.matrices:
    raise ValueError(f"config.matrices must be a non-empty subset of {dr_rl.MATRICES}, got "
                     f"{tuple(c.matrices)!r}")
  if c.safety_threshold is not None and not c.safety_threshold >= 0:
    raise ValueError(f"config.safety_threshold must be None or >= 0, got {c.safety_threshold!r}")
  if c.eval_size % c.eval_batch_size:
    raise ValueError(f"config.eval_size ({c.eval_size}) must be a multiple of "
                     f"config.eval_batch_size ({c.eval_batch_size})")
  if not pathlib.Path(c.checkpoint, "config.json").exists():
    raise ValueError(f"config.checkpoint {c.checkpoint!r} has no config.json")


def _encode(tokenizer, records, seq_len: int):
  from rlpost.llm import tasks  # pylint: disable=g-import-not-at-top
  from rlpost.llm.sampler import left_pad  # pylint: disable=g-import-not-at-top
  seqs, loss = [], []
  for r in records:
    p, t = tasks.encode_example(tokenizer, r)
    if len(p) + len(t) > seq_len:
      raise ValueError(f"record {r.pid!r} has {len(p) + len(t)} tokens > config.seq_len="
                       f"{seq_len}")
    seqs.append(p + t)
    loss.append([0] * len(p) + [1] * len(t))
  toks, mask = left_pad(seqs, length=seq_len)
  lmask, _ = left_pad(loss, length=seq_len)
  return toks, mask, lmask


def run_experiment(config, workdir: str | pathlib.Path, *, progress: bool = True,
                   log: Callable[[str], None] = print) -> dict[str, Any]:
  """Trains the rank policy, evaluates it against full and fixed ranks; writes the artefacts."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from rlpost.llm import tasks  # pylint: disable=g-import-not-at-top
  from rlpost.llm import train  # pylint: disable=g-import-not-at-top
  from rlpost.llm.hf import load_hf_checkpoint  # pylint: disable=g-import-not-at-top
  validate(config)
  c = config
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  start = time.time()
  model, mcfg, tokenizer = load_hf_checkpoint(c.checkpoint)
  if tokenizer is None:
    tokenizer = tasks.load_tokenizer()
  ranks = dr_rl.rank_actions(mcfg.resolved_head_dim, r_min=c.r_min, r_step=c.r_step)
  matrices = tuple(c.matrices)
  svds = dr_rl.layer_svds(model, matrices=matrices)
  graphdef, params = nnx.split(model)
  weights = dr_rl.RewardWeights(alpha=float(c.reward.alpha), beta=float(c.reward.beta),
                                gamma=float(c.reward.gamma))
  kw = dict(ranks=ranks, weights=weights, safety_threshold=c.safety_threshold, matrices=matrices)
  key = jax.random.key(c.seed)
  policy = dr_rl.init_policy(jax.random.fold_in(key, 1), dr_rl.num_features(mcfg, len(ranks)),
                             len(ranks), hidden=c.policy_hidden)
  optimizer = optax.adam(c.learning_rate)
  opt_state = optimizer.init(policy)

  @jax.jit
  def train_step(policy, opt_state, step_key, epsilon, toks, mask):
    out = dr_rl.rollout(nnx.merge(graphdef, params), svds, policy, toks, mask, step_key,
                        epsilon=epsilon, **kw)
    loss, grads = jax.value_and_grad(dr_rl.reinforce_loss)(
        policy, out["features"], out["safe"], out["actions"], out["rewards"],
        baseline=c.baseline)
    updates, opt_state = optimizer.update(grads, opt_state, policy)
    metrics = {"loss": loss, "reward_mean": out["rewards"].mean(),
               "fidelity_mean": out["fidelity"].mean(), "flops_frac": out["flops_frac"].mean(),
               "tail_mean": out["tail"].mean(), "rank_mean": out["ranks"].mean()}
    return optax.apply_updates(policy, updates), opt_state, metrics

  def make_eval(forced: bool):
    @jax.jit
    def evaluate(policy, toks, mask, lmask, action):
      m = nnx.merge(graphdef, params)
      out = dr_rl.rollout(m, svds, policy, toks, mask, jax.random.key(0), greedy=True,
                          forced_action=action if forced else None, **kw)
      logits = m.hidden_to_logits(out["hidden"][:, :-1])
      logp = jnp.take_along_axis(jax.nn.log_softmax(logits, -1), toks[:, 1:, None], -1)[..., 0]
      w = lmask[:, 1:].astype(jnp.float32)
      n_tok = mask.sum(-1)
      flops = jax.vmap(lambda n, r: dr_rl.model_flops(mcfg, n, r, matrices=matrices))(
          n_tok, out["ranks"])
      full = jax.vmap(lambda n: dr_rl.model_flops(
          mcfg, n, [mcfg.resolved_head_dim] * mcfg.num_hidden_layers, matrices=matrices))(n_tok)
      return {"nll_sum": -(logp * w).sum(), "tokens": w.sum(),
              "attn_flops_frac": out["flops_frac"].mean(), "model_flops": flops.sum(),
              "model_flops_full": full.sum(), "fidelity": out["fidelity"].mean(),
              "ranks": out["ranks"]}
    return evaluate

  eval_policy, eval_forced = make_eval(False), make_eval(True)
  train_records = tasks.generate_dataset(c.train_size, seed=c.seed, split="train", level=1,
                                         families=("sum", "difference"), style="rows")
  test_records = tasks.generate_dataset(c.eval_size, seed=c.seed, split="test", level=1,
                                        families=("sum", "difference"), style="rows", unique=True)
  tr_toks, tr_mask, _ = _encode(tokenizer, train_records, c.seq_len)
  te = _encode(tokenizer, test_records, c.seq_len)

  def run_eval(fn, action=None):
    acc: dict[str, Any] = {}
    ranks_seen = []
    for lo in range(0, c.eval_size, c.eval_batch_size):
      sl = slice(lo, lo + c.eval_batch_size)
      out = fn(policy, *(jnp.asarray(x[sl]) for x in te),
               jnp.zeros((mcfg.num_hidden_layers,), jnp.int32) if action is None else action)
      out = jax.device_get(out)
      ranks_seen.append(np.asarray(out.pop("ranks")))
      for k, v in out.items():
        acc[k] = acc.get(k, 0.0) + float(v) * (1 if k in ("nll_sum", "tokens", "model_flops",
                                                          "model_flops_full") else
                                               c.eval_batch_size / c.eval_size)
    ranks_all = np.concatenate(ranks_seen)
    return {"perplexity": float(np.exp(acc["nll_sum"] / acc["tokens"])),
            "attn_flops_frac": acc["attn_flops_frac"],
            "model_flops_frac": acc["model_flops"] / acc["model_flops_full"],
            "model_gflops_per_seq": acc["model_flops"] / c.eval_size / 1e9,
            "fidelity": acc["fidelity"],
            "mean_rank_per_layer": ranks_all.mean(0).round(3).tolist()}

  writer = train.MetricsWriter(workdir, tensorboard=False)
  writer.path.write_text("")
  bar = None
  if progress:
    from tqdm import tqdm  # pylint: disable=g-import-not-at-top
    bar = tqdm(total=c.steps, desc="dr_rl policy steps", leave=False)
  rng = np.random.default_rng(c.seed)
  curve = []
  for step in range(1, c.steps + 1):
    idx = rng.choice(c.train_size, size=c.batch_size, replace=c.batch_size > c.train_size)
    epsilon = c.epsilon_start * c.epsilon_decay ** (step - 1)
    policy, opt_state, metrics = train_step(policy, opt_state, jax.random.fold_in(key, step),
                                            jnp.float32(epsilon), jnp.asarray(tr_toks[idx]),
                                            jnp.asarray(tr_mask[idx]))
    metrics = train.to_floats(metrics)
    train.check_finite(metrics, phase="dr_rl", step=step)
    record = {"phase": "train", "step": step, "epsilon": epsilon, **metrics}
    writer.write(record)
    curve.append(record)
    if bar is not None:
      bar.update(1)
      bar.set_postfix(reward=f"{metrics['reward_mean']:.3f}", rank=f"{metrics['rank_mean']:.1f}")
    elif step % max(1, c.steps // 10) == 0:
      log(f"step {step}/{c.steps}: reward {metrics['reward_mean']:.4f} rank "
          f"{metrics['rank_mean']:.2f}")
  if bar is not None:
    bar.close()
  learned = run_eval(eval_policy)
  fixed = {}
  for a, r in enumerate(ranks):
    fixed[int(r)] = run_eval(eval_forced, jnp.full((mcfg.num_hidden_layers,), a, jnp.int32))
  full = fixed[int(ranks[-1])]
  for r, res in fixed.items():
    writer.write({"phase": "eval", "policy": f"fixed_rank_{r}", "rank": r, **{
        k: v for k, v in res.items() if k != "mean_rank_per_layer"}})
  writer.write({"phase": "eval", "policy": "dr_rl", **{
      k: v for k, v in learned.items() if k != "mean_rank_per_layer"}})
  writer.close()
  summary = {
      "method": "dr_rl", "eval_split": "test", "eval_size": c.eval_size, "steps": c.steps,
      "matrices": list(matrices), "ranks": list(ranks),
      "reward_weights": {"alpha": weights.alpha, "beta": weights.beta, "gamma": weights.gamma},
      "dr_rl_perplexity": learned["perplexity"],
      "full_rank_perplexity": full["perplexity"],
      "dr_rl_attn_flops_frac": learned["attn_flops_frac"],
      "dr_rl_model_flops_frac": learned["model_flops_frac"],
      "dr_rl_model_gflops_per_seq": learned["model_gflops_per_seq"],
      "full_rank_model_gflops_per_seq": full["model_gflops_per_seq"],
      "dr_rl_mean_rank_per_layer": learned["mean_rank_per_layer"],
      "dr_rl_fidelity": learned["fidelity"],
      "fixed_ranks": {str(r): {k: v for k, v in res.items() if k != "mean_rank_per_layer"}
                      for r, res in fixed.items()},
      "wall_s": round(time.time() - start, 1),
  }
  (workdir / "summary.json").write_text(json.dumps(summary, indent=2))
  _plot(curve, fixed, learned, workdir / "curves.png")
  log(format_table(summary))
  return summary


def format_table(s: dict[str, Any]) -> str:
  lines = [f"DR-RL on {s['eval_size']} held-out problems ({s['steps']} policy steps, factorised "
           f"{'/'.join(s['matrices'])})",
           f"{'ranks':<22}{'perplexity':>12}{'attn FLOPs':>12}{'model FLOPs':>13}"]
  lines.append(f"{'DR-RL policy':<22}{s['dr_rl_perplexity']:>12.4f}"
               f"{s['dr_rl_attn_flops_frac']:>12.3f}{s['dr_rl_model_flops_frac']:>13.3f}")
  for r, res in s["fixed_ranks"].items():
    label = f"fixed rank {r}" + (" (full)" if int(r) == s["ranks"][-1] else "")
    lines.append(f"{label:<22}{res['perplexity']:>12.4f}{res['attn_flops_frac']:>12.3f}"
                 f"{res['model_flops_frac']:>13.3f}")
  lines.append(f"DR-RL mean rank per layer: {s['dr_rl_mean_rank_per_layer']}")
  return "\n".join(lines)


def _plot(curve, fixed, learned, path) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  steps = [r["step"] for r in curve]
  axes[0].plot(steps, [r["reward_mean"] for r in curve], label="reward")
  axes[0].plot(steps, [r["fidelity_mean"] for r in curve], "--", label="fidelity")
  axes[0].set(xlabel="policy step", title="DR-RL training")
  ax2 = axes[0].twinx()
  ax2.plot(steps, [r["rank_mean"] for r in curve], ":", color="gray", label="mean rank")
  ax2.set_ylabel("mean rank")
  axes[0].legend(fontsize=8)
  xs = [res["attn_flops_frac"] for res in fixed.values()]
  ys = [res["perplexity"] for res in fixed.values()]
  axes[1].plot(xs, ys, "o-", label="fixed uniform rank")
  axes[1].plot([learned["attn_flops_frac"]], [learned["perplexity"]], "r*", markersize=12,
               label="DR-RL policy")
  axes[1].set(xlabel="attention FLOPs / full rank", ylabel="perplexity (held-out targets)",
              title="perplexity vs FLOPs")
  axes[1].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)
