"""Per-token KL estimators, entropies from logits, and the adaptive KL controller.

The KL between the policy and a reference is estimated on sampled tokens (d = logp - ref_logp):

  k1   d                                        unbiased for KL(pi || ref), gradient 0 in expectation
  abs  |d|
  k2   d^2 / 2                                  expected gradient = grad KL(pi || ref)
  k3   exp(u) - u - 1, u = clamp(-d, +-20),     unbiased, low variance, >= 0; clamped to [-10, 10]
       its expected gradient is that of the forward KL(ref || pi)
  k1+, k3+  value of k1 / k3, gradient of k2 (straight-through), so the penalty's value is the
       estimate while its gradient is the reverse-KL gradient

Reference: J. Schulman, "Approximating KL divergence" (2020); verl `kl_penalty` (clamps as there).
"""

import jax
import jax.numpy as jnp

Array = jax.Array

KL_ESTIMATORS = ("k1", "abs", "k2", "k3", "k1+", "k3+")
K3_INNER_CLAMP = 20.0
K3_OUTER_CLAMP = 10.0


def _k3(d: Array) -> Array:
  u = jnp.clip(-d, -K3_INNER_CLAMP, K3_INNER_CLAMP)
  # expm1(u) - u == exp(u) - u - 1 without the f32 cancellation near u = 0.
  return jnp.clip(jnp.expm1(u) - u, -K3_OUTER_CLAMP, K3_OUTER_CLAMP)


def kl_penalty(logp: Array, ref_logp: Array, *, estimator: str = "k3") -> Array:
  """Per-token KL estimate between the policy and the reference on the sampled tokens.

  Args:
    logp: `[...]` log-probs of the sampled tokens under the policy.
    ref_logp: same shape, under the reference policy.
    estimator: one of KL_ESTIMATORS (see module docstring).

  Returns:
    The per-token estimate, same shape, f32. Mask and aggregate it explicitly.
  """
  if estimator not in KL_ESTIMATORS:
    raise ValueError(f"unknown KL estimator {estimator!r}; valid: {', '.join(KL_ESTIMATORS)}")
  d = logp.astype(jnp.float32) - ref_logp.astype(jnp.float32)
  if estimator == "k1":
    return d
  if estimator == "abs":
    return jnp.abs(d)
  if estimator == "k2":
    return 0.5 * jnp.square(d)
  if estimator == "k3":
    return _k3(d)
  forward = d if estimator == "k1+" else _k3(d)
  k2 = 0.5 * jnp.square(d)
  return k2 - jax.lax.stop_gradient(k2) + jax.lax.stop_gradient(forward)


def entropy_from_logits(logits: Array, axis: int = -1) -> Array:
  """Entropy of softmax(logits) along `axis`, computed in f32: H = logsumexp(x) - sum p x."""
  x = logits.astype(jnp.float32)
  lse = jax.nn.logsumexp(x, axis=axis, keepdims=True)
  p = jnp.exp(x - lse)
  return jnp.squeeze(lse, axis) - jnp.sum(p * x, axis=axis)


def adaptive_kl_coef(coef: Array, observed_kl: Array, *, target: float, horizon: int,
                     n_steps: int) -> Array:
  """Adaptive KL controller (Ziegler et al., 2019, arXiv 1909.08593):

    coef <- coef * (1 + clip(KL / target - 1, -0.2, 0.2) * n_steps / horizon)
  """
  error = jnp.clip(observed_kl / target - 1.0, -0.2, 0.2)
  return coef * (1.0 + error * n_steps / horizon)
