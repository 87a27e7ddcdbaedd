"""Per-token policy surrogates: PPO clip (asymmetric, dual), GSPO, CISPO, REINFORCE, value loss.

Every `*_per_token` function returns `(per_token_loss [B, T], aux)`; the scalar wrappers aggregate
explicitly with `aggregate_loss`. Losses are minimised. Inputs at masked positions are replaced by 0
before any arithmetic, so NaN/Inf padding can reach neither the value nor the gradient.
"""

import jax
import jax.numpy as jnp

from rlpost.core import aggregation

Array = jax.Array

# verl clamps the token log-ratio to +-20 before exponentiating.
LOG_RATIO_CLAMP = 20.0
# GSPO's sequence log-ratio is clamped from above at 10 in verl and Tunix.
GSPO_LOG_RATIO_MAX = 10.0


def _is_concrete(x) -> bool:
  return isinstance(x, (int, float))


def _check_clip(clip_low, clip_high, dual_clip=None) -> None:
  """Static sanity checks; skipped for traced (e.g. meta-learned) hyperparameters."""
  if _is_concrete(clip_low) and not 0.0 <= clip_low < 1.0:
    raise ValueError(f"clip_low must be in [0, 1); got clip_low={clip_low}")
  if _is_concrete(clip_high) and clip_high < 0.0:
    raise ValueError(f"clip_high must be >= 0; got clip_high={clip_high}")
  if dual_clip is not None and _is_concrete(dual_clip) and dual_clip <= 1.0:
    raise ValueError(f"dual_clip must be > 1 (or None); got dual_clip={dual_clip}")


def _sanitize(mask: Array, *xs: Array):
  m = mask.astype(bool)
  return (m,) + tuple(jnp.where(m, x.astype(jnp.float32), 0.0) for x in xs)


def _masked_frac(flag: Array, mask: Array) -> Array:
  return aggregation.masked_mean(flag.astype(jnp.float32), mask)


def clipped_ratio_objective(ratio: Array, advantages: Array, *, clip_low: float,
                            clip_high: float) -> Array:
  """max(-A r, -A clip(r, 1 - clip_low, 1 + clip_high)): PPO's pessimistic token loss."""
  unclipped = -advantages * ratio
  clipped = -advantages * jnp.clip(ratio, 1.0 - clip_low, 1.0 + clip_high)
  return jnp.maximum(unclipped, clipped)


