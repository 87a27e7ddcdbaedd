"""The RL post-training loop for LLM policies (GRPO family), one objective from the registry.

One iteration (`RLTrainer.step`):
  1. rollout: P prompts from the data stream, G completions each with the KV-cache sampler
     (Shao et al., "DeepSeekMath" / GRPO, 2024, arXiv 2402.03300), in `rollout_shards` chunks
     of whole groups sampled concurrently from host threads;
  2. rewards r = reward_fn(response, record) (0/1 accuracy, optional format term), shaped by the
     objective (DAPO overlong penalty, in tokens);
     DAPO dynamic sampling (Yu et al., 2025, arXiv 2503.14476): groups whose correctness has zero
     spread are dropped and NEW prompts are sampled until P informative groups are collected (at
     most `max_resample_rounds` extra rounds; if still short, the batch is filled with dropped
     groups whose loss mask is zeroed, and `ds_filled_frac` reports it);
  3. advantages A = objective.compute_advantages(r [P, G], mask) (the registry; objective state in
     the train state);
  4. log-prob phase: ref log-probs when KL is on; old (trainer) log-probs when the update is
     off-policy (ppo_epochs > 1 or several mini-batches). With one epoch and one mini-batch the
     update is on-policy and old_logp = stop_gradient(logp) inside the loss (ratio exactly 1,
     same gradient, one forward pass saved);
  5. truncated IS (Yao et al., 2025, "Your efficient RL framework secretly brings you off-policy
     RL training"): the per-token loss is multiplied by min(exp(logp_trainer_old - logp_sampler),
     cap) (the registry's `tis_cap`);
  6. mu PPO epochs over `num_minibatches` mini-batches, each accumulated over micro-batches with
     `objective.loss_parts`: grad = sum_i grad(total_i) / sum_i denom_i, which equals the
     full-mini-batch gradient for every aggregation mode (the denominators do not depend on the
     parameters).

The update is one jitted function that donates the train state. Micro-batches never split a
group (a clear error otherwise) so group-level quantities stay inside one micro-batch.

Shared prompts (`RLConfig.shared_prompt`, default on for fixed groups): the G completions of a
group share their prompt, so the sampler prefills each prompt once and its G rows read the
prompt's keys/values in place (shared-prefix attention), and the log-prob passes and the update
run the prompt once per group and only the response tokens per completion
(`model.shared_prompt_hidden`); exact up to float rounding. With KL in the loss and one on-policy
epoch, the reference log-probs are computed per micro-batch inside the update
(`RLConfig.fuse_ref_logprob`).

Variable group sizes (a prompt sampler whose plan sets `counts`, e.g. V0 budgets): the rollout is
a padded `[K, G_max]` grid with `groups["valid"]`; advantages use the registry's `group_mask`
path (padding gets 0), and the update receives only the rl.batch_size real completions, so its
compiled shape is unchanged. Groups may then straddle micro-batches, which is exact for every
loss term except the d3s selector (it refuses variable groups).

Deviations: no per-epoch shuffling of mini-batches (a fixed order keeps resumes exact); the
truncation rate counts responses that hit `max_new_tokens` without <eos>.
"""
from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from rlpost import core
from rlpost import objectives
from rlpost.llm.model import chunked_logp_entropy
from rlpost.llm.model import hidden_states
from rlpost.llm.model import shared_prompt_hidden
from rlpost.llm import rl_extras
from rlpost.llm.sampler import Sampler
from rlpost.llm.sampler import left_pad
from rlpost.llm.tasks import accuracy_reward
from rlpost.llm.train import TrainState
from rlpost.llm.train import decode_responses
from rlpost.llm.train import encode_prompts
from rlpost.llm.train import step_key
from rlpost.llm.train import stream_indices

# Presets the LLM loop runs out of the box (others work when they need no extra inputs).
SUPPORTED_OBJECTIVES = ("grpo", "dr_grpo", "dapo", "gspo", "cispo", "rloo", "reinforce_pp",
                        # issue 5; their extra inputs come from rlpost.llm.rl_extras
                        "dcpo", "dcpo_script", "bnpo", "clip_cov", "kl_cov", "kl_cov_verl",
                        "dist_po", "adora", "empg", "aepo", "oblr_po", "capo", "dr_capo")


