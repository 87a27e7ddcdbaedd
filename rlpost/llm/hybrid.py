"""SFT-RL hybrids on the LLM policy: HPT, DYPO and CoPG trainers, and the hybrids experiment.

Every hybrid step samples G completions for P prompts with `rlpost.llm.rl.RLTrainer.rollout`
(composition; the RL loop itself is not modified), scores them with the task's verifiable reward,
and applies one jitted, donated update whose loss is built from the rlpost.core pure functions:

  * HPT (Hybrid Post-Training; "Towards a Unified View of Large Language Model Post-Training",
    2025, arXiv 2509.04419, eq. f(P) = 1[#correct > gate]): per question, pure SFT on one
    demonstration when #correct <= switch_gate, pure RL on its rollouts otherwise
    (`core.hpt_route`, `core.hpt_loss`). RL part = UPGE with pi_ref = pi_old, advantage
    R - mean_group (no std), no clip (`loss_remove_clip`).
  * DYPO ("Bridging SFT and RL: Dynamic Policy Optimization for Robust Reasoning", 2026,
    arXiv 2604.08926, L = E_q[I_H gamma L_SFT + I_M (alpha L_GRPO + (1 - alpha) L_GAL)]):
    all-correct groups are dropped, all-wrong groups get the sequence NLL of a demonstration from
    one of several teachers (here the synthetic records' solution styles, drawn uniformly per
    question), mixed groups get GRPO plus the Group Alignment Loss against the start policy
    (`core.dypo_route`, `core.group_alignment_loss`, `core.dypo_loss`).
  * CoPG ("Contrastive Policy Gradient", EMNLP 2024, arXiv 2406.19185, l = 1/(k-1)
    sum_{i<j} (R^pi_beta(y_i) - R^pi_beta(y_j))^2 with R^pi_beta = R - beta log pi/pi_ref): the
    k-sample group form against the reference (start) policy (`core.copg_group_loss`).

Deviations (also in BUILD_NOTES): one update per rollout batch (on-policy, so old = sg(current));
HPT's RL normaliser sum / L_max is applied per completion (divided by L_max * B, i.e. verl's
micro-batch of one sequence) so the RL and SFT terms have comparable scales in one batch, and its
0.001 entropy bonus is omitted; DYPO/CoPG sequence log-probs are sums (DPO convention); DYPO's
teachers are the synthetic solution styles that fit the response budget (default rows, terse).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import pathlib
import time
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from rlpost import core
from rlpost.llm import rl as rl_lib
from rlpost.llm import sft as sft_lib
from rlpost.llm import train as train_lib
from rlpost.llm.rl import response_logp_entropy
from rlpost.llm.train import TrainState

HYBRIDS = ("hpt", "dypo", "copg")
METHODS = ("otr_sft", "sft") + HYBRIDS + ("grpo",)
BASELINES = {"otr_sft": "sft", "hpt": "grpo", "dypo": "grpo", "copg": "grpo", "sft": None,
             "grpo": None}


@dataclasses.dataclass(frozen=True)
class HybridConfig:
  """Knobs of the hybrid losses (paper defaults; errors name the `hybrid.<field>`).

  switch_gate, sft_coef: HPT (gate 0 = SFT only when no rollout is correct; coef 1.0).
  alpha, gal_beta, gamma, teachers: DYPO (alpha 0.5, beta_GAL 1, gamma 1; m teacher styles).
  copg_beta: CoPG's KL strength beta (not recovered from the paper; swept in BUILD_NOTES).
  demo_style: HPT's demonstration style (None = record.solution, the training style).
  """
  method: str = "hpt"
  switch_gate: int = 0
  sft_coef: float = 1.0
  alpha: float = 0.5
  gal_beta: float = 1.0
  gamma: float = 1.0
  copg_beta: float = 0.1
  teachers: tuple[str, ...] = ("rows", "terse")
  demo_style: Optional[str] = None

  def __post_init__(self):
    if self.method not in HYBRIDS:
      raise ValueError(f"hybrid.method must be one of {HYBRIDS}, got {self.method!r}")
    if isinstance(self.switch_gate, bool) or not isinstance(self.switch_gate, (int, np.integer)) \
        or self.switch_gate < 0:
      raise ValueError(f"hybrid.switch_gate must be an int >= 0, got {self.switch_gate!r}")
    if not 0.0 <= self.alpha <= 1.0:
      raise ValueError(f"hybrid.alpha must be in [0, 1], got {self.alpha!r}")
    for name in ("sft_coef", "gamma"):
      if not getattr(self, name) >= 0:
        raise ValueError(f"hybrid.{name} must be >= 0, got {getattr(self, name)!r}")
    for name in ("gal_beta", "copg_beta"):
      if not getattr(self, name) > 0:
        raise ValueError(f"hybrid.{name} must be > 0, got {getattr(self, name)!r}")
    if not self.teachers:
      raise ValueError("hybrid.teachers must name at least one solution style")


# --- the pure loss ---------------------------------------------------------------------------------


def hybrid_loss(params: Any, graphdef: nnx.GraphDef, batch: dict[str, jax.Array], *,
                cfg: HybridConfig, prompt_len: int) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Scalar loss of one hybrid step (pure in params) and its metrics.

  batch: tokens / attention_mask [B, prompt_len + R] (rollouts, B = P * G), mask [B, R],
  rewards / correct [P, G]; ref_seq_logp [P, G] (dypo, copg); demo_tokens /
  demo_attention_mask [P, prompt_len + R] and demo_mask [P, R] (hpt, dypo).
  """
  model = nnx.merge(graphdef, params)
  rewards = batch["rewards"].astype(jnp.float32)
  p, g = rewards.shape
  mask = batch["mask"].astype(jnp.float32)
  logp, _ = response_logp_entropy(model, batch["tokens"], batch["attention_mask"], prompt_len)
  if cfg.method == "copg":
    seq = core.sequence_logprob(logp, mask).reshape(p, g)
    per_group = core.copg_group_loss(seq, batch["ref_seq_logp"], rewards, beta=cfg.copg_beta)
    log_ratio = jax.lax.stop_gradient(seq - batch["ref_seq_logp"])
    return jnp.mean(per_group), {"seq_log_ratio_mean": jnp.mean(log_ratio)}
  demo_logp, _ = response_logp_entropy(model, batch["demo_tokens"], batch["demo_attention_mask"],
                                       prompt_len)
  demo_mask = batch["demo_mask"].astype(jnp.float32)
  correct = batch["correct"]
  old = jax.lax.stop_gradient(logp)
  if cfg.method == "hpt":
    adv = core.grpo_advantages(rewards, scale_by_std=False).reshape(-1, 1) * mask
    rl_pt, _ = core.upge_loss_per_token(logp, adv, mask, denominator="old", old_logp=old)
    use_sft = core.hpt_route(correct, switch_gate=cfg.switch_gate)
    return core.hpt_loss(rl_pt, mask, demo_logp, demo_mask, use_sft, group_size=g,
                         max_response_len=mask.shape[1] * mask.shape[0], sft_coef=cfg.sft_coef)
  # DYPO
  adv = core.grpo_advantages(rewards).reshape(-1, 1) * mask
  grpo_pt, _ = core.ppo_clip_loss_per_token(logp, old, adv, mask)
  seq = core.sequence_logprob(logp, mask).reshape(p, g)
  gal, n_pairs = core.group_alignment_loss(seq, batch["ref_seq_logp"], rewards, beta=cfg.gal_beta)
  regime = core.dypo_route(correct)
  loss, aux = core.dypo_loss(grpo_pt, mask, gal, demo_logp, demo_mask, regime, group_size=g,
                             alpha=cfg.alpha, gamma=cfg.gamma)
  return loss, {**aux, "gal_pairs": jnp.mean(n_pairs)}


