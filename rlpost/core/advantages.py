"""Advantage estimators: group-relative, leave-one-out, batch-whitened and GAE.

Group-relative estimators take outcome rewards shaped `[P, G]` (P prompts x G completions, stored
contiguously) and return the same shape; `broadcast_to_tokens` tiles them over a response mask.
GAE follows rlax: unbatched over time, the caller vmaps.
"""

import jax
import jax.numpy as jnp

from rlpost.core import aggregation

Array = jax.Array


def _check_groups(rewards: Array) -> None:
  if rewards.ndim != 2:
    raise ValueError(f"rewards must be [P, G] (prompts x group size); got shape {rewards.shape}")


def grpo_advantages(rewards: Array, *, eps: float = 1e-6, scale_by_std: bool = True) -> Array:
  """Group-relative advantages of GRPO, or of Dr.GRPO when `scale_by_std=False`.

    a_i = (R_i - mean_g R) / (std_g R + eps)     (GRPO; std is the unbiased, ddof=1 estimator)
    a_i =  R_i - mean_g R                        (Dr.GRPO)

  A group of one follows verl: mean 0 and std 1, so a = R / (1 + eps) (or R for Dr.GRPO).
  Zero-variance groups give exactly 0.

  Papers: DeepSeekMath (Shao et al., 2024, arXiv 2402.03300); "Understanding R1-Zero-Like
  Training" (Liu et al., 2025, arXiv 2503.20783).

  Args:
    rewards: `[P, G]` outcome rewards.
    eps: added to the std (verl places it outside the square root).
    scale_by_std: divide by the group std (GRPO) or not (Dr.GRPO).

  Returns:
    `[P, G]` advantages.
  """
  _check_groups(rewards)
  r = rewards.astype(jnp.float32)
  g = r.shape[1]
  if g == 1:
    return r / (1.0 + eps) if scale_by_std else r
  mean = jnp.mean(r, axis=1, keepdims=True)
  centred = r - mean
  if not scale_by_std:
    return centred
  std = jnp.sqrt(jnp.sum(jnp.square(centred), axis=1, keepdims=True) / (g - 1))
  return centred / (std + eps)


def rloo_advantages(rewards: Array) -> Array:
  """REINFORCE leave-one-out advantages: a_i = R_i - mean_{j != i} R_j = G/(G-1) (R_i - mean_g R).

  A group of one gets a = R (verl). Kool et al., 2019; Ahmadian et al., 2024, arXiv 2402.14740.
  """
  _check_groups(rewards)
  r = rewards.astype(jnp.float32)
  g = r.shape[1]
  if g == 1:
    return r
  return (r - jnp.mean(r, axis=1, keepdims=True)) * (g / (g - 1.0))


def broadcast_to_tokens(seq_advantages: Array, mask: Array) -> Array:
  """Tiles per-sequence values over tokens: `[P, G]` or `[B]` -> `[B, T]`, zero where masked."""
  flat = seq_advantages.reshape(-1).astype(jnp.float32)
  if flat.shape[0] != mask.shape[0]:
    raise ValueError(
        f"{flat.shape[0]} sequence advantages for a mask of {mask.shape[0]} rows; P*G must equal B")
  return jnp.where(mask.astype(bool), flat[:, None], 0.0)


def reinforce_pp_baseline_advantages(rewards: Array, mask: Array, *, eps: float = 1e-8) -> Array:
  """REINFORCE++-baseline: subtract the group mean, tile over tokens, whiten over the batch.

    a_i = R_i - mean_g R;  A = masked_whiten(tile(a), mask)

  Whitening runs over every valid token of the batch, so the mean is length-weighted: a group with
  all-equal rewards has a_i = 0 before whitening but in general non-zero A after it. That is the
  method's definition, not a bug. Fewer than two valid tokens: centred values only (no NaN).

  Paper: Hu et al., "REINFORCE++", 2025, arXiv 2501.03262.

  Args:
    rewards: `[P, G]` outcome rewards.
    mask: `[P*G, T]` response mask.
    eps: whitening epsilon.

  Returns:
    `[P*G, T]` token advantages.
  """
  _check_groups(rewards)
  r = rewards.astype(jnp.float32)
  centred = r - jnp.mean(r, axis=1, keepdims=True)
  return aggregation.masked_whiten(broadcast_to_tokens(centred, mask), mask, eps=eps)


def discounted_returns_to_go(token_rewards: Array, mask: Array, *, gamma: float = 1.0) -> Array:
  """G_t = r_t + gamma * G_{t+1} along each row, reset to 0 on masked positions. `[B, T]`."""
  m = mask.astype(bool)
  r = jnp.where(m, token_rewards.astype(jnp.float32), 0.0)

  def step(carry, xs):
    r_t, m_t = xs
    g_t = jnp.where(m_t, r_t + gamma * carry, 0.0)
    return g_t, g_t

  _, g = jax.lax.scan(step, jnp.zeros(r.shape[0], jnp.float32), (r.T, m.T), reverse=True)
  return g.T