@dataclasses.dataclass(frozen=True)
class RLConfig:
  """Rollout and update shapes of one RL step (validated; errors name the field).

  batch_size counts completions (P prompts x G completions); micro_batch_size completions per
  gradient-accumulation slice; num_minibatches optimizer steps per PPO epoch; ppo_epochs = mu.
  """
  batch_size: int = 64
  group_size: int = 8
  micro_batch_size: int = 64
  num_minibatches: int = 1
  ppo_epochs: int = 1
  max_new_tokens: int = 32
  temperature: float = 1.0
  top_k: Optional[int] = None
  top_p: Optional[float] = None
  max_resample_rounds: int = 4
  format_weight: float = 0.0
  # The optimizer's (peak) learning rate; CAPO's curvature model needs it (None: CAPO refuses).
  learning_rate: Optional[float] = None
  # Log the issue-5 mechanism metrics (nonzero_grad_frac, clip_frac, nll_mean, ...); off by default
  # so the default metrics and compiled update stay unchanged.
  mechanism_metrics: bool = False
  # Planned number of RL steps; objectives whose selector follows training progress (d3s with
  # schedule=True) read progress = step / total_steps from it (None: such objectives refuse).
  total_steps: Optional[int] = None
  # Run each prompt once per group in the prefill, the log-prob passes and the update
  # (`model.shared_prompt_hidden`); the G completions reuse its keys and values. Exact up to
  # float rounding; False runs every completion's full sequence (variable groups always do).
  shared_prompt: bool = True
  # With KL in the loss and one on-policy epoch, compute the reference log-probs of each
  # micro-batch inside the update's accumulation loop instead of in a separate pass before it:
  # the same values (same shapes and program per micro-batch), and XLA can overlap the reference
  # forward with the policy's backward. False runs the separate pass (`time_logprob`).
  fuse_ref_logprob: bool = True
  # Rollout chunks sampled concurrently, one host thread each (`Sampler.generate(shards=...)`):
  # a decode step's small matmuls keep about one core busy, so two chunks of whole groups use
  # both cores of a 2-core machine. Chunk s samples with fold_in(key, s); 1 = one call.
  rollout_shards: int = 2

  def __post_init__(self):
    for name in ("batch_size", "group_size", "micro_batch_size", "num_minibatches", "ppo_epochs",
                 "max_new_tokens", "rollout_shards"):
      v = getattr(self, name)
      if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"rl.{name} must be a positive int, got {v!r}")
    if self.batch_size % self.group_size:
      raise ValueError(f"rl.group_size={self.group_size} does not divide "
                       f"rl.batch_size={self.batch_size} (batch = prompts x group_size)")
    if self.micro_batch_size % self.group_size:
      raise ValueError(f"rl.micro_batch_size={self.micro_batch_size} would split a group of "
                       f"rl.group_size={self.group_size}; use a multiple of group_size")
    if self.batch_size % self.num_minibatches or \
        (self.batch_size // self.num_minibatches) % self.group_size:
      raise ValueError(f"rl.num_minibatches={self.num_minibatches} must split "
                       f"rl.batch_size={self.batch_size} into whole groups of {self.group_size}")
    mini = self.batch_size // self.num_minibatches
    if mini % self.micro_batch_size:
      raise ValueError(f"rl.micro_batch_size={self.micro_batch_size} must divide the mini-batch "
                       f"of {mini} completions (batch_size / num_minibatches)")
    if not self.temperature > 0:
      raise ValueError(f"rl.temperature must be > 0 for RL sampling, got {self.temperature!r}")
    if self.total_steps is not None and (isinstance(self.total_steps, bool) or not isinstance(
        self.total_steps, (int, np.integer)) or self.total_steps < 1):
      raise ValueError(f"rl.total_steps must be a positive int or None, got {self.total_steps!r}")
    if self.max_resample_rounds < 0:
      raise ValueError(f"rl.max_resample_rounds must be >= 0, got {self.max_resample_rounds!r}")

  @property
  def num_prompts(self) -> int:
    return self.batch_size // self.group_size

  @property
  def on_policy(self) -> bool:
    return self.ppo_epochs == 1 and self.num_minibatches == 1


def make_objective(name: str, overrides: Optional[dict[str, Any]] = None, *,
                   max_new_tokens: int, overlong_fraction: float = 0.2) -> objectives.Objective:
  """objective(name, **overrides) adapted to short responses.

  DAPO's overlong buffer (4096 of 20480 tokens) is rescaled to `overlong_fraction` of
  `max_new_tokens` unless overridden, since a buffer >= the response budget would penalise
  every token (deviation, documented in BUILD_NOTES).
  """
  overrides = dict(overrides or {})
  obj = objectives.objective(name, **overrides)
  cfg = obj.config
  if cfg.advantage == "gae":
    raise ValueError(f"objective {name!r} needs a critic (batch['values']); the LLM loop has none."
                     f" Supported: {', '.join(SUPPORTED_OBJECTIVES)}")
  if (cfg.overlong_buffer is not None and "overlong_buffer" not in overrides and
      cfg.overlong_buffer >= max_new_tokens):
    overrides["overlong_buffer"] = max(1, int(round(overlong_fraction * max_new_tokens)))
    obj = objectives.objective(name, **overrides)
  # ADORA's negatives are the non-truncated wrong answers (official threshold 4054 of 4096
  # tokens): with short responses "not truncated" is length < max_new_tokens.
  if (cfg.advantage == "adora" and "length_threshold" not in overrides and
      cfg.advantage_kwargs["length_threshold"] > max_new_tokens):
    overrides["length_threshold"] = float(max_new_tokens)
    obj = objectives.objective(name, **overrides)
  return obj


def response_logp_entropy(model, tokens: jax.Array, attention_mask: jax.Array,
                          prompt_len: int) -> tuple[jax.Array, jax.Array]:
  """log p(y_t | x, y_<t) and entropy on the response grid [B, R] of a [B, P + R] sequence.

  Projects only the response positions to the vocabulary (the prompt's logits are never needed).
  Equal to `token_logprobs_and_entropy(...)[:, P:]` on response tokens (tested); zero where the
  response is padding.
  """
  hidden = hidden_states(model, tokens, attention_mask)[:, prompt_len - 1:-1]
  return _masked_logp_entropy(model, hidden, tokens[:, prompt_len:], attention_mask[:, prompt_len:])


def shared_response_logp_entropy(model, prompt_tokens: jax.Array, prompt_mask: jax.Array,
                                 response_tokens: jax.Array, response_mask: jax.Array,
                                 group_size: int) -> tuple[jax.Array, jax.Array]:
  """`response_logp_entropy` of B = U * group_size completions of U prompts [U, P], running each
  prompt once (`model.shared_prompt_hidden`). Row r continues prompt r // group_size."""
  hidden = shared_prompt_hidden(model, prompt_tokens, prompt_mask, response_tokens, response_mask,
                                group_size)
  return _masked_logp_entropy(model, hidden, response_tokens, response_mask)


def _masked_logp_entropy(model, hidden, targets, response_mask):
  logp, ent = chunked_logp_entropy(model.head_weight(), hidden, targets,
                                   dtype=model.config.jnp_dtype)
  valid = response_mask.astype(jnp.float32)
  return logp * valid, ent * valid


def _response_hidden(model, mb: dict[str, jax.Array], prompt_len: int, group_size: int):
  """(hidden [B, R, H] predicting each response token, targets [B, R], response mask [B, R]) of
  a micro-batch in either layout: shared prompts or full sequences."""
  if "prompt_tokens" in mb:
    hidden = shared_prompt_hidden(model, mb["prompt_tokens"], mb["prompt_mask"],
                                  mb["response_tokens"], mb["response_mask"], group_size)
    return hidden, mb["response_tokens"], mb["response_mask"]
  hidden = hidden_states(model, mb["tokens"], mb["attention_mask"])[:, prompt_len - 1:-1]
  return hidden, mb["tokens"][:, prompt_len:], mb["attention_mask"][:, prompt_len:]


def _combine(metrics: dict[str, jax.Array]) -> dict[str, jax.Array]:
  """Reduces stacked per-micro-batch metrics: min / max for *_min / *_max, mean otherwise."""
  out = {}
  for k, v in metrics.items():
    if k.endswith("_min"):
      out[k] = jnp.min(v)
    elif k.endswith("_max"):
      out[k] = jnp.max(v)
    else:
      out[k] = jnp.mean(v)
  return out


def make_update_step(graphdef: nnx.GraphDef, optimizer: optax.GradientTransformation,
                     objective: objectives.Objective, rl_config: RLConfig, *, prompt_len: int):
  """Jitted `update(state, batch, data_pos, objective_state, ref_params=None) -> (state, metrics)`,
  state donated.

  batch holds [B, ...] arrays: tokens, attention_mask (full [B, P + R]), mask, advantages,
  sampler_logp (response grid [B, R]) and, when needed, old_logp and ref_logp. With `ref_params`
  the update computes each micro-batch's ref_logp itself (`RLConfig.fuse_ref_logprob`; batch then
  carries none). In the shared-prompt
  layout tokens / attention_mask are replaced by prompt_tokens / prompt_mask ([B / G, P], one row
  per group) and response_tokens / response_mask ([B, R]). Objectives whose
  selector reads training progress also get batch["progress"] = state step / rl.total_steps
  (computed in the compiled step, so it does not retrace).
  """
  cfg = rl_config
  mini = cfg.batch_size // cfg.num_minibatches
  n_micro = mini // cfg.micro_batch_size
  need_rng = "rng" in objectives.SURROGATES[objective.config.surrogate].batch_keys
  # CAPO: per-token curvature of the LM-head step, from this micro-batch's last hidden states, the
  # head weight, the current lr and the optimizer's Adam moments of the head (rl_extras).
  use_capo = "capo" in objective.config.selectors
  if use_capo and cfg.learning_rate is None:
    raise ValueError(f"objective {objective.config.name!r} (CAPO) needs rl.learning_rate (the "
                     f"optimizer's learning rate) for its curvature mask")
  use_progress = objectives.needs_progress(objective.config)
  if use_progress and cfg.total_steps is None:
    raise ValueError(f"objective {objective.config.name!r} follows a training-progress schedule "
                     f"(d3s schedule=True); set rl.total_steps (the planned number of RL steps)")

  def loss_fn(params, mb, rng, head_adam=None, progress=None):
    model = nnx.merge(graphdef, params)
    hidden, targets, resp_mask = _response_hidden(model, mb, prompt_len, cfg.group_size)
    logp, ent = _masked_logp_entropy(model, hidden, targets, resp_mask)
    old = jax.lax.stop_gradient(logp) if cfg.on_policy else mb["old_logp"]
    batch = {"logp": logp, "old_logp": old, "advantages": mb["advantages"], "mask": mb["mask"],
             "entropy": ent, "sampler_logp": mb["sampler_logp"]}
    if "ref_logp" in mb:
      batch["ref_logp"] = mb["ref_logp"]
    if need_rng:
      batch["rng"] = rng
    if progress is not None:
      batch[objectives.D3S_PROGRESS_KEY] = progress
    if use_capo:
      cm = rl_extras.capo_metrics(hidden, model.head_weight(), targets, mb["advantages"],
                                  lr=cfg.learning_rate, adam=head_adam)
      batch["capo_m_hessian"], batch["capo_m_fisher"] = cm["m_hessian"], cm["m_fisher"]
    parts, metrics = objective.loss_parts(batch, global_batch_size=mini)
    m = mb["mask"].astype(bool)
    log_ratio = jnp.where(m, logp - old, 0.0)
    big = jnp.float32(1e30)
    metrics = {k: v for k, v in metrics.items() if k not in ("ratio_min", "ratio_max")}
    any_valid = jnp.any(m)
    metrics["ratio_min"] = jnp.where(any_valid, jnp.min(jnp.where(m, jnp.exp(log_ratio), big)), 1.0)
    metrics["ratio_max"] = jnp.where(any_valid, jnp.max(jnp.where(m, jnp.exp(log_ratio), -big)),
                                     1.0)
    metrics["entropy_trainer"] = core.masked_mean(ent, m)
    metrics["trainer_sampler_abs_diff_max"] = jnp.max(
        jnp.where(m, jnp.abs(old - mb["sampler_logp"]), 0.0))
    if use_capo:
      metrics["capo_reject_frac"] = core.capo_rejection_fraction(objective.token_mask(batch), m)
    if cfg.mechanism_metrics:  # exact: tokens whose policy-loss gradient w.r.t. logp is non-zero
      sg = {k: (v if k == "rng" else jax.lax.stop_gradient(v)) for k, v in batch.items()}
      g_lp = jax.grad(lambda lp: jnp.sum(objective.per_token({**sg, "logp": lp})[0]))(sg["logp"])
      metrics["nonzero_grad_frac"] = core.masked_mean((g_lp != 0).astype(jnp.float32), m)
    return parts.total, (parts.denom, metrics)

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def ref_logp_fn(ref_params, mb):
    ref = nnx.merge(graphdef, jax.lax.stop_gradient(ref_params))
    hidden, targets, resp_mask = _response_hidden(ref, mb, prompt_len, cfg.group_size)
    return _masked_logp_entropy(ref, hidden, targets, resp_mask)[0]

  def minibatch_update(params, opt_state, mbatch, rng, progress=None, ref_params=None):
    head_adam = rl_extras.lm_head_adam(params, opt_state) if use_capo else None

    def micro(carry, xs):
      gsum, dsum = carry
      mb, i = xs
      if ref_params is not None:  # fused reference pass (RLConfig.fuse_ref_logprob)
        mb = {**mb, "ref_logp": ref_logp_fn(ref_params, mb)}
      (total, (denom, met)), g = grad_fn(params, mb, jax.random.fold_in(rng, i), head_adam,
                                         progress)
      return (jax.tree.map(jnp.add, gsum, g), dsum + denom), (total, met)

    zeros = jax.tree.map(jnp.zeros_like, params)
    (gsum, denom), (totals, mets) = jax.lax.scan(
        micro, (zeros, jnp.zeros((), jnp.float32)), (mbatch, jnp.arange(n_micro)))
    safe = jnp.where(denom > 0, denom, 1.0)
    grads = jax.tree.map(lambda g: g / safe, gsum)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    met = _combine(mets)
    met["loss"] = jnp.sum(totals) / safe
    met["grad_norm"] = optax.global_norm(grads)
    return params, opt_state, met

  @functools.partial(jax.jit, donate_argnums=0)
  def update(state: TrainState, batch: dict[str, jax.Array], data_pos, objective_state,
             ref_params=None):
    params, opt_state = state["params"], state["opt_state"]
    rng = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), state["step"])
    progress = None
    if use_progress:
      progress = jnp.clip(state["step"].astype(jnp.float32) / cfg.total_steps, 0.0, 1.0)
    all_mets = []
    def rows(key, size):  # prompt-level arrays hold one row per group
      return size // cfg.group_size if key.startswith("prompt_") else size

    for epoch in range(cfg.ppo_epochs):
      for k in range(cfg.num_minibatches):
        mbatch = {}
        for key, a in batch.items():
          n, m = rows(key, mini), rows(key, cfg.micro_batch_size)
          mbatch[key] = a[k * n:(k + 1) * n].reshape((n_micro, m) + a.shape[1:])
        params, opt_state, met = minibatch_update(
            params, opt_state, mbatch, jax.random.fold_in(rng, epoch * cfg.num_minibatches + k),
            progress, ref_params)
        all_mets.append(met)
    metrics = _combine({k: jnp.stack([m[k] for m in all_mets]) for k in all_mets[0]})
    new_state = {**state, "params": params, "opt_state": opt_state, "step": state["step"] + 1,
                 "data_pos": jnp.asarray(data_pos, jnp.int32), "objective_state": objective_state}
    return new_state, metrics

  return update


