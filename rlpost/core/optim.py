"""Optimizers as optax GradientTransformations.

Sections (each owned separately; keep them as self-contained blocks):
  1. Variance-reduced policy-gradient momentum: N-PG-IGT and (N)-HARPG.
  2. (reserved) SNR-adaptive learning rates (``oblr_scale``), added separately.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Tuple, Union

import chex
import jax
import jax.numpy as jnp
import optax

# =====================================================================================
# Section 1: N-PG-IGT and (N)-HARPG.
#
# Paper: I. Fatkhullin, A. Barakat, A. Kireeva, N. He, "Stochastic Policy Gradient Methods:
# Improved Sample Complexity for Fisher-non-degenerate Policies", ICML 2023, arXiv 2302.01734.
#
# Conventions. optax minimises, so ``grads`` are gradients of a *loss* (for policy gradients
# the loss is -J, i.e. minus the REINFORCE/GPOMDP surrogate). The paper writes ascent on J; the
# two are identical up to the sign of the gradient. Step sizes: ``learning_rate`` is the paper's
# gamma_t, ``momentum`` is the paper's eta_t (weight of the *new* gradient, 1 = no momentum).
# Both accept an optax schedule of the step count t = 0, 1, ...; no official code exists and the
# theorems' constants are not reproduced, so the defaults are the spec's inferred exponents.
# =====================================================================================

ScalarOrSchedule = Union[float, jax.Array, Callable[[jax.Array], jax.Array]]


def _as_schedule(value: ScalarOrSchedule) -> Callable[[jax.Array], jax.Array]:
  if callable(value):
    return value
  return lambda count: jnp.asarray(value, jnp.float32)


def igt_momentum_schedule(count: jax.Array) -> jax.Array:
  """eta_t = (2 / (t + 2))^{4/5}: the N-PG-IGT momentum decay (eta_0 = 1). Inferred exponent."""
  return (2.0 / (jnp.asarray(count, jnp.float32) + 2.0)) ** 0.8


def harpg_momentum_schedule(count: jax.Array) -> jax.Array:
  """eta_t = 2 / (t + 2): the (N)-HARPG momentum decay (eta_0 = 1)."""
  return 2.0 / (jnp.asarray(count, jnp.float32) + 2.0)


def _first_step_eta(count, eta_fn):
  """eta_t, forced to 1 at t = 0 so that d_0 = g_0 (the paper's d_0 is a plain gradient)."""
  return jnp.where(count == 0, 1.0, eta_fn(count))


def _normalized_step(direction, learning_rate, normalize: bool, eps: float):
  """-lr * d / ||d|| (global norm) or -lr * d; a zero direction gives a zero step."""
  if normalize:
    norm = optax.global_norm(direction)
    scale = -learning_rate / jnp.maximum(norm, eps)
  else:
    scale = -learning_rate
  return jax.tree.map(lambda d: scale * d, direction)


class IGTState(NamedTuple):
  """State of :func:`npg_igt`.

  ``params`` is the true iterate theta_t and ``prev_params`` is theta_{t-1}; the parameters the
  caller holds are the extrapolated point theta~_t (see :func:`npg_igt`).
  """
  count: chex.Array
  params: Any
  prev_params: Any
  momentum: Any


def igt_extrapolate(params, prev_params, eta) -> Any:
  """theta~ = theta + ((1 - eta) / eta) * (theta - theta_prev)  (implicit gradient transport)."""
  coef = (1.0 - eta) / jnp.maximum(eta, 1e-12)
  return jax.tree.map(lambda p, q: p + coef * (p - q), params, prev_params)


def npg_igt(
    learning_rate: ScalarOrSchedule,
    *,
    momentum: ScalarOrSchedule = igt_momentum_schedule,
    normalize: bool = True,
    eps: float = 1e-12,
) -> optax.GradientTransformation:
  """Normalised momentum with implicit gradient transport (N-PG-IGT).

  Fatkhullin et al., ICML 2023 (arXiv 2302.01734), Algorithm N-PG-IGT:
    theta~_t = theta_t + ((1 - eta_t) / eta_t) (theta_t - theta_{t-1})
    d_t      = (1 - eta_t) d_{t-1} + eta_t g(tau_t, theta~_t),     tau_t ~ pi_{theta~_t}
    theta_{t+1} = theta_t - gamma_t d_t / ||d_t||                  (descent on the loss)

  API design: the parameters the caller holds (and feeds to the loss) are the *extrapolated*
  point theta~_t, so ``grads`` passed to ``update`` are g(., theta~_t) as the method requires and
  the transform chains like any optax optimizer. The true iterate theta_t lives in the state; read
  it with :func:`igt_params` for evaluation. The returned update moves theta~_t to theta~_{t+1}.
  At t = 0, theta_{-1} = theta_0 (no extrapolation) and eta_0 is forced to 1 so d_0 = g_0.
  With exact gradients of a quadratic, d_t = grad f(theta_t) exactly: extrapolation transports
  the old gradients to the current point, removing the lag of plain momentum.

  Args:
    learning_rate: gamma_t, float or optax schedule of the step count.
    momentum: eta_t in (0, 1], float or schedule; default (2/(t+2))^{4/5} (inferred from the spec).
    normalize: True for the normalised step (N-PG-IGT); False gives plain IGT momentum.
    eps: floor on ||d_t|| in the normalisation.

  Returns:
    An optax GradientTransformation.
  """
  lr_fn = _as_schedule(learning_rate)
  eta_fn = _as_schedule(momentum)

  def init_fn(params):
    return IGTState(
        count=jnp.zeros([], jnp.int32),
        params=params,
        prev_params=params,
        momentum=jax.tree.map(jnp.zeros_like, params))

  def update_fn(grads, state, params=None):
    del params  # theta~_t is recomputed from the state.
    count = state.count
    eta = _first_step_eta(count, eta_fn)
    extrapolated = igt_extrapolate(state.params, state.prev_params, eta)
    direction = jax.tree.map(lambda d, g: (1.0 - eta) * d + eta * g, state.momentum, grads)
    step = _normalized_step(direction, lr_fn(count), normalize, eps)
    new_params = jax.tree.map(lambda p, s: p + s, state.params, step)
    next_extrapolated = igt_extrapolate(new_params, state.params, eta_fn(count + 1))
    updates = jax.tree.map(lambda a, b: a - b, next_extrapolated, extrapolated)
    new_state = IGTState(
        count=count + 1, params=new_params, prev_params=state.params, momentum=direction)
    return updates, new_state

  return optax.GradientTransformation(init_fn, update_fn)


def igt_params(state: IGTState) -> Any:
  """The true N-PG-IGT iterate theta_t (the caller's params are the extrapolated theta~_t)."""
  return state.params


class HARPGState(NamedTuple):
  """State of :func:`harpg`: step count, theta_{t-1} and the recursive momentum d_{t-1}."""
  count: chex.Array
  prev_params: Any
  momentum: Any


def harpg_interpolation(params, state: HARPGState, key: chex.PRNGKey) -> Tuple[Any, Any]:
  """Random interpolation point and direction for the HARPG correction.

  q ~ U(0, 1);  theta^ = q theta_t + (1 - q) theta_{t-1};  u = theta_t - theta_{t-1}.
  The caller samples tau^ ~ pi_{theta^} and passes B(tau^, theta^) u as ``hvp`` to ``update``
  (see :func:`policy_hessian_vector_product`).

  Returns:
    (theta^, u), both pytrees shaped like ``params``.
  """
  q = jax.random.uniform(key, [])
  point = jax.tree.map(lambda p, r: q * p + (1.0 - q) * r, params, state.prev_params)
  direction = jax.tree.map(lambda p, r: p - r, params, state.prev_params)
  return point, direction


def harpg(
    learning_rate: ScalarOrSchedule,
    *,
    momentum: ScalarOrSchedule = harpg_momentum_schedule,
    normalize: bool = True,
    eps: float = 1e-12,
) -> optax.GradientTransformationExtraArgs:
  """(N)-HARPG: Hessian-aided recursive policy-gradient momentum.

  Fatkhullin et al., ICML 2023 (arXiv 2302.01734), Algorithm (N)-HARPG:
    q_t ~ U(0,1),  theta^_t = q_t theta_t + (1 - q_t) theta_{t-1}
    v_t = B(tau^_t, theta^_t) (theta_t - theta_{t-1}),  B = g grad log p^T + Hess Phi
    d_t = (1 - eta_t)(d_{t-1} + v_t) + eta_t g(tau_t, theta_t)
    theta_{t+1} = theta_t - gamma_t d_t / ||d_t||   (N-HARPG)  or  theta_t - gamma_t d_t (HARPG)

  API: ``update(grads, state, params, *, hvp)``. ``params`` (theta_t) is required; ``hvp`` is
  the pytree v_t, the (stochastic) Hessian-vector product of the *same loss* whose gradient is
  ``grads``, taken at the point and along the direction from :func:`harpg_interpolation` with the
  same ``state`` (at t = 0 the direction is zero, so the product is zero). Omitting ``hvp``
  (None) drops the correction, giving normalised momentum (N-MPG), the baseline. With exact
  gradients and eta = 1 it is (normalised) gradient descent.

  Args:
    learning_rate: gamma_t, float or optax schedule.
    momentum: eta_t in (0, 1], float or schedule; default 2/(t+2); eta_0 is forced to 1.
    normalize: True for N-HARPG, False for HARPG.
    eps: floor on ||d_t||.

  Returns:
    An optax GradientTransformationExtraArgs.
  """
  lr_fn = _as_schedule(learning_rate)
  eta_fn = _as_schedule(momentum)

  def init_fn(params):
    return HARPGState(
        count=jnp.zeros([], jnp.int32),
        prev_params=params,
        momentum=jax.tree.map(jnp.zeros_like, params))

  def update_fn(grads, state, params=None, *, hvp=None, **extra_args):
    del extra_args
    if params is None:
      raise ValueError("harpg.update needs params (theta_t).")
    count = state.count
    eta = _first_step_eta(count, eta_fn)
    carried = state.momentum if hvp is None else jax.tree.map(
        lambda d, v: d + v, state.momentum, hvp)
    direction = jax.tree.map(lambda c, g: (1.0 - eta) * c + eta * g, carried, grads)
    updates = _normalized_step(direction, lr_fn(count), normalize, eps)
    return updates, HARPGState(count=count + 1, prev_params=params, momentum=direction)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def normalized_momentum(
    learning_rate: ScalarOrSchedule,
    *,
    momentum: ScalarOrSchedule = harpg_momentum_schedule,
    eps: float = 1e-12,
) -> optax.GradientTransformationExtraArgs:
  """Normalised momentum (N-MPG): HARPG without the Hessian correction (baseline).

  d_t = (1 - eta_t) d_{t-1} + eta_t g_t;  theta_{t+1} = theta_t - gamma_t d_t / ||d_t||.
  """
  inner = harpg(learning_rate, momentum=momentum, normalize=True, eps=eps)

  def update_fn(grads, state, params=None, **extra_args):
    del extra_args
    if params is None:
      params = state.prev_params
    return inner.update(grads, state, params, hvp=None)

  return optax.GradientTransformationExtraArgs(inner.init, update_fn)


def hessian_vector_product(loss_fn: Callable[[Any], jax.Array], params, vector) -> Any:
  """Forward-over-reverse HVP: Hess loss(params) @ vector = jvp(grad loss, params; vector)."""
  return jax.jvp(jax.grad(loss_fn), (params,), (vector,))[1]


def policy_hessian_vector_product(
    surrogate_fn: Callable[[Any], jax.Array],
    logp_fn: Callable[[Any], jax.Array],
    params,
    vector,
) -> Any:
  """Unbiased policy-Hessian-vector product B(tau, theta) u averaged over a batch of trajectories.

  Fatkhullin et al. (arXiv 2302.01734), HARPG correction:
    B(tau, theta) u = g(tau, theta) (grad log p(tau|theta) . u) + Hess Phi(tau, theta) u,
  where Phi is the per-trajectory surrogate with grad Phi = g (REINFORCE/GPOMDP; returns held
  fixed) and log p(tau|theta) = sum_t log pi(a_t|s_t). E_tau[B u] = Hess J(theta) u. No importance
  sampling. One jvp gives all directional derivatives (grad log p_i . u); the first term is then
  the gradient of mean_i sg(grad log p_i . u) Phi_i, and the second a forward-over-reverse HVP.

  Args:
    surrogate_fn: params -> Phi_i per trajectory, shape [N] (a loss, e.g. -J surrogate, or a
      reward surrogate; B follows its sign).
    logp_fn: params -> log p(tau_i | theta) per trajectory, shape [N].
    params: theta (pytree).
    vector: u (pytree like params).

  Returns:
    (1/N) sum_i B(tau_i, theta) u, a pytree like params.
  """
  _, dlogp = jax.jvp(logp_fn, (params,), (vector,))
  dlogp = jax.lax.stop_gradient(dlogp)
  score_term = jax.grad(lambda p: jnp.mean(surrogate_fn(p) * dlogp))(params)
  curvature_term = hessian_vector_product(lambda p: jnp.mean(surrogate_fn(p)), params, vector)
  return jax.tree.map(lambda a, b: a + b, score_term, curvature_term)

# ==================================== end of Section 1 ================================


# --- OBLR-PO ---
# SNR-adaptive learning-rate scaling. Paper: "OBLR-PO: Optimal Baseline and Learning-Rate Policy
# Optimization", 2025, arXiv 2511.23310 (abstract only; no official code). Our reading, labelled
# inferred: the step size follows the gradient signal-to-noise ratio,
#   eta_t = eta_0 * clip(SNR_t / snr_ref, min_scale, max_scale),
#   SNR = ||E g||^2 / E||g - E g||^2,
# estimated either from per-sample gradients of the current batch (`gradient_snr`, passed to the
# transform as the extra argument `snr=`) or, by default, from bias-corrected exponential moving
# averages of the mini-batch gradient across steps (first and second moments, like Adam's).


class OblrScaleState(NamedTuple):
  """State of `oblr_scale`: step count, EMAs of g and g^2, and the last SNR and scale."""

  count: jax.Array
  grad_mean: Any
  grad_sq: Any
  snr: jax.Array
  scale: jax.Array


def gradient_snr(per_sample_grads: Any, eps: float = 1e-12) -> jax.Array:
  """SNR = ||mean_i g_i||^2 / mean_i ||g_i - mean g||^2 over a pytree of `[N, ...]` leaves.

  Invariant to rescaling all gradients by a constant. Zero noise gives +inf (pure signal).
  """
  leaves = jax.tree.leaves(per_sample_grads)
  mean = [jnp.mean(x, axis=0) for x in leaves]
  signal = sum(jnp.sum(jnp.square(m)) for m in mean)
  noise = sum(jnp.sum(jnp.square(x - m[None])) / x.shape[0] for x, m in zip(leaves, mean))
  return jnp.where(noise > eps * jnp.maximum(signal, 1.0), signal / jnp.maximum(noise, eps),
                   jnp.inf)


def oblr_scale(
    *,
    snr_ref: float = 1.0,
    min_scale: float = 0.1,
    max_scale: float = 10.0,
    decay: float = 0.9,
    eps: float = 1e-12,
    rtol: float = 1e-6,
) -> optax.GradientTransformationExtraArgs:
  """Scales updates by clip(SNR / snr_ref, min_scale, max_scale) (OBLR-PO's adaptive lr, inferred).

  Chain it last, e.g. `optax.chain(optax.adam(lr), oblr_scale())`: the optimizer's learning rate is
  eta_0 and this transform multiplies the final step by the SNR factor (placed before Adam, the
  factor would be normalised away). The EMA estimator then sees the preceding transform's output.
  Call `update(updates, state, params, snr=gradient_snr(per_sample_grads))` to use a per-batch SNR;
  without `snr` the SNR comes from EMAs (rate `decay`) of the incoming gradients across steps. When
  no noise estimate exists yet (first step, or zero variance) the scale is 1.

  Args:
    snr_ref: the SNR at which the learning rate is eta_0.
    min_scale, max_scale: eta_min / eta_0 and eta_max / eta_0.
    decay: EMA rate of the cross-step estimator.
    eps: numerical floor.
    rtol: EMA noise below rtol * signal counts as "no noise estimate" (scale 1).

  Returns:
    An optax GradientTransformationExtraArgs.
  """
  if not 0 < min_scale <= max_scale:
    raise ValueError(f"oblr_scale needs 0 < min_scale <= max_scale; got {min_scale}, {max_scale}")
  if snr_ref <= 0:
    raise ValueError(f"oblr_scale snr_ref must be > 0; got {snr_ref}")
  if not 0.0 <= decay < 1.0:
    raise ValueError(f"oblr_scale decay must be in [0, 1); got {decay}")

  def init_fn(params):
    zeros = lambda: jax.tree.map(lambda p: jnp.zeros_like(p, jnp.float32), params)
    # Two distinct trees: a state that aliases one buffer twice cannot be donated to a jit.
    return OblrScaleState(count=jnp.zeros((), jnp.int32), grad_mean=zeros(), grad_sq=zeros(),
                          snr=jnp.zeros((), jnp.float32), scale=jnp.ones((), jnp.float32))

  def update_fn(updates, state, params=None, *, snr=None, **extra_args):
    del params, extra_args
    count = state.count + 1
    g_mean = jax.tree.map(lambda m, g: decay * m + (1.0 - decay) * g, state.grad_mean, updates)
    g_sq = jax.tree.map(lambda s, g: decay * s + (1.0 - decay) * jnp.square(g), state.grad_sq,
                        updates)
    if snr is None:
      corr = 1.0 - decay ** count.astype(jnp.float32)
      signal = sum(jnp.sum(jnp.square(m / corr)) for m in jax.tree.leaves(g_mean))
      noise = sum(jnp.sum(jnp.maximum(s / corr - jnp.square(m / corr), 0.0))
                  for m, s in zip(jax.tree.leaves(g_mean), jax.tree.leaves(g_sq)))
      # One gradient carries no variance information: the EMA estimate starts at step 2.
      has_noise = (count > 1) & (noise > rtol * signal) & (noise > eps)
      snr_t = jnp.where(has_noise, signal / jnp.maximum(noise, eps), jnp.inf)
    else:
      snr_t = jnp.asarray(snr, jnp.float32)
      has_noise = jnp.isfinite(snr_t)
    scale = jnp.where(has_noise, jnp.clip(snr_t / snr_ref, min_scale, max_scale), 1.0)
    new_updates = jax.tree.map(lambda g: g * scale.astype(g.dtype), updates)
    return new_updates, OblrScaleState(count=count, grad_mean=g_mean, grad_sq=g_sq,
                                       snr=snr_t.astype(jnp.float32), scale=scale)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)

# ==================================== end of OBLR-PO ==================================