def make_hybrid_update(graphdef: nnx.GraphDef, optimizer: optax.GradientTransformation,
                       cfg: HybridConfig, *, prompt_len: int):
  """Jitted `update(state, batch, data_pos) -> (state, metrics)`; the state is donated."""
  def loss_fn(params, batch):
    return hybrid_loss(params, graphdef, batch, cfg=cfg, prompt_len=prompt_len)

  @functools.partial(jax.jit, donate_argnums=0)
  def update(state: TrainState, batch: dict[str, jax.Array], data_pos):
    (loss, met), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"], batch)
    updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    new_state = {**state, "params": params, "opt_state": opt_state, "step": state["step"] + 1,
                 "data_pos": jnp.asarray(data_pos, jnp.int32)}
    return new_state, {**met, "loss": loss, "grad_norm": optax.global_norm(grads)}

  return update


# --- the trainer -----------------------------------------------------------------------------------


class HybridTrainer:
  """Rollout (via an internal `RLTrainer`) -> routing / demonstrations -> one hybrid update.

  Args: as `RLTrainer` (graphdef, params, tokenizer, rl_config, optimizer, pool, data_seed,
  prompt_len, reward_fn), plus `hybrid_config` and `ref_params` (the reference / start policy of
  GAL and CoPG; copied).
  """

  def __init__(self, *, graphdef, params, tokenizer, hybrid_config: HybridConfig,
               rl_config: rl_lib.RLConfig, optimizer, pool: Sequence[Any], data_seed: int,
               prompt_len: int, reward_fn: Callable[..., np.ndarray], ref_params: Any):
    self.cfg, self.tokenizer, self.pool = hybrid_config, tokenizer, pool
    self.rl_config, self.data_seed, self.prompt_len = rl_config, data_seed, prompt_len
    # The RL loop's rollout (sampler, data stream, rewards); grpo only fixes the sampling setup
    # (no dynamic sampling). Its own update is never called.
    self.rl = rl_lib.RLTrainer(
        graphdef=graphdef, params=params, tokenizer=tokenizer,
        objective=rl_lib.make_objective("grpo", {"kl_coef": 0.0},
                                        max_new_tokens=rl_config.max_new_tokens),
        rl_config=rl_config, optimizer=optimizer, pool=pool, data_seed=data_seed,
        prompt_len=prompt_len, reward_fn=reward_fn)
    self.ref_params = jax.tree.map(jnp.copy, ref_params)
    self.update = make_hybrid_update(graphdef, optimizer, hybrid_config, prompt_len=prompt_len)
    if hybrid_config.method == "dypo":
      self._check_styles(hybrid_config.teachers)
    elif hybrid_config.method == "hpt" and hybrid_config.demo_style is not None:
      self._check_styles((hybrid_config.demo_style,))

  def _check_styles(self, styles: Sequence[str]) -> None:
    r = self.pool[0]
    for s in styles:
      if s not in r.solutions:
        raise ValueError(f"hybrid teacher/demo style {s!r} is not a solution style of the task "
                         f"records; available: {sorted(r.solutions)}")

  @property
  def sampler(self):
    return self.rl.sampler

  @sampler.setter
  def sampler(self, value):
    self.rl.sampler = value

  def demo_styles(self, step: int, num_prompts: int) -> list[Optional[str]]:
    """Demonstration style per question: DYPO draws a teacher uniformly, seeded by (seed, step)."""
    if self.cfg.method == "dypo":
      rng = np.random.default_rng([self.data_seed, step])
      return [self.cfg.teachers[i] for i in rng.integers(len(self.cfg.teachers),
                                                        size=num_prompts)]
    return [self.cfg.demo_style] * num_prompts

  def demo_batch(self, prompt_ids: Sequence[int], step: int) -> dict[str, np.ndarray]:
    """demo_tokens / demo_attention_mask [P, prompt_len + R] and demo_mask [P, R]."""
    r_len = self.rl_config.max_new_tokens
    rows = []
    for i, style in zip(prompt_ids, self.demo_styles(step, len(prompt_ids))):
      try:
        rows.append(sft_lib.make_sft_batch(self.tokenizer, [self.pool[int(i)]],
                                           prompt_len=self.prompt_len, response_len=r_len,
                                           style=style))
      except ValueError as e:
        raise ValueError(f"hybrid demonstration (style {style!r}) does not fit "
                         f"rl.max_new_tokens={r_len}: {e}") from e
    cat = lambda k: np.concatenate([r[k] for r in rows])
    return {"demo_tokens": cat("tokens"), "demo_attention_mask": cat("attention_mask"),
            "demo_mask": cat("loss_mask")[:, self.prompt_len:]}

  def make_batch(self, groups: dict[str, Any], step: int) -> dict[str, jax.Array]:
    """The update's batch from rollout groups ([P, G, ...] arrays as `RLTrainer.rollout` returns)."""
    p, g = groups["rewards"].shape
    flat = lambda a: np.asarray(a).reshape((p * g,) + np.asarray(a).shape[2:])
    batch = {"tokens": flat(groups["tokens"]), "attention_mask": flat(groups["attention_mask"]),
             "mask": flat(groups["mask"]).astype(np.float32),
             "rewards": np.asarray(groups["rewards"], np.float32),
             "correct": np.asarray(groups["acc"], np.float32)}
    if self.cfg.method in ("dypo", "copg"):
      ref = self.rl.logprob_fn(self.ref_params, jnp.asarray(batch["tokens"]),
                               jnp.asarray(batch["attention_mask"]))
      batch["ref_seq_logp"] = core.sequence_logprob(ref, jnp.asarray(batch["mask"])).reshape(p, g)
    if self.cfg.method in ("hpt", "dypo"):
      batch.update(self.demo_batch(groups["prompt_ids"], step))
    return {k: jnp.asarray(v) for k, v in batch.items()}

  def train_on_groups(self, state: TrainState, groups: dict[str, Any],
                      data_pos: int) -> tuple[TrainState, dict[str, float]]:
    """One update on given rollout groups (tests craft groups to check the routing)."""
    batch = self.make_batch(groups, int(state["step"]))
    state, met = self.update(state, batch, data_pos)
    return state, {k: float(v) for k, v in jax.device_get(met).items()}

  def step(self, state: TrainState) -> tuple[TrainState, dict[str, float]]:
    """Rollout + one hybrid update; the old state is donated."""
    t0 = time.perf_counter()
    step = int(state["step"])
    groups, data_pos, _ = self.rl.rollout(state["params"], int(state["data_pos"]),
                                          train_lib.step_key(state))
    t1 = time.perf_counter()
    state, met = self.train_on_groups(state, groups, data_pos)
    met.update(step=step + 1, accuracy=float(np.mean(groups["acc"])),
               reward_mean=float(np.mean(groups["rewards"])),
               zero_spread_frac=float(np.mean(groups["acc"].max(1) == groups["acc"].min(1))),
               response_len_mean=float(np.mean(groups["lengths"])),
               time_rollout=t1 - t0, time_train=time.perf_counter() - t1)
    return state, met