def reinforce_pp_advantages(
    token_rewards: Array, mask: Array, *, gamma: float = 1.0, eps: float = 1e-8) -> Array:
  """REINFORCE++: token-level return-to-go, then whitening over the batch's valid tokens.

  With gamma=1 and an outcome reward on the last token, G_t = R on every valid token.
  Paper: Hu et al., 2025, arXiv 2501.03262.
  """
  returns = discounted_returns_to_go(token_rewards, mask, gamma=gamma)
  return aggregation.masked_whiten(returns, mask, eps=eps)


def outcome_to_token_rewards(rewards: Array, mask: Array) -> Array:
  """Places each sequence's outcome reward on its last valid token: `[P, G]`/`[B]` -> `[B, T]`."""
  m = mask.astype(jnp.int32)
  flat = rewards.reshape(-1).astype(jnp.float32)
  positions = jnp.arange(m.shape[1])
  last = jnp.max(jnp.where(m > 0, positions[None, :], -1), axis=1)
  return jnp.where(positions[None, :] == last[:, None], flat[:, None], 0.0)


def gae_advantages(
    r_t: Array,
    discount_t: Array,
    values: Array,
    *,
    lambda_: float = 0.95,
    stop_target_gradients: bool = True,
) -> tuple[Array, Array]:
  """Generalised advantage estimation by a reverse `lax.scan` (rlax layout, unbatched).

    delta_t = r_t + discount_t * V_{t+1} - V_t
    A_t     = delta_t + discount_t * lambda * A_{t+1}
    R_t     = A_t + V_t   (the lambda-return used as the value target)

  Off-by-one convention: `r_t[t]` and `discount_t[t]` are the reward and discount received on the
  transition out of the state whose value is `values[t]`; `values` has T+1 entries, the last being
  the bootstrap value. Episode ends are `discount_t = gamma * (1 - done_t)`.
  With lambda=1, A_t is the discounted return minus V_t; with lambda=0, A_t = delta_t.

  Paper: Schulman et al., "High-Dimensional Continuous Control Using GAE", 2015, arXiv 1506.02438.

  Args:
    r_t: `[T]` rewards.
    discount_t: `[T]` discounts.
    values: `[T+1]` value estimates.
    lambda_: the GAE lambda (scalar or `[T]`).
    stop_target_gradients: stop gradients through the advantages and returns.

  Returns:
    (advantages `[T]`, returns `[T]`).
  """
  if values.shape[0] != r_t.shape[0] + 1:
    raise ValueError(f"values must have T+1={r_t.shape[0] + 1} entries; got {values.shape[0]}")
  lambda_ = jnp.broadcast_to(jnp.asarray(lambda_, jnp.float32), r_t.shape)
  delta = r_t + discount_t * values[1:] - values[:-1]

  def step(carry, xs):
    delta_t, d_t, l_t = xs
    a_t = delta_t + d_t * l_t * carry
    return a_t, a_t

  _, adv = jax.lax.scan(step, jnp.zeros((), delta.dtype), (delta, discount_t, lambda_),
                        reverse=True)
  returns = adv + values[:-1]
  if stop_target_gradients:
    adv, returns = jax.lax.stop_gradient(adv), jax.lax.stop_gradient(returns)
  return adv, returns


def token_gae_advantages(
    token_rewards: Array,
    values: Array,
    mask: Array,
    *,
    gamma: float = 1.0,
    lambda_: float = 1.0,
    whiten: bool = True,
) -> tuple[Array, Array]:
  """GAE over `[B, T]` response tokens for LLM PPO (bootstrap 0 after the last valid token).

  Masked positions carry nothing: the discount into a masked position is 0, which equals verl's
  treatment for right-padded single-turn responses. Advantages are whitened over the batch's valid
  tokens when `whiten` (verl default for LLM PPO; off in classic control).
  """
  m = mask.astype(jnp.float32)
  v = jnp.where(mask.astype(bool), values.astype(jnp.float32), 0.0)
  v_next = jnp.concatenate([v, jnp.zeros_like(v[:, :1])], axis=1)
  next_valid = jnp.concatenate([m[:, 1:], jnp.zeros_like(m[:, :1])], axis=1)
  discount = gamma * next_valid
  r = jnp.where(mask.astype(bool), token_rewards.astype(jnp.float32), 0.0)
  adv, ret = jax.vmap(lambda a, b, c: gae_advantages(a, b, c, lambda_=lambda_))(r, discount, v_next)
  adv, ret = adv * m, ret * m
  if whiten:
    adv = aggregation.masked_whiten(adv, mask)
  return adv, ret


def overlong_penalty(lengths: Array, *, max_len: int, buffer: int, factor: float = 1.0) -> Array:
  """DAPO's soft overlong punishment, counted in tokens.

    penalty = min(-(len - (max_len - buffer)) / buffer * factor, 0)

  Zero up to `max_len - buffer`, then linear down to -factor at len = max_len. Never positive.
  Paper: DAPO (Yu et al., 2025, arXiv 2503.14476); verl `DAPORewardManager`.
  """
  if buffer <= 0 or buffer > max_len:
    raise ValueError(f"overlong buffer must be in (0, max_len={max_len}]; got buffer={buffer}")
  expected = max_len - buffer
  exceed = lengths.astype(jnp.float32) - expected
  return jnp.minimum(-exceed / buffer * factor, 0.0)