def _over_micro_batches(fn: Callable[..., jax.Array], micro_batch_size: int):
  """fn(params, *arrays) -> [B, ...] evaluated on consecutive slices of `micro_batch_size`
  completions (`lax.map`); arrays with fewer rows (one per group) are sliced in proportion. One
  slice when the batch does not split evenly."""

  def run(params, *arrays):
    b = arrays[-1].shape[0]
    n = b // micro_batch_size if b % micro_batch_size == 0 else 1
    if n == 1 or any(a.shape[0] % n for a in arrays):
      return fn(params, *arrays)
    split = [a.reshape((n, a.shape[0] // n) + a.shape[1:]) for a in arrays]
    out = jax.lax.map(lambda xs: fn(params, *xs), split)
    return out.reshape((b,) + out.shape[2:])

  return run


def completion_flattener(groups: dict[str, Any]) -> Callable[[Any], Any]:
  """Maps a rollout's `[K, G, ...]` arrays to `[B, ...]` real completions (row-major).

  Fixed groups reshape; variable groups (a padded grid with `groups["valid"]`) drop the padding.
  """
  if "valid" not in groups:
    return lambda a: a.reshape((-1,) + a.shape[2:])
  sel = np.flatnonzero(np.asarray(groups["valid"]).reshape(-1))
  return lambda a: a.reshape((-1,) + a.shape[2:])[sel]


class RLTrainer:
  """Runs RL steps on a train state: rollout, rewards, advantages, log-probs, update.

  Args:
    graphdef: `nnx.split(model)[0]` of the policy.
    params: initial policy params (used to build the sampler; the state's params are used after).
    tokenizer: transformers tokenizer (pad / eos ids are read from it).
    objective: a registry `Objective` (see `make_objective`).
    rl_config: `RLConfig`.
    optimizer: optax transformation (must match the state's opt_state).
    pool: training records (TabMWPRecord); the data stream walks over them.
    data_seed: seed of the data order.
    prompt_len: prompt bucket (prompts are left-padded to it).
    reward_fn: fn(responses, records) -> [B] float rewards (e.g. tasks.make_reward_fn()).
    ref_params: reference-policy params for KL (required when the objective has KL).
    prompt_sampler: optional `rlpost.llm.prompt_samplers.PromptSampler` (VADE, V0, curriculum,
      uniform) that plans each step's prompts; None keeps the data stream. Its state lives in
      `self.prompt_sampler_state` (a dict of arrays; checkpoint it beside the train state).
  """

  def __init__(self, *, graphdef, params, tokenizer, objective: objectives.Objective,
               rl_config: RLConfig, optimizer, pool: Sequence[Any], data_seed: int,
               prompt_len: int, reward_fn: Callable[..., np.ndarray], ref_params: Any = None,
               prompt_sampler: Any = None):
    self.graphdef, self.tokenizer, self.objective = graphdef, tokenizer, objective
    self.cfg, self.pool, self.data_seed, self.prompt_len = rl_config, pool, data_seed, prompt_len
    self.reward_fn = reward_fn
    ocfg = objective.config
    if rl_config.group_size < ocfg.min_group_size:
      raise ValueError(f"rl.group_size={rl_config.group_size} < min_group_size="
                       f"{ocfg.min_group_size} of objective {ocfg.name!r}")
    self.use_kl = ocfg.kl_placement is not None and ocfg.kl_coef > 0
    if self.use_kl and ref_params is None:
      raise ValueError(f"objective {ocfg.name!r} has KL (kl_coef={ocfg.kl_coef}); pass ref_params")
    # A private copy: the train state (whose params may alias these) is donated every step.
    self.ref_params = None if ref_params is None else jax.tree.map(jnp.copy, ref_params)
    from rlpost.llm.sampler import bucket_size  # pylint: disable=g-import-not-at-top
    if bucket_size(prompt_len) != prompt_len:
      # The sampler pads prompts up to a power-of-two bucket; the trainer slices the response at
      # prompt_len, so the two must agree or the response grid silently shifts.
      raise ValueError(f"prompt_len={prompt_len} must be a sampler prompt bucket (a power of two "
                       f">= 16, e.g. {bucket_size(prompt_len)})")
    self.pad_id = tokenizer.pad_token_id or 0
    self.eos_id = tokenizer.eos_token_id
    self.sampler = Sampler(nnx.merge(graphdef, params))
    self.update = make_update_step(graphdef, optimizer, objective, rl_config,
                                   prompt_len=prompt_len)

    def logprob_fn(p, tokens, attention_mask):
      return response_logp_entropy(nnx.merge(graphdef, p), tokens, attention_mask, prompt_len)[0]

    def shared_logprob_fn(p, prompt_tokens, prompt_mask, response_tokens, response_mask):
      return shared_response_logp_entropy(nnx.merge(graphdef, p), prompt_tokens, prompt_mask,
                                          response_tokens, response_mask, rl_config.group_size)[0]

    # Old / ref log-probs run over the update's micro-batches: bounded activation memory, and the
    # same shapes as the loss's forward pass (with ref == policy the KL term is then exactly 0).
    self.logprob_fn = jax.jit(_over_micro_batches(logprob_fn, rl_config.micro_batch_size))
    self.shared_logprob_fn = jax.jit(_over_micro_batches(shared_logprob_fn,
                                                         rl_config.micro_batch_size))
    self.dynamic_sampling = "dynamic_sampling" in ocfg.selectors
    self.prompt_sampler = prompt_sampler
    self.prompt_sampler_state = None if prompt_sampler is None else prompt_sampler.init_state(pool)
    if prompt_sampler is not None and self.dynamic_sampling:
      raise ValueError(f"prompt_sampler {prompt_sampler.name!r} cannot be combined with the "
                       f"dynamic_sampling selector of objective {ocfg.name!r}")

  # -- rollout ----------------------------------------------------------------------------------

  def _sample_round(self, params, data_pos: int, key, idx=None, counts=None,
                    width: Optional[int] = None) -> dict[str, Any]:
    """One generation round: P rows of G completions, or variable groups.

    With `counts` (completions per prompt of `idx`, summing to rl.batch_size) the batch is still
    one generation call of rl.batch_size completions, laid out on a padded `[len(idx), width]`
    grid with `valid` marking real slots (padding: pad tokens, zero masks, rewards and logps).
    """
    cfg = self.cfg
    if idx is None:  # a prompt sampler passes its own rows
      idx = stream_indices(self.data_seed, len(self.pool), data_pos, cfg.num_prompts)
    if counts is None:
      counts = np.full((len(idx),), cfg.group_size, np.int64)
      width = cfg.group_size
    counts = np.asarray(counts, np.int64)
    if counts.shape != (len(idx),) or counts.sum() != cfg.batch_size or np.any(counts < 0) or \
        width is None or counts.max() > width:
      raise ValueError(f"variable groups need counts ({counts.shape}) >= 0 per prompt summing to "
                       f"rl.batch_size={cfg.batch_size} (got {int(counts.sum())}) and width "
                       f"({width}) >= max count")
    records = [self.pool[i] for i in idx]
    prompts = encode_prompts(self.tokenizer, records, max_len=self.prompt_len)
    if cfg.shared_prompt and np.all(counts == width):  # one prefill per prompt
      toks, mask = left_pad(prompts, pad_id=self.pad_id, length=self.prompt_len)
      expand = int(width)
    else:
      rep = [p for p, c in zip(prompts, counts) for _ in range(c)]
      toks, mask = left_pad(rep, pad_id=self.pad_id, length=self.prompt_len)
      expand = None
    self.sampler.set_params(params)
    out = self.sampler.generate(toks, mask, max_new_tokens=cfg.max_new_tokens,
                                temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p,
                                stop_ids=(self.eos_id,), pad_id=self.pad_id, seed=key,
                                expand=expand, shards=cfg.rollout_shards)
    rt, rm = np.asarray(out.response_tokens), np.asarray(out.response_mask)
    texts = decode_responses(self.tokenizer, rt, rm)
    recs = [r for r, c in zip(records, counts) for _ in range(c)]
    rewards = np.asarray(self.reward_fn(texts, recs), np.float32)
    if rewards.shape != (cfg.batch_size,) or not np.all(np.isfinite(rewards)):
      from rlpost.llm.tasks import check_rewards_finite  # pylint: disable=g-import-not-at-top
      rewards = check_rewards_finite(rewards, recs)
    acc = np.asarray([accuracy_reward(t, r) for t, r in zip(texts, recs)], np.float32)
    lengths = rm.sum(axis=1)
    has_eos = np.any((rt == self.eos_id) & rm.astype(bool), axis=1)
    flat = {"tokens": np.asarray(out.tokens), "attention_mask": np.asarray(out.attention_mask),
            "mask": rm, "sampler_logp": np.asarray(out.logp), "entropy": np.asarray(out.entropy),
            "rewards": rewards, "acc": acc, "lengths": lengths, "truncated": ~has_eos}
    if np.all(counts == width):  # the fixed [P, G] layout
      grp = lambda a: a.reshape((len(idx), width) + a.shape[1:])
      return {**{k: grp(v) for k, v in flat.items()}, "prompt_ids": idx}
    rows = np.repeat(np.arange(len(idx)), counts)
    cols = np.concatenate([np.arange(c) for c in counts])
    out_groups = {}
    for k, v in flat.items():
      fill = self.pad_id if k == "tokens" else 0
      grid = np.full((len(idx), width) + v.shape[1:], fill, v.dtype)
      grid[rows, cols] = v
      out_groups[k] = grid
    valid = np.zeros((len(idx), width), bool)
    valid[rows, cols] = True
    return {**out_groups, "valid": valid, "prompt_ids": np.asarray(idx)}

  def rollout(self, params, data_pos: int, key) -> tuple[dict[str, Any], int, dict[str, float]]:
    """P groups (dynamic sampling refills dropped ones); returns (groups, new data_pos, stats)."""
    cfg = self.cfg
    if self.prompt_sampler is not None:
      from rlpost.llm import prompt_samplers  # pylint: disable=g-import-not-at-top
      return prompt_samplers.sampled_rollout(self, params, data_pos, key)
    first = self._sample_round(params, data_pos, jax.random.fold_in(key, 0))
    data_pos += cfg.num_prompts
    stats = {"zero_spread_frac": float(np.mean(first["acc"].max(1) == first["acc"].min(1)))}
    if not self.dynamic_sampling:
      stats.update(ds_rounds=0.0, ds_filled_frac=0.0)
      return first, data_pos, stats
    rounds, kept, dropped = [first], [], []
    def split(r):
      keep = np.asarray(self.objective.select_groups(jnp.asarray(r["acc"])))
      for i in range(cfg.num_prompts):
        (kept if keep[i] else dropped).append((r, i))
    split(first)
    n_rounds = 0
    while len(kept) < cfg.num_prompts and n_rounds < cfg.max_resample_rounds:
      n_rounds += 1
      r = self._sample_round(params, data_pos, jax.random.fold_in(key, n_rounds))
      data_pos += cfg.num_prompts
      rounds.append(r)
      split(r)
    chosen = kept[:cfg.num_prompts]
    n_fill = cfg.num_prompts - len(chosen)
    chosen += dropped[:n_fill]
    out = {k: np.stack([r[k][i] for r, i in chosen]) for k in first if k != "prompt_ids"}
    out["prompt_ids"] = np.asarray([r["prompt_ids"][i] for r, i in chosen])
    if n_fill:  # filled groups carry no gradient: their loss mask is zeroed
      out["mask"] = out["mask"].copy()
      out["mask"][cfg.num_prompts - n_fill:] = 0
    stats.update(ds_rounds=float(n_rounds), ds_filled_frac=n_fill / cfg.num_prompts)
    return out, data_pos, stats

  # -- one step ---------------------------------------------------------------------------------

  def step(self, state: TrainState) -> tuple[TrainState, dict[str, float]]:
    """One RL iteration; returns the new state (the old one is donated) and scalar metrics."""
    cfg = self.cfg
    step = int(state["step"])
    key = step_key(state)
    t0 = time.perf_counter()
    groups, data_pos, stats = self.rollout(state["params"], int(state["data_pos"]), key)
    flat = completion_flattener(groups)
    variable = "valid" in groups
    if variable and "d3s" in self.objective.config.selectors:
      raise ValueError("the d3s selector reads fixed groups of rl.group_size in the loss; it "
                       "cannot run on variable group sizes (a V0 prompt sampler)")
    tokens, attn = jnp.asarray(flat(groups["tokens"])), jnp.asarray(flat(groups["attention_mask"]))
    mask = jnp.asarray(flat(groups["mask"]), jnp.float32)
    grid_len = lambda a: a.reshape((-1,) + a.shape[2:])  # every slot, padding included
    shaped = self.objective.shape_rewards(jnp.asarray(groups["rewards"]),
                                          jnp.asarray(grid_len(groups["lengths"])),
                                          max_len=cfg.max_new_tokens)
    t1 = time.perf_counter()
    batch = {"mask": mask, "sampler_logp": jnp.asarray(flat(groups["sampler_logp"]))}
    if cfg.shared_prompt and not variable:  # one prompt row per group (identical within a group)
      lp = self.prompt_len
      seqs = (jnp.asarray(groups["tokens"][:, 0, :lp]),
              jnp.asarray(groups["attention_mask"][:, 0, :lp]), tokens[:, lp:], attn[:, lp:])
      batch.update(zip(("prompt_tokens", "prompt_mask", "response_tokens", "response_mask"), seqs))
      logprob_fn = lambda p: self.shared_logprob_fn(p, *seqs)
    else:
      batch.update(tokens=tokens, attention_mask=attn)
      logprob_fn = lambda p: self.logprob_fn(p, tokens, attn)
    old_logp = ref_logp = None
    if not cfg.on_policy:
      old_logp = logprob_fn(state["params"])
      batch["old_logp"] = old_logp
    fuse_ref = (self.use_kl and cfg.fuse_ref_logprob and cfg.on_policy
                and self.objective.config.kl_placement == "loss")
    if self.use_kl and not fuse_ref:
      ref_logp = logprob_fn(self.ref_params)
      batch["ref_logp"] = ref_logp
    if old_logp is not None or ref_logp is not None:
      jax.block_until_ready((old_logp, ref_logp))
    t2 = time.perf_counter()
    if variable:  # advantages on the padded [K, G_max] grid, then back to the real completions
      extra_out = {}
      adv_grid, obj_state = self.objective.compute_advantages(
          shaped, jnp.asarray(grid_len(groups["mask"]), jnp.float32),
          state=state["objective_state"], prompt_ids=jnp.asarray(groups["prompt_ids"]),
          old_logp=jnp.asarray(grid_len(groups["sampler_logp"])),
          extra={"entropy": jnp.asarray(grid_len(groups["entropy"]))},
          group_mask=jnp.asarray(groups["valid"]))
      adv = adv_grid[jnp.asarray(np.flatnonzero(groups["valid"].reshape(-1)))]
    else:
      extra, extra_out = self._advantage_extras(state, groups, tokens, attn, mask)
      adv, obj_state = self.objective.compute_advantages(
          shaped, mask, state=state["objective_state"],
          prompt_ids=jnp.asarray(groups["prompt_ids"]),
          old_logp=old_logp if old_logp is not None else batch["sampler_logp"], ref_logp=ref_logp,
          extra=extra)
    batch["advantages"] = adv
    if cfg.mechanism_metrics:
      extra_out.update(self._mechanism_stats(adv, groups, mask))
    if fuse_ref:  # reference log-probs per micro-batch inside the update
      state, met = self.update(state, batch, data_pos, obj_state, self.ref_params)
    else:
      state, met = self.update(state, batch, data_pos, obj_state)
    met = jax.device_get(met)
    t3 = time.perf_counter()
    for k in ("capo_reject_frac",) + (("clip_frac", "nonzero_grad_frac")
                                      if cfg.mechanism_metrics else ()):
      if k in met:
        extra_out[k] = float(met[k])
    oblr = rl_extras.find_oblr_state(state["opt_state"])
    if oblr is not None:
      extra_out.update(oblr_scale=float(oblr.scale), oblr_snr=float(
          np.minimum(oblr.snr, 1e30)))
    n_resp = float(np.sum(groups["lengths"]))
    n_all = float(jnp.sum(attn))
    lengths = flat(groups["lengths"])
    rewards = flat(np.asarray(shaped))
    out = {
        "step": step + 1,
        "reward_mean": float(rewards.mean()), "reward_std": float(rewards.std()),
        "accuracy": float(flat(groups["acc"]).mean()),
        "zero_spread_frac": stats["zero_spread_frac"],
        "ds_rounds": stats["ds_rounds"], "ds_filled_frac": stats["ds_filled_frac"],
        "clip_frac_low": float(met.get("clip_frac_low", 0.0)),
        "clip_frac_high": float(met.get("clip_frac_high", 0.0)),
        "ratio_min": float(met["ratio_min"]), "ratio_max": float(met["ratio_max"]),
        "kl": float(met.get("kl", 0.0)), "entropy": float(
            np.sum(groups["entropy"]) / max(n_resp, 1.0)),
        "response_len_mean": float(lengths.mean()), "response_len_max": float(lengths.max()),
        "truncation_rate": float(flat(groups["truncated"]).mean()),
        "loss": float(met["loss"]), "grad_norm": float(met["grad_norm"]),
        "tis_weight_mean": float(met.get("tis_weight_mean", 1.0)),
        "trainer_sampler_abs_diff_max": float(met["trainer_sampler_abs_diff_max"]),
        "time_rollout": t1 - t0, "time_logprob": t2 - t1, "time_train": t3 - t2,
        "tokens_per_s_rollout": n_resp / max(t1 - t0, 1e-9),
        "tokens_per_s_logprob": (n_all * (int(old_logp is not None) + int(ref_logp is not None))
                                 / max(t2 - t1, 1e-9)),
        "tokens_per_s_train": n_all * cfg.ppo_epochs / max(t3 - t2, 1e-9),
        **extra_out,
    }
    return state, out

  # -- issue-5 extras ---------------------------------------------------------------------------

  def _advantage_extras(self, state: TrainState, groups: dict[str, Any], tokens: jax.Array,
                        attn: jax.Array, mask: jax.Array
                        ) -> tuple[dict[str, jax.Array], dict[str, float]]:
    """`extra` for `compute_advantages` (entropy plus what the objective's estimator reads), and
    scalar metrics about it. Stateless helpers live in rlpost.llm.rl_extras."""
    cfg, ocfg = self.cfg, self.objective.config
    flat = lambda a: a.reshape((cfg.batch_size,) + a.shape[2:])
    extra = {"entropy": jnp.asarray(flat(groups["entropy"]))}
    out: dict[str, float] = {}
    fns = self.__dict__.setdefault("_extra_fns", {})
    if ocfg.advantage == "dist_po":  # double IS: old policy at logits / T and at T = 1
      if "tempered" not in fns:
        fns["tempered"] = rl_extras.make_tempered_logprob_fn(self.graphdef, self.prompt_len)
      prev = (state["objective_state"] or {}).get("entropy", jnp.zeros((), jnp.float32))
      kw = {k: ocfg.advantage_kwargs[k] for k in ("entropy_target",)}
      temp = core.dist_po_temperature(prev, **kw)
      extra["old_logp"] = fns["tempered"](state["params"], tokens, attn, 1.0)
      extra["old_logp_tempered"] = fns["tempered"](state["params"], tokens, attn, temp)
      out.update(dist_po_temperature=float(temp), dist_po_prev_entropy=float(prev))
    if ocfg.advantage == "empg":  # steps = sentence spans of the response
      if "boundaries" not in fns:
        fns["boundaries"] = rl_extras.boundary_token_ids(self.tokenizer)
      seg = rl_extras.sentence_segment_ids(tokens[:, self.prompt_len:], mask, fns["boundaries"],
                                           max_steps=ocfg.advantage_kwargs["max_steps"])
      extra["segment_ids"] = seg
      out["empg_steps_mean"] = float(np.mean(np.asarray(jnp.max(seg, axis=1)) + 1))
    if ocfg.advantage == "oblr":  # exact per-response ||grad log pi(y|x)||^2
      if "oblr" not in fns:
        fns["oblr"] = jax.jit(functools.partial(
            rl_extras.per_sample_grad_sq_norms, self.graphdef, prompt_len=self.prompt_len,
            chunk=cfg.micro_batch_size))
      w = fns["oblr"](state["params"], tokens, attn, mask)
      extra["oblr_weights"] = w
      wn = np.asarray(w)
      out["oblr_weight_cv"] = float(wn.std() / max(wn.mean(), 1e-12))
    return extra, out

  def _mechanism_stats(self, adv: jax.Array, groups: dict[str, Any], mask: jax.Array
                       ) -> dict[str, float]:
    """Rollout-side mechanism metrics of the issue-5 comparison (host numpy, no gradients)."""
    flat = completion_flattener(groups)
    m = np.asarray(mask).astype(bool)
    a = np.asarray(adv)
    lp = flat(groups["sampler_logp"])
    ent = flat(groups["entropy"])
    n = max(int(m.sum()), 1)
    return {
        # DCPO: responses that carry any learning signal (non-zero advantage on a valid token)
        "adv_nonzero_resp_frac": float(np.mean(np.any((a != 0) & m, axis=1))),
        # sampled-token entropy estimate -mean log p (dist_po's H), and |A| vs token entropy (EMPG)
        "nll_mean": float(-np.sum(np.where(m, lp, 0.0)) / n),
        "adv_abs_entropy_corr": rl_extras.masked_corr(np.abs(a), ent, m),
    }
