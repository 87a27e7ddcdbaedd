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


# ==================================================================================================
# Seed objectives I (issue 5). Appended sections, one per paper.
# ==================================================================================================


def _ranks_desc(scores: Array) -> Array:
  """0-based rank of every entry of `scores` in descending order (flattened; ties by position)."""
  flat = scores.reshape(-1)
  order = jnp.argsort(-flat, stable=True)
  return jnp.zeros_like(order).at[order].set(jnp.arange(flat.shape[0])).reshape(scores.shape)


# --- DCPO: dynamic-adaptive clipping --------------------------------------------------------------


def dcpo_clip_bounds(old_prob: Array, *, eps_low: float = 0.16, eps_high: float = 0.2,
                     max_ratio: float = 10.0) -> tuple[Array, Array]:
  """DCPO's per-token ratio bounds from |(r - 1) r q| <= eps, q the token's old probability.

    r_low(q)  = 0.5 + 0.5 sqrt(max(1 - 4 eps_low / q, 0))
    r_high(q) = min(0.5 + 0.5 sqrt(1 + 4 eps_high / q), max_ratio)

  Rare tokens get a wider band: q = 0.9 -> [0.7687, 1.1872], q = 0.01 -> [0.5, 5.0] (eps 0.16/0.2).
  q = 0 (underflow) takes the limits [0.5, max_ratio]; the official code gives r_low = 1 there.

  Paper: "DCPO: Dynamic Clipping Policy Optimization", 2025, arXiv 2509.02333, Eq. 6;
  official `get_clip_low_high` (the cap is max(dual clip c, 10) = 10).

  Returns:
    (low, high), same shape as `old_prob`, without gradient.
  """
  q = jax.lax.stop_gradient(jnp.asarray(old_prob, jnp.float32))
  pos = q > 0
  inv = jnp.where(pos, 1.0 / jnp.where(pos, q, 1.0), jnp.inf)
  low = 0.5 + 0.5 * jnp.sqrt(jnp.maximum(1.0 - 4.0 * eps_low * inv, 0.0))
  high = jnp.minimum(0.5 + 0.5 * jnp.sqrt(1.0 + 4.0 * eps_high * inv), max_ratio)
  return low, high