# --- the experiment --------------------------------------------------------------------------------


_positive_int = train_lib._positive_int  # pylint: disable=protected-access  (same checks and messages)


def build_hybrids(config) -> dict[str, Any]:
  """Validates the hybrids config (errors name the field) and loads policy, task and eval set."""
  from rlpost.llm import tasks  # pylint: disable=g-import-not-at-top
  from rlpost.llm.hf import load_hf_checkpoint  # pylint: disable=g-import-not-at-top
  c = config
  if c.method not in METHODS:
    raise ValueError(f"config.method must be one of {METHODS}, got {c.method!r}")
  _positive_int(c.seed, "seed", allow_zero=True)
  prompt_len = _positive_int(c.prompt_len, "prompt_len")
  _positive_int(c.steps, "steps")
  _positive_int(c.eval_every, "eval_every", allow_zero=True)
  _positive_int(c.sft.batch_size, "sft.batch_size")
  _positive_int(c.eval.size, "eval.size")
  _positive_int(c.eval.batch_size, "eval.batch_size")
  _positive_int(c.task.train_size, "task.train_size")
  if c.eval.split not in ("dev", "test"):
    raise ValueError(f"config.eval.split must be 'dev' or 'test', got {c.eval.split!r}")
  for sec in ("sft", "rl"):
    if not c[sec].learning_rate > 0:
      raise ValueError(f"config.{sec}.learning_rate must be > 0, got {c[sec].learning_rate!r}")
  sft_lib.check_sft_loss("otr", otr_num_samples=c.sft.otr_num_samples,
                         otr_temperature=c.sft.otr_temperature,
                         otr_wrong_reward=c.sft.otr_wrong_reward)
  rl_config = rl_lib.RLConfig(batch_size=c.rl.batch_size, group_size=c.rl.group_size,
                              micro_batch_size=c.rl.batch_size, max_new_tokens=c.rl.max_new_tokens,
                              temperature=c.rl.temperature)
  h = dict(c.hybrid)
  h["teachers"] = tuple(h["teachers"])
  h["demo_style"] = h["demo_style"] or None
  hybrid_config = HybridConfig(method=c.method if c.method in HYBRIDS else "hpt", **h)
  ckpt = pathlib.Path(c.init_checkpoint)
  if not (ckpt / "config.json").is_file():
    raise FileNotFoundError(f"config.init_checkpoint={str(ckpt)!r} has no config.json (expected "
                            f"an HF checkpoint directory, e.g. rlpost/assets/sft)")
  model, model_config, _ = load_hf_checkpoint(ckpt, load_tokenizer=False)
  if prompt_len + rl_config.max_new_tokens > model_config.max_position_embeddings:
    raise ValueError(f"config.rl.max_new_tokens={rl_config.max_new_tokens} + prompt_len="
                     f"{prompt_len} exceeds max_position_embeddings="
                     f"{model_config.max_position_embeddings}")
  tokenizer = tasks.load_tokenizer(c.tokenizer_dir or None)
  t = c.task
  pool = tasks.generate_dataset(t.train_size, seed=t.seed, split="train", level=t.level,
                                families=tuple(t.families), style=t.style)
  eval_set = tasks.generate_dataset(c.eval.size, seed=t.seed, split=c.eval.split, level=t.level,
                                    families=tuple(t.families), style=t.style, unique=True)
  train_lib.encode_prompts(tokenizer, eval_set, max_len=prompt_len)  # fails early, naming a record
  graphdef, params = nnx.split(model)
  return dict(tokenizer=tokenizer, graphdef=graphdef, params=params, rl_config=rl_config,
              hybrid_config=hybrid_config, pool=pool, eval_set=eval_set,
              reward_fn=tasks.make_reward_fn())


