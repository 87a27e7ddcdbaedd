"""CDSA-style decision-time action correction with a denoising score model of the dataset.

Liu, Yang, Li, "Conservative Denoising Score-based Algorithm for Offline Reinforcement
Learning", 2024, arXiv 2406.07541. The paper keeps a pretrained offline policy frozen and, at
decision time, moves its action along the gradient of the dataset density estimated by a score
model trained with denoising score matching (DSM), so conservatism is decoupled from training.

This module (a reconstruction; only the abstract was available, see control_offline_meta.md
Sec. 7 and Sec. 16) models the conditional action density `p(a | s)` of the dataset in the
normalised action space `a / max_action`:

  DSM (noise-conditional, Song & Ermon 2019 weighting lambda(sigma) = sigma^2):
    L(phi) = E_{s,a,sigma,eps} || sigma * s_phi(s, a + sigma * eps, sigma) + eps ||^2,
    log sigma ~ U[log sigma_min, log sigma_max];
  correction (K steps from a_0 = pi_frozen(s), at the fixed noise level sigma_c):
    a_{k+1} = clip(a_k + eta * sigma_c^2 * s_phi(s, a_k, sigma_c), -1, 1).

With eta = 1 and K = 1 this is Tweedie's denoised action E[a | a_0] under the sigma_c-smoothed
data density; eta = 0 returns the frozen action exactly. Deviation: the spec's inferred variant
(score over next states plus an inverse dynamics model) is not used; the task asks for the
dataset action density, which needs no dynamics model.
"""
import dataclasses
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from rlpost.offline.networks import MLP

Array = jax.Array
Params = Any


@dataclasses.dataclass(frozen=True)
class CDSAConfig:
  sigma_min: float = 0.01
  sigma_max: float = 1.0
  correction_sigma: float = 0.1
  step_size: float = 1.0
  num_correction_steps: int = 1
  learning_rate: float = 1e-3
  batch_size: int = 256
  hidden_sizes: Sequence[int] = (256, 256)

  def __post_init__(self):
    if not 0.0 < self.sigma_min <= self.sigma_max:
      raise ValueError(f"need 0 < sigma_min <= sigma_max, got {self.sigma_min}, {self.sigma_max}")
    if self.correction_sigma <= 0:
      raise ValueError(f"correction_sigma must be > 0, got {self.correction_sigma}")
    if self.step_size < 0:
      raise ValueError(f"step_size must be >= 0, got {self.step_size}")
    if self.num_correction_steps < 0:
      raise ValueError(f"num_correction_steps must be >= 0, got {self.num_correction_steps}")


class ConditionalScore(nn.Module):
  """`s_phi(s, a, sigma) = F([s, a, log sigma]) / sigma` (the 1/sigma output scaling of NCSN)."""
  action_size: int
  hidden_sizes: Sequence[int] = (256, 256)

  @nn.compact
  def __call__(self, obs, action, sigma):
    sigma = jnp.broadcast_to(sigma, action.shape[:-1] + (1,))
    x = jnp.concatenate([obs, action, jnp.log(sigma)], axis=-1)
    return MLP(self.hidden_sizes, self.action_size)(x) / sigma


def dsm_loss_per_sample(score_fn, obs: Array, action: Array, key: Array, *,
                        sigma_min: float = 0.01, sigma_max: float = 1.0) -> Array:
  """Denoising score matching, sigma^2-weighted: `||sigma * s(s, a + sigma eps, sigma) + eps||^2`.

  Args:
    score_fn: `(obs [B, S], noisy_action [B, A], sigma [B, 1]) -> score [B, A]`.
    obs, action: `[B, S]`, `[B, A]` clean data.
    key: PRNG key for sigma and eps.
  Returns:
    `[B]` per-sample loss (unreduced).
  """
  k_sigma, k_eps = jax.random.split(key)
  log_sigma = jax.random.uniform(k_sigma, action.shape[:-1] + (1,),
                                 minval=jnp.log(sigma_min), maxval=jnp.log(sigma_max))
  sigma = jnp.exp(log_sigma)
  eps = jax.random.normal(k_eps, action.shape)
  score = score_fn(obs, action + sigma * eps, sigma)
  return jnp.sum(jnp.square(sigma * score + eps), axis=-1)


def correct_action(score_fn, obs: Array, action: Array, *, sigma: float = 0.1,
                   step_size: float = 1.0, num_steps: int = 1) -> Array:
  """`a <- clip(a + step_size * sigma^2 * s(s, a, sigma), -1, 1)`, `num_steps` times (normalised
  action units). step_size = 0 or num_steps = 0 returns `action` unchanged."""
  def body(a, _):
    a_new = a + step_size * sigma**2 * score_fn(obs, a, jnp.asarray(sigma, a.dtype))
    return jnp.clip(a_new, -1.0, 1.0), None
  if num_steps == 0:
    return action
  corrected, _ = jax.lax.scan(body, action, None, length=num_steps)
  return jnp.where(step_size == 0.0, action, corrected)


def train_score_model(data: dict[str, Array], key: Array, *, action_size: int, max_action: float,
                      num_steps: int, config: CDSAConfig = CDSAConfig()
                      ) -> tuple[ConditionalScore, Params, Array]:
  """Fits `ConditionalScore` on `(observations, actions / max_action)` with Adam.

  Returns `(model, params, loss curve [num_steps])`; one jitted `lax.scan`.
  """
  model = ConditionalScore(action_size, tuple(config.hidden_sizes))
  obs_all, act_all = data["observations"], data["actions"] / max_action
  init_key, key = jax.random.split(key)
  params = model.init(init_key, obs_all[:1], act_all[:1], jnp.ones((1, 1)))
  optimizer = optax.adam(config.learning_rate)

  @jax.jit
  def run(params, key):
    def body(carry, step_key):
      params, opt_state = carry
      idx_key, loss_key = jax.random.split(step_key)
      idx = jax.random.randint(idx_key, (config.batch_size,), 0, obs_all.shape[0])

      def loss_fn(p):
        score_fn = lambda o, a, s: model.apply(p, o, a, s)
        return jnp.mean(dsm_loss_per_sample(score_fn, obs_all[idx], act_all[idx], loss_key,
                                            sigma_min=config.sigma_min,
                                            sigma_max=config.sigma_max))

      loss, grads = jax.value_and_grad(loss_fn)(params)
      updates, opt_state = optimizer.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), loss

    (params, _), losses = jax.lax.scan(body, (params, optimizer.init(params)),
                                       jax.random.split(key, num_steps))
    return params, losses

  params, losses = run(params, key)
  return model, params, losses


def make_corrected_policy_fn(actor_apply, actor_params: Params, score_model: ConditionalScore,
                             score_params: Params, obs_mean: Array, obs_std: Array, *,
                             max_action: float, config: CDSAConfig = CDSAConfig()):
  """`policy(obs, key)`: frozen deterministic actor, then the score correction (env units)."""
  def policy(obs, key):
    del key
    obs_n = (obs - obs_mean) / obs_std
    a = actor_apply(actor_params, obs_n) / max_action
    score_fn = lambda o, x, s: score_model.apply(score_params, o, x, s)
    a = correct_action(score_fn, obs_n, a, sigma=config.correction_sigma,
                       step_size=config.step_size, num_steps=config.num_correction_steps)
    return max_action * a
  return policy