def dcpo_loss_per_token(
    logp: Array,
    old_logp: Array,
    advantages: Array,
    mask: Array,
    *,
    eps_low: float = 0.16,
    eps_high: float = 0.2,
    dual_clip: float = 10.0,
    max_ratio: float = 10.0,
) -> tuple[Array, dict[str, Array]]:
  """DCPO token loss: PPO clip with per-token bounds `dcpo_clip_bounds(exp(old_logp))` + dual clip.

    l = max(-A r, -A clip(r, r_low(q), r_high(q)));   A < 0: l = min(l, -c A)

  Deviation: the log-ratio is clamped to +-20 like every rlpost surrogate (official: no clamp). The
  bounds are <= max_ratio = 10 and the dual clip c = 10 bounds A < 0, so the clamp changes neither
  the value nor the gradient except for ratios below e^-20 (gradient ~1e-9 -> 0).
  Paper: arXiv 2509.02333; official `compute_policy_loss_dcpo`.

  Returns:
    (per_token_loss, aux) with `clip_low_bound`, `clip_high_bound`, `clipped` and `clip_frac`,
    `dual_clip_frac`, `nonzero_grad_frac` (tokens whose gradient the clip did not remove).
  """
  m, logp, old_logp, adv = _sanitize(mask, logp, old_logp, advantages)
  low, high = dcpo_clip_bounds(jnp.exp(old_logp), eps_low=eps_low, eps_high=eps_high,
                               max_ratio=max_ratio)
  log_ratio = jnp.clip(logp - old_logp, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
  ratio = jnp.exp(log_ratio)
  loss = clipped_ratio_objective(ratio, adv, clip_low=1.0 - low, clip_high=high - 1.0)
  clipped = m & (((adv < 0) & (ratio < low)) | ((adv > 0) & (ratio > high)))
  bound = -dual_clip * adv
  dual = m & (adv < 0) & (loss > bound)
  loss = jnp.where(m, jnp.where(adv < 0, jnp.minimum(loss, bound), loss), 0.0)
  aux = {"ratio": ratio, "clip_low_bound": low, "clip_high_bound": high, "clipped": clipped,
         "clip_frac": _masked_frac(clipped, m), "dual_clip_frac": _masked_frac(dual, m),
         "nonzero_grad_frac": _masked_frac(~(clipped | dual) & (adv != 0), m)}
  return loss, aux


def dcpo_loss(logp: Array, old_logp: Array, advantages: Array, mask: Array, *,
              eps_low: float = 0.16, eps_high: float = 0.2, dual_clip: float = 10.0,
              max_ratio: float = 10.0, agg_mode: str = "token_mean"
              ) -> tuple[Array, dict[str, Array]]:
  """Scalar DCPO loss. `token_mean` is the official "only-token-mean" after its Dec-2025 fix."""
  per_token, aux = dcpo_loss_per_token(logp, old_logp, advantages, mask, eps_low=eps_low,
                                       eps_high=eps_high, dual_clip=dual_clip, max_ratio=max_ratio)
  return aggregation.aggregate_loss(per_token, mask, agg_mode), aux


# --- Entropy mechanism: Clip-Cov and KL-Cov -------------------------------------------------------


def clip_cov_scores(logp: Array, advantages: Array, mask: Array) -> Array:
  """Centred covariance terms cov_t = (A_t - mean A)(logp_t - mean logp) over the valid tokens.

  Means run over every valid token of the batch; masked positions are 0. No gradient.
  Paper: "The Entropy Mechanism of RL for Reasoning LMs", 2025, arXiv 2505.22617, Eq. 9.
  """
  m, logp, adv = _sanitize(mask, jax.lax.stop_gradient(logp), jax.lax.stop_gradient(advantages))
  cov = (adv - aggregation.masked_mean(adv, m)) * (logp - aggregation.masked_mean(logp, m))
  return jnp.where(m, cov, 0.0)


def clip_cov_loss_per_token(
    logp: Array,
    old_logp: Array,
    advantages: Array,
    mask: Array,
    *,
    key: Array,
    clip_ratio: float = 2e-4,
    cov_lb: float = 1.0,
    cov_ub: float = 5.0,
    ppo_clip_low: float = 1.0,
    ppo_clip_high: float = 1.0,
) -> tuple[Array, dict[str, Array]]:
  """Clip-Cov: PPO loss with the gradient of a few random high-covariance tokens removed.

    candidates = valid & not PPO-clipped & cov_lb < cov < cov_ub
    n = max(int(clip_ratio * N_valid), 1) candidates drawn uniformly (PRNG `key`), corr = 0 there
    l = max(-A r, -A clip(r, 1 - ppo_clip_low, 1 + ppo_clip_high)) * corr

  Zeroed tokens keep counting in the aggregation denominator (official). `clip_ratio` is a fraction
  of the valid tokens. Defaults from the official 7B script: ratio 2e-4, lb 1, ub 5 and a PPO range
  [0, 2] (clip 1/1). Selection runs over the batch passed in, so results depend on micro-batch size
  (as in the official code). Deviation: log-ratio clamped to +-20 (official: none).

  Paper: arXiv 2505.22617, Sec. 4; official `compute_policy_loss_clip_cov`.

  Returns:
    (per_token_loss, aux) with `cov`, `cov_clipped` mask and `clip_frac` (fraction with corr = 0).
  """
  m, logp_s, old_logp, adv = _sanitize(mask, logp, old_logp, advantages)
  log_ratio = jnp.clip(logp_s - old_logp, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
  ratio = jnp.exp(log_ratio)
  l1 = -adv * ratio
  l2 = -adv * jnp.clip(ratio, 1.0 - ppo_clip_low, 1.0 + ppo_clip_high)
  cov = clip_cov_scores(logp_s, adv, m)
  cand = m & ~(l2 > l1) & (cov > cov_lb) & (cov < cov_ub)
  n_valid = jnp.sum(m.astype(jnp.int32))
  n = jnp.maximum(jnp.floor(clip_ratio * n_valid.astype(jnp.float32)).astype(jnp.int32), 1)
  u = jax.random.uniform(key, cand.shape)
  chosen = cand & (_ranks_desc(jnp.where(cand, u, -1.0)) < n)
  loss = jnp.where(m & ~chosen, jnp.maximum(l1, l2), 0.0)
  aux = {"ratio": ratio, "cov": cov, "cov_clipped": chosen, "clip_frac": _masked_frac(chosen, m),
         "ppo_clip_frac": _masked_frac(m & (l2 > l1), m)}
  return loss, aux


def clip_cov_loss(logp: Array, old_logp: Array, advantages: Array, mask: Array, *, key: Array,
                  clip_ratio: float = 2e-4, cov_lb: float = 1.0, cov_ub: float = 5.0,
                  ppo_clip_low: float = 1.0, ppo_clip_high: float = 1.0,
                  agg_mode: str = "token_mean") -> tuple[Array, dict[str, Array]]:
  """Scalar Clip-Cov loss (see `clip_cov_loss_per_token`)."""
  per_token, aux = clip_cov_loss_per_token(
      logp, old_logp, advantages, mask, key=key, clip_ratio=clip_ratio, cov_lb=cov_lb,
      cov_ub=cov_ub, ppo_clip_low=ppo_clip_low, ppo_clip_high=ppo_clip_high)
  return aggregation.aggregate_loss(per_token, mask, agg_mode), aux


def kl_cov_loss_per_token(
    logp: Array,
    old_logp: Array,
    advantages: Array,
    mask: Array,
    *,
    k_ratio: float = 2e-3,
    kl_coef: float = 1.0,
) -> tuple[Array, dict[str, Array]]:
  """KL-Cov: unclipped policy gradient plus |log-ratio| on the top-k covariance tokens.

    k = max(1, int(k_ratio * N_valid)) tokens with the largest cov (detached, deterministic)
    l = -A r + kl_coef |logp - old_logp|   on the selected tokens,   l = -A r   elsewhere

  There is no PPO clipping at all; k_ratio = 0 disables the penalty. `k_ratio` is a FRACTION of the
  valid tokens (verl's `kl_cov_ratio`); the paper and its original scripts give a PERCENT
  (`k_percent` 0.2 for 7B = fraction 2e-3; 0.02 for 32B = 2e-4). kl_coef: 1 (paper) vs verl's
  default 0.1. Deviation: log-ratio clamped to +-20 inside the ratio (official: none).

  Paper: arXiv 2505.22617, Sec. 4; official `compute_policy_loss_kl_cov`.

  Returns:
    (per_token_loss, aux) with `cov`, `kl_cov_selected` and `kl_cov_frac`.
  """
  m, logp_s, old_logp, adv = _sanitize(mask, logp, old_logp, advantages)
  log_ratio = jnp.clip(logp_s - old_logp, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
  ratio = jnp.exp(log_ratio)
  cov = clip_cov_scores(logp_s, adv, m)
  n_valid = jnp.sum(m.astype(jnp.int32))
  k = jnp.maximum(jnp.floor(k_ratio * n_valid.astype(jnp.float32)).astype(jnp.int32), 1)
  big = jnp.finfo(jnp.float32).max
  selected = m & (_ranks_desc(jnp.where(m, cov, -big)) < k)
  if _is_concrete(k_ratio) and k_ratio == 0:
    selected = jnp.zeros_like(m)
  else:
    selected = selected & (jnp.asarray(k_ratio) > 0)
  loss = -adv * ratio + jnp.where(selected, kl_coef * jnp.abs(logp_s - old_logp), 0.0)
  aux = {"ratio": ratio, "cov": cov, "kl_cov_selected": selected,
         "kl_cov_frac": _masked_frac(selected, m)}
  return jnp.where(m, loss, 0.0), aux


def kl_cov_loss(logp: Array, old_logp: Array, advantages: Array, mask: Array, *,
                k_ratio: float = 2e-3, kl_coef: float = 1.0,
                agg_mode: str = "token_mean") -> tuple[Array, dict[str, Array]]:
  """Scalar KL-Cov loss (see `kl_cov_loss_per_token`)."""
  per_token, aux = kl_cov_loss_per_token(logp, old_logp, advantages, mask, k_ratio=k_ratio,
                                         kl_coef=kl_coef)
  return aggregation.aggregate_loss(per_token, mask, agg_mode), aux


# --- AEPO: entropy-balanced advantage and clipping ------------------------------------------------


def aepo_entropy_advantages(advantages: Array, entropy: Array, mask: Array, *,
                            entropy_weight: float = 0.2) -> Array:
  """AEPO's entropy-aware advantage: A (1 + w sg(Hn)), Hn the batch-standardised token entropy.

  Hn = (H - mean_valid H) / std_valid(H) (unbiased; std = 0 -> Hn = 0), so the weight
  1 + w Hn has mean 1 over the valid tokens. w = 0.2 is hard-coded in the code we read.
  Paper: "Agentic Entropy-Balanced Policy Optimization", 2025, arXiv 2510.14545.
  """
  m, adv, ent = _sanitize(mask, advantages, jax.lax.stop_gradient(entropy))
  big = jnp.finfo(jnp.float32).max
  # A constant entropy has f32 mean residues; the spread guard makes its Hn exactly 0.
  spread = jnp.max(jnp.where(m, ent, -big)) > jnp.min(jnp.where(m, ent, big))
  sd = jnp.sqrt(aggregation.masked_var(ent, m, unbiased=True))
  hn = jnp.where(m & spread & (sd > 0), aggregation.safe_divide(
      ent - aggregation.masked_mean(ent, m), sd), 0.0)
  return jnp.where(m, adv * (1.0 + entropy_weight * hn), 0.0)


def aepo_loss_per_token(
    logp: Array,
    old_logp: Array,
    advantages: Array,
    mask: Array,
    *,
    entropy: Array | None = None,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    dual_clip: float = 3.0,
    balanced_clipping: bool = True,
    balanced_advantage: bool = True,
    entropy_weight: float = 0.2,
    balanced_clip_mask: Array | None = None,
) -> tuple[Array, dict[str, Array]]:
  """AEPO loss: dual-clip PPO whose upper clip keeps a stop-gradient-rescaled gradient.

    hi = (1 + eps_high) r / sg(r)     (value 1 + eps_high)
    l  = max(-A r, -A clip(r, 1 - eps_low, hi));   A < 0: l = min(l, -c A)

  The forward value equals PPO exactly. For A > 0 and r > 1 + eps_high the gradient is
  -A (1 + eps_high) grad logp instead of 0, so clipped (typically high-entropy) tokens keep
  learning. With `balanced_advantage`, A is first replaced by `aepo_entropy_advantages(A, entropy)`
  (`entropy` = the current policy's token entropy). The code we read applies the balanced clip to
  every token; the paper describes it for high-entropy tokens: pass `balanced_clip_mask` (e.g.
  entropy above a batch quantile) to restrict it. Both flags off = `ppo_clip_loss_per_token`.

  Paper: arXiv 2510.14545, Sec. 4 (official RUC-NLPIR/ARPO `AEPO/`,
  `compute_policy_loss_entropy_balanced_clipping`, read in a derivative fork).

  Returns:
    (per_token_loss, aux) like `ppo_clip_loss_per_token`.
  """
  if balanced_advantage:
    if entropy is None:
      raise ValueError("aepo balanced_advantage=True needs `entropy` ([B, T] token entropies)")
    advantages = aepo_entropy_advantages(advantages, entropy, mask, entropy_weight=entropy_weight)
  base, aux = ppo_clip_loss_per_token(logp, old_logp, advantages, mask, clip_low=clip_low,
                                      clip_high=clip_high, dual_clip=dual_clip)
  if not balanced_clipping:
    return base, aux
  m, logp_s, old_logp_s, adv = _sanitize(mask, logp, old_logp, advantages)
  log_ratio = jnp.clip(logp_s - old_logp_s, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
  ratio = jnp.exp(log_ratio)
  hi = (1.0 + clip_high) * jnp.exp(log_ratio - jax.lax.stop_gradient(log_ratio))
  if balanced_clip_mask is not None:
    hi = jnp.where(balanced_clip_mask.astype(bool), hi, 1.0 + clip_high)
  loss = jnp.maximum(-adv * ratio, -adv * jnp.clip(ratio, 1.0 - clip_low, hi))
  loss = jnp.where(adv < 0, jnp.minimum(loss, -dual_clip * adv), loss)
  return jnp.where(m, loss, 0.0), aux


def aepo_loss(logp: Array, old_logp: Array, advantages: Array, mask: Array, *,
              agg_mode: str = "token_mean", **kwargs) -> tuple[Array, dict[str, Array]]:
  """Scalar AEPO loss (see `aepo_loss_per_token`; keyword arguments are passed through)."""
  per_token, aux = aepo_loss_per_token(logp, old_logp, advantages, mask, **kwargs)
  return aggregation.aggregate_loss(per_token, mask, agg_mode), aux