def _make_runner(s: dict[str, Any], method: str):
  """(initial state, step function state -> (state, metrics)) of one method from the start."""
  c, graphdef, start = s["config"], s["graphdef"], s["params"]
  data_seed = c.seed + 1
  if method in ("sft", "otr_sft"):
    opt = train_lib.make_optimizer(learning_rate=c.sft.learning_rate)
    step_fn = sft_lib.make_sft_step(
        graphdef, opt, loss="otr" if method == "otr_sft" else "xent",
        otr_num_samples=c.sft.otr_num_samples, otr_temperature=c.sft.otr_temperature,
        otr_wrong_reward=c.sft.otr_wrong_reward, prompt_len=c.prompt_len)

    def sft_step(state):
      idx = train_lib.stream_indices(data_seed, len(s["pool"]), int(state["data_pos"]),
                                     c.sft.batch_size)
      batch = sft_lib.make_sft_batch(s["tokenizer"], [s["pool"][i] for i in idx],
                                     prompt_len=c.prompt_len,
                                     response_len=c.rl.max_new_tokens)
      state, met = step_fn(state, batch)
      return state, {**train_lib.to_floats(met), "step": int(state["step"])}

    return train_lib.init_train_state(start, opt, seed=data_seed), sft_step
  opt = train_lib.make_optimizer(learning_rate=c.rl.learning_rate,
                                 max_grad_norm=c.rl.max_grad_norm)
  common = dict(graphdef=graphdef, params=start, tokenizer=s["tokenizer"],
                rl_config=s["rl_config"], optimizer=opt, pool=s["pool"], data_seed=data_seed,
                prompt_len=c.prompt_len, reward_fn=s["reward_fn"], ref_params=start)
  if method == "grpo":
    objective = rl_lib.make_objective("grpo", dict(c.grpo_overrides),
                                      max_new_tokens=c.rl.max_new_tokens)
    trainer = rl_lib.RLTrainer(objective=objective, **common)
  else:
    trainer = HybridTrainer(hybrid_config=dataclasses.replace(s["hybrid_config"], method=method),
                            **common)
  trainer.sampler = s["sampler"]
  return train_lib.init_train_state(start, opt, seed=data_seed), trainer.step