def ppo_clip_loss_per_token(
    logp: Array,
    old_logp: Array,
    advantages: Array,
    mask: Array,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    dual_clip: float | None = None,
) -> tuple[Array, dict[str, Array]]:
  """PPO clipped surrogate per token, with DAPO's decoupled bounds and optional dual clip.

    r = exp(clamp(logp - old_logp, -20, 20))
    l = max(-A r, -A clip(r, 1 - clip_low, 1 + clip_high))
    dual clip (A < 0):  l = min(l, -c A)

  `clip_high > clip_low` is DAPO's clip-higher. The dual clip bounds a negative-advantage token's
  loss at -c A, so a huge ratio can't blow up the update.

  Papers: PPO (Schulman et al., 2017, arXiv 1707.06347); dual clip (Ye et al., 2019,
  arXiv 1912.09729); DAPO clip-higher (Yu et al., 2025, arXiv 2503.14476).

  Args:
    logp, old_logp: `[B, T]` log-probs of the sampled tokens under the current and rollout policy.
    advantages: `[B, T]` token advantages.
    mask: `[B, T]` valid-token mask.
    clip_low, clip_high: the ratio is clipped to [1 - clip_low, 1 + clip_high].
    dual_clip: c > 1, or None to disable.

  Returns:
    (per_token_loss `[B, T]`, aux) with `ratio`, `log_ratio`, `clipped_low`/`clipped_high` masks
    (tokens whose gradient the clip removed), `dual_clipped`, and the scalar fractions
    `clip_frac_low`, `clip_frac_high`, `clip_frac`, `dual_clip_frac`, `ratio_min`, `ratio_max`.
  """
  _check_clip(clip_low, clip_high, dual_clip)
  m, logp, old_logp, adv = _sanitize(mask, logp, old_logp, advantages)
  log_ratio = jnp.clip(logp - old_logp, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
  ratio = jnp.exp(log_ratio)
  loss = clipped_ratio_objective(ratio, adv, clip_low=clip_low, clip_high=clip_high)
  clipped_low = m & (adv < 0) & (ratio < 1.0 - clip_low)
  clipped_high = m & (adv > 0) & (ratio > 1.0 + clip_high)
  dual = jnp.zeros_like(m)
  if dual_clip is not None:
    bound = -dual_clip * adv
    dual = m & (adv < 0) & (loss > bound)
    loss = jnp.where(adv < 0, jnp.minimum(loss, bound), loss)
  loss = jnp.where(m, loss, 0.0)
  big = jnp.finfo(jnp.float32).max
  aux = {
      "ratio": ratio,
      "log_ratio": log_ratio,
      "clipped_low": clipped_low,
      "clipped_high": clipped_high,
      "dual_clipped": dual,
      "clip_frac_low": _masked_frac(clipped_low, m),
      "clip_frac_high": _masked_frac(clipped_high, m),
      "clip_frac": _masked_frac(clipped_low | clipped_high, m),
      "dual_clip_frac": _masked_frac(dual, m),
      "ratio_min": jnp.min(jnp.where(m, ratio, big)),
      "ratio_max": jnp.max(jnp.where(m, ratio, -big)),
  }
  return loss, aux


def ppo_clip_loss(
    logp: Array,
    old_logp: Array,
    advantages: Array,
    mask: Array,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    dual_clip: float | None = None,
    agg_mode: str = "token_mean",
) -> tuple[Array, dict[str, Array]]:
  """Scalar PPO clip loss: `aggregate_loss(ppo_clip_loss_per_token(...), mask, agg_mode)`."""
  per_token, aux = ppo_clip_loss_per_token(
      logp, old_logp, advantages, mask, clip_low=clip_low, clip_high=clip_high,
      dual_clip=dual_clip)
  return aggregation.aggregate_loss(per_token, mask, agg_mode), aux


def gspo_loss_per_token(
    logp: Array,
    old_logp: Array,
    advantages: Array,
    mask: Array,
    *,
    clip_low: float = 3e-4,
    clip_high: float = 4e-4,
) -> tuple[Array, dict[str, Array]]:
  """GSPO, in the "GSPO-token" form: one length-normalised sequence ratio per response.

    log s_i   = sum_t m (logp - old_logp) / max(len_i, 1)
    log s_i,t = sg(log s_i) + logp_t - sg(logp_t)        (clamped above at 10)
    l         = max(-A s_i,t, -A clip(s_i,t, 1 - clip_low, 1 + clip_high))

  The value of s_i,t is s_i for every token, so all tokens of a response share one clip decision;
  the gradient flows per token. With advantages constant within a sequence this equals the
  sequence-level GSPO objective in value and gradient. Default aggregation: seq_mean_token_mean.

  Paper: Zheng et al., "Group Sequence Policy Optimization", 2025, arXiv 2507.18071.
  """
  _check_clip(clip_low, clip_high)
  m, logp, old_logp, adv = _sanitize(mask, logp, old_logp, advantages)
  length = jnp.sum(m.astype(jnp.float32), axis=-1, keepdims=True)
  seq_log_ratio = jnp.sum(logp - old_logp, axis=-1, keepdims=True) / jnp.maximum(length, 1.0)
  seq_log_ratio = jnp.clip(seq_log_ratio, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
  token_log_ratio = jax.lax.stop_gradient(seq_log_ratio) + logp - jax.lax.stop_gradient(logp)
  token_log_ratio = jnp.minimum(token_log_ratio, GSPO_LOG_RATIO_MAX)
  ratio = jnp.exp(token_log_ratio)
  loss = jnp.where(m, clipped_ratio_objective(ratio, adv, clip_low=clip_low, clip_high=clip_high),
                   0.0)
  clipped_low = m & (adv < 0) & (ratio < 1.0 - clip_low)
  clipped_high = m & (adv > 0) & (ratio > 1.0 + clip_high)
  aux = {
      "ratio": ratio,
      "seq_ratio": jnp.exp(seq_log_ratio[:, 0]),
      "clipped_low": clipped_low,
      "clipped_high": clipped_high,
      "clip_frac_low": _masked_frac(clipped_low, m),
      "clip_frac_high": _masked_frac(clipped_high, m),
      "clip_frac": _masked_frac(clipped_low | clipped_high, m),
  }
  return loss, aux


def gspo_loss(
    logp: Array,
    old_logp: Array,
    advantages: Array,
    mask: Array,
    *,
    clip_low: float = 3e-4,
    clip_high: float = 4e-4,
    agg_mode: str = "seq_mean_token_mean",
) -> tuple[Array, dict[str, Array]]:
  """Scalar GSPO loss (see `gspo_loss_per_token`)."""
  per_token, aux = gspo_loss_per_token(logp, old_logp, advantages, mask, clip_low=clip_low,
                                       clip_high=clip_high)
  return aggregation.aggregate_loss(per_token, mask, agg_mode), aux


def cispo_loss_per_token(
    logp: Array,
    old_logp: Array,
    advantages: Array,
    mask: Array,
    *,
    is_clip_low: float | None = None,
    is_clip_high: float = 4.0,
) -> tuple[Array, dict[str, Array]]:
  """CISPO: a stop-gradient clipped importance weight times a REINFORCE term.

    w = sg(clip(r, 1 - is_clip_low, 1 + is_clip_high));   l = -w A logp

  No token is ever dropped: a token outside the trust region keeps a (capped) gradient
  -w A grad(logp). The loss value depends on logp itself, so compare gradients, not values, with
  other surrogates. `is_clip_low=None` means no lower bound (the paper); giving both bounds
  reproduces verl. The default upper cap 1 + 4 = 5 follows the absolute cap of 5 suggested for
  CISPO in TRL's documentation; the paper tunes only the upper bound.

  Paper: MiniMax-M1 (MiniMax, 2025, arXiv 2506.13585).
  """
  if is_clip_low is not None:
    _check_clip(is_clip_low, is_clip_high)
  elif _is_concrete(is_clip_high) and is_clip_high < 0:
    raise ValueError(f"is_clip_high must be >= 0; got is_clip_high={is_clip_high}")
  m, logp, old_logp, adv = _sanitize(mask, logp, old_logp, advantages)
  ratio = jnp.exp(jnp.clip(logp - old_logp, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))
  low = 0.0 if is_clip_low is None else 1.0 - is_clip_low
  weight = jax.lax.stop_gradient(jnp.clip(ratio, low, 1.0 + is_clip_high))
  loss = jnp.where(m, -weight * adv * logp, 0.0)
  capped = m & (weight != ratio)
  aux = {"ratio": ratio, "is_weight": weight, "clipped": capped,
         "clip_frac": _masked_frac(capped, m)}
  return loss, aux


def cispo_loss(
    logp: Array,
    old_logp: Array,
    advantages: Array,
    mask: Array,
    *,
    is_clip_low: float | None = None,
    is_clip_high: float = 4.0,
    agg_mode: str = "token_mean",
) -> tuple[Array, dict[str, Array]]:
  """Scalar CISPO loss (see `cispo_loss_per_token`)."""
  per_token, aux = cispo_loss_per_token(logp, old_logp, advantages, mask, is_clip_low=is_clip_low,
                                        is_clip_high=is_clip_high)
  return aggregation.aggregate_loss(per_token, mask, agg_mode), aux


def pg_loss_per_token(logp: Array, advantages: Array, mask: Array) -> tuple[Array, dict[str, Array]]:
  """Plain REINFORCE: l = -A logp (Williams, 1992). Advantages are treated as constants."""
  m, logp, adv = _sanitize(mask, logp, advantages)
  return jnp.where(m, -jax.lax.stop_gradient(adv) * logp, 0.0), {}


def pg_loss(logp: Array, advantages: Array, mask: Array, *,
            agg_mode: str = "token_mean") -> tuple[Array, dict[str, Array]]:
  """Scalar REINFORCE loss (see `pg_loss_per_token`)."""
  per_token, aux = pg_loss_per_token(logp, advantages, mask)
  return aggregation.aggregate_loss(per_token, mask, agg_mode), aux


def truncated_is_weights(
    logp_sampler: Array, logp_trainer: Array, mask: Array | None = None, *, cap: float = 2.0
) -> Array:
  """Truncated importance weights for the sampler/trainer log-prob mismatch.

    w = sg(min(exp(logp_trainer - logp_sampler), cap))

  The rollout engine and the trainer compute slightly different log-probs for the same tokens
  (kernels, precision, batch shapes). Multiplying the per-token loss by w makes the update
  unbiased for the trainer's policy while bounding the variance ("TIS"; verl
  `tis_imp_ratio_cap`, default 2). Yao et al., "Your efficient RL framework secretly brings you
  off-policy RL training", 2025.
  """
  if _is_concrete(cap) and cap <= 0:
    raise ValueError(f"truncated IS cap must be > 0; got cap={cap}")
  diff = logp_trainer.astype(jnp.float32) - logp_sampler.astype(jnp.float32)
  if mask is not None:
    diff = jnp.where(mask.astype(bool), diff, 0.0)
  w = jnp.minimum(jnp.exp(jnp.clip(diff, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)), cap)
  if mask is not None:
    w = jnp.where(mask.astype(bool), w, 0.0)
  return jax.lax.stop_gradient(w)


def clipped_value_loss_per_token(
    values: Array, old_values: Array, returns: Array, mask: Array, *, clip: float = 0.5
) -> tuple[Array, dict[str, Array]]:
  """PPO's clipped value regression: 0.5 max((V - R)^2, (clip(V, V_old +- c) - R)^2).

  verl `compute_value_loss` defaults c = 0.5. When |V - V_old| <= c it is 0.5 * MSE.
  """
  m, values, old_values, returns = _sanitize(mask, values, old_values, returns)
  clipped = old_values + jnp.clip(values - old_values, -clip, clip)
  loss = 0.5 * jnp.maximum(jnp.square(values - returns), jnp.square(clipped - returns))
  vf_clipped = m & (jnp.square(clipped - returns) > jnp.square(values - returns))
  return jnp.where(m, loss, 0.0), {"vf_clip_frac": _masked_frac(vf_clipped, m)}
