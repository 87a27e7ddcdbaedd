"""Sample, group and token selection rules.

Selectors decide which samples the gradient sees. Group selectors map `[P, G]` rewards to a
`[P]` keep mask; token selectors map a batch to a `[B, T]` mask that multiplies the loss mask.
"""

import jax
import jax.numpy as jnp

Array = jax.Array


def dynamic_sampling_mask(rewards: Array) -> Array:
  """DAPO dynamic sampling: keep the groups whose rewards are not all equal.

  A group whose G rewards are identical has zero group-relative advantage and contributes no
  gradient; DAPO discards it and samples more prompts until the batch is full. A group of one is
  kept (verl). Pass the correctness metric ("acc"), not a shaped score: an overlong penalty can give
  non-zero spread to groups whose correctness is constant.

  Paper: DAPO (Yu et al., 2025, arXiv 2503.14476).

  Args:
    rewards: `[P, G]`.

  Returns:
    `[P]` bool, True where the group is informative.
  """
  if rewards.ndim != 2:
    raise ValueError(f"rewards must be [P, G]; got shape {rewards.shape}")
  if rewards.shape[1] == 1:
    return jnp.ones(rewards.shape[:1], bool)
  return jnp.max(rewards, axis=1) > jnp.min(rewards, axis=1)


def zero_spread_fraction(rewards: Array) -> Array:
  """Fraction of groups whose rewards are all equal (a standard GRPO diagnostic)."""
  return 1.0 - jnp.mean(dynamic_sampling_mask(rewards).astype(jnp.float32))