def _eval(s, params, *, run: str, step: int) -> dict[str, Any]:
  c = s["config"]
  stats = train_lib.evaluate(s["sampler"], params, s["tokenizer"], s["eval_set"],
                             prompt_len=c.prompt_len, max_new_tokens=c.rl.max_new_tokens,
                             batch_size=c.eval.batch_size)
  return {"phase": "eval", "run": run, "step": step, **stats}


def plot_hybrid_curves(records: Sequence[dict[str, Any]], path, *, title: str = "") -> None:
  """curves.png: held-out accuracy, train accuracy / loss, and routing fractions vs step."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, 3, figsize=(15, 4))
  runs = list(dict.fromkeys(r["run"] for r in records if r.get("phase") == "train"))
  for run in runs:
    ev = [r for r in records if r.get("phase") == "eval" and r["run"] in (run, "start")]
    axes[0].errorbar([r["step"] for r in ev], [r["accuracy"] for r in ev],
                     yerr=[r["accuracy_stderr"] for r in ev], fmt="o-", capsize=3, label=run)
    tr = [r for r in records if r.get("phase") == "train" and r["run"] == run]
    key = "accuracy" if "accuracy" in tr[0] else "loss"
    axes[1].plot([r["step"] for r in tr], [r[key] for r in tr], label=f"{run} train {key}")
    for frac in ("sft_fraction", "frac_hard", "frac_mixed", "frac_easy", "zero_spread_frac"):
      if frac in tr[0]:
        axes[2].plot([r["step"] for r in tr], [r[frac] for r in tr], label=f"{run} {frac}")
  axes[0].set(xlabel="step", ylabel="held-out greedy accuracy", title="held-out accuracy")
  axes[1].set(xlabel="step", title="train accuracy (RL) / loss (SFT)")
  axes[2].set(xlabel="step", title="routing fractions")
  for ax in axes:
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=8)
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)


def format_hybrid_table(summary: dict[str, Any]) -> str:
  """The final table: start, method and baseline held-out accuracy."""
  rows = [("start (shipped SFT policy)", summary["start_accuracy"],
           summary["start_accuracy_stderr"]),
          (f"{summary['method']} ({summary['steps']} steps)", summary["final_accuracy"],
           summary["final_accuracy_stderr"])]
  if summary["baseline"]:
    rows.append((f"baseline {summary['baseline']} ({summary['steps']} steps)",
                 summary["baseline_accuracy"], summary["baseline_accuracy_stderr"]))
  lines = [f"{'policy':<34} accuracy on {summary['eval_split']} (n={summary['eval_size']}, "
           f"mean +- stderr)"]
  lines += [f"{n:<34} {100 * a:6.2f} +- {100 * e:4.2f}" for n, a, e in rows]
  if summary["baseline"]:
    lines.append(f"{summary['method']} - {summary['baseline']}: "
                 f"{summary['lift_vs_baseline_points']:+.2f} points; wall {summary['wall_s']:.0f} s")
  return "\n".join(lines)


def run_hybrids(config, workdir: str | os.PathLike, *, progress: bool = True,
                log: Callable[[str], None] = print) -> dict[str, Any]:
  """Trains `config.method` and its baseline from the shipped SFT policy; evaluates; reports.

  Both runs start from the same policy with the same data seed and step count. Writes
  metrics.jsonl (phase train / eval, `run` = method or baseline), curves.png and summary.json
  into workdir (overwritten; no resume). Config errors are raised before anything is written.
  """
  from rlpost.llm.sampler import Sampler  # pylint: disable=g-import-not-at-top
  t_begin = time.perf_counter()
  s = build_hybrids(config)
  s["config"] = c = config
  s["sampler"] = Sampler(nnx.merge(s["graphdef"], s["params"]))
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / "metrics.jsonl").unlink(missing_ok=True)
  writer = train_lib.MetricsWriter(workdir, tensorboard=False)
  baseline = BASELINES[c.method] if c.baseline else None
  runs = [c.method] + ([baseline] if baseline else [])
  pbar = None
  if progress:
    from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
    pbar = tqdm(total=c.steps * len(runs), desc=f"hybrids:{c.method}", dynamic_ncols=True)
  start_eval = _eval(s, s["params"], run="start", step=0)
  writer.write(start_eval)
  finals, walls, tails = {}, {}, {}
  for run in runs:
    state, step_fn = _make_runner(s, run)
    t0, recs = time.perf_counter(), []
    for _ in range(c.steps):
      t_step = time.perf_counter()
      state, met = step_fn(state)
      step = met["step"]
      met.update(phase="train", run=run, time_step=time.perf_counter() - t_step)
      train_lib.check_finite({k: v for k, v in met.items() if k not in ("phase", "run")},
                             phase=run, step=step)
      writer.write(met)
      recs.append(met)
      if c.eval_every and step % c.eval_every == 0 and step < c.steps:
        writer.write(_eval(s, state["params"], run=run, step=step))
      if pbar is not None:
        pbar.update(1)
        pbar.set_postfix(run=run, loss=f"{met['loss']:.3f}")
    walls[run] = time.perf_counter() - t0
    finals[run] = _eval(s, state["params"], run=run, step=c.steps)
    writer.write(finals[run])
    tail = recs[-max(1, len(recs) // 4):]
    tails[run] = {k: float(np.mean([r[k] for r in tail])) for k in tail[0]
                  if k not in ("phase", "run", "step")}
  if pbar is not None:
    pbar.close()
  writer.close()
  fin = finals[c.method]
  base = finals.get(baseline) if baseline else None
  summary = {
      "method": c.method, "baseline": baseline,
      "start_accuracy": start_eval["accuracy"],
      "start_accuracy_stderr": start_eval["accuracy_stderr"],
      "final_accuracy": fin["accuracy"], "final_accuracy_stderr": fin["accuracy_stderr"],
      "baseline_accuracy": base["accuracy"] if base else None,
      "baseline_accuracy_stderr": base["accuracy_stderr"] if base else None,
      "lift_points": 100 * (fin["accuracy"] - start_eval["accuracy"]),
      "lift_vs_baseline_points": 100 * (fin["accuracy"] - base["accuracy"]) if base else None,
      "steps": c.steps, "eval_split": c.eval.split, "eval_size": len(s["eval_set"]),
      "method_wall_s": walls[c.method], "baseline_wall_s": walls.get(baseline),
      "wall_s": time.perf_counter() - t_begin,
      "hybrid_config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in
                        dataclasses.asdict(s["hybrid_config"]).items() if k != "method"},
      "train_tail_means": tails, "init_checkpoint": c.init_checkpoint,
  }
  acc = lambda x: "n/a" if x is None else f"{100 * x:.1f}%"
  plot_hybrid_curves(writer.records(), workdir / "curves.png",
                     title=f"{c.method}: start {acc(summary['start_accuracy'])} -> "
                           f"{acc(summary['final_accuracy'])} (baseline {baseline}: "
                           f"{acc(summary['baseline_accuracy'])})")
  tmp = workdir / "summary.tmp"
  tmp.write_text(json.dumps(summary, indent=2))
  os.replace(tmp, workdir / "summary.json")
  log(format_hybrid_table(summary))
  return summary
