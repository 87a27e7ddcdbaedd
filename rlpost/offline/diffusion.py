"""Policy-guided diffusion: EDM trajectory diffusion with target-policy guidance.

Jackson, Matthews, Lu, Ellis, Whiteson, Foerster, "Policy-Guided Diffusion", 2024,
arXiv 2404.06356. A diffusion model of dataset sub-trajectories `tau = [s_t, a_t, r_t]_{t<H}` is
sampled with the target policy's action log-likelihood gradient added to the action channels, so
samples follow roughly `p_behaviour(tau) * prod_t pi_target(a_t | s_t)^lambda`.

EDM (Karras et al. 2022, arXiv 2206.00364): `D(x; sigma) = c_skip x + c_out F(c_in x, c_noise)`
with `c_skip = sd^2/(sigma^2+sd^2)`, `c_out = sigma sd / sqrt(sigma^2+sd^2)`,
`c_in = 1/sqrt(sigma^2+sd^2)`, `c_noise = log(sigma)/4`; training loss
`lambda(sigma) ||D(x + sigma n; sigma) - x||^2`, `lambda = (sigma^2+sd^2)/(sigma sd)^2`,
`log sigma ~ N(P_mean, P_std^2)`; stochastic Heun sampler (Algorithm 2) with S_churn etc.

Guidance at step i of n (the paper's annealed schedule): before each Heun step,
  a <- a + lambda_i g,  lambda_i = coeff [(1 - i/n) + cosine_coeff sin(pi (i+1)/n)],
lambda_i = 0 for i < delay and at the last step; `g = grad_a sum_t log N(a_t; mu(s_t), I)` for a
deterministic target policy mu (the paper's "unit Gaussian around a deterministic action"),
optionally normalised per trajectory as `g / ||g|| + 1e-8` (the 1e-8 sits outside the division,
as in the official code). Only action channels move; coeff = 0 is bit-identical to unguided.

Deviations (CPU scale): an MLP denoiser over the flattened window instead of the U-Net,
horizon 16 instead of 32, tens of sampling steps instead of 256, no `done` channel (these envs
only time out), the guidance log-likelihood is taken on the noisy actions (no tanh squashing),
and synthetic data is generated once from a fixed target policy (TD3+BC trained on real data)
instead of being refreshed as the agent trains.
"""
from typing import Callable, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from rlpost.offline.networks import MLP

Array = jax.Array


class Windows(NamedTuple):
  """Normalised sub-trajectories `x [M, H, C]`, C = obs + action + reward channels."""
  x: np.ndarray
  mean: np.ndarray   # [C]; obs channels use the dataset's state normalisation
  std: np.ndarray    # [C]
  observation_size: int
  action_size: int


def trajectory_windows(ds, *, horizon: int = 16, stride: int = 8, max_action: float = 1.0
                       ) -> Windows:
  """Cuts `ds` (an `OfflineDataset` stored in episode order) into windows that do not cross an
  episode end; actions are scaled to [-1, 1] before per-channel standardisation."""
  obs_mean, obs_std = ds.normalization()
  feats = np.concatenate([ds.observations, ds.actions / max_action, ds.rewards[:, None]], axis=1)
  episode = np.concatenate([[0], np.cumsum(ds.terminals | ds.timeouts)[:-1]])
  starts = np.arange(0, ds.size - horizon + 1, stride)
  starts = starts[episode[starts] == episode[starts + horizon - 1]]
  if starts.size == 0:
    raise ValueError(f"no window of horizon {horizon} fits inside an episode")
  s, a = ds.observations.shape[1], ds.actions.shape[1]
  mean = np.concatenate([obs_mean, feats[:, s:].mean(0)])
  std = np.concatenate([obs_std, feats[:, s:].std(0) + 1e-3])
  x = (feats[starts[:, None] + np.arange(horizon)] - mean) / std
  return Windows(x.astype(np.float32), mean, std, s, a)


class Denoiser(nn.Module):
  """`F(c_in x, c_noise)`: an MLP over the flattened window plus the noise embedding."""
  hidden_sizes: Sequence[int] = (256, 256)

  @nn.compact
  def __call__(self, x, c_noise):
    batch, shape = x.shape[0], x.shape[1:]
    h = jnp.concatenate([x.reshape(batch, -1), c_noise.reshape(batch, 1)], axis=-1)
    return MLP(self.hidden_sizes, int(np.prod(shape)))(h).reshape(x.shape)


def edm_denoise(net_fn, x: Array, sigma: Array, *, sigma_data: float = 1.0) -> Array:
  """EDM-preconditioned denoiser `D(x; sigma)`; `sigma` broadcasts as `[B]`."""
  s = sigma.reshape((-1,) + (1,) * (x.ndim - 1))
  c_skip = sigma_data**2 / (s**2 + sigma_data**2)
  c_out = s * sigma_data / jnp.sqrt(s**2 + sigma_data**2)
  c_in = 1.0 / jnp.sqrt(s**2 + sigma_data**2)
  return c_skip * x + c_out * net_fn(c_in * x, jnp.log(sigma.reshape(-1)) / 4.0)


def edm_loss_per_sample(denoise_fn, x: Array, key: Array, *, p_mean: float = -1.2,
                        p_std: float = 1.2, sigma_data: float = 1.0) -> Array:
  """`lambda(sigma) * mean ||D(x + sigma n; sigma) - x||^2` per sample `[B]` (unreduced)."""
  k_sigma, k_noise = jax.random.split(key)
  sigma = jnp.exp(p_mean + p_std * jax.random.normal(k_sigma, (x.shape[0],)))
  weight = (sigma**2 + sigma_data**2) / (sigma * sigma_data)**2
  noisy = x + sigma.reshape((-1,) + (1,) * (x.ndim - 1)) * jax.random.normal(k_noise, x.shape)
  err = jnp.square(denoise_fn(noisy, sigma) - x)
  return weight * jnp.mean(err.reshape(x.shape[0], -1), axis=-1)


def guidance_schedule(num_steps: int, *, coeff: float, cosine_coeff: float = 0.3,
                      delay: int = 0) -> Array:
  """`lambda_i` for i = 0..n-1 (zero before `delay` and at the last step)."""
  i = jnp.arange(num_steps, dtype=jnp.float32)
  lam = coeff * ((1.0 - i / num_steps) + cosine_coeff * jnp.sin(jnp.pi * (i + 1) / num_steps))
  return jnp.where((i < delay) | (i == num_steps - 1), 0.0, lam)


def edm_sigma_steps(num_steps: int, *, sigma_min: float = 0.002, sigma_max: float = 80.0,
                    rho: float = 7.0) -> Array:
  """Karras time steps `t_0 > ... > t_{n-1}`, followed by `t_n = 0`."""
  i = jnp.arange(num_steps, dtype=jnp.float32)
  t = (sigma_max**(1 / rho) + i / max(num_steps - 1, 1)
       * (sigma_min**(1 / rho) - sigma_max**(1 / rho)))**rho
  return jnp.concatenate([t, jnp.zeros(1)])


def edm_sample(denoise_fn, shape: tuple[int, ...], key: Array, *, num_steps: int = 256,
               sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0,
               s_churn: float = 80.0, s_tmin: float = 0.05, s_tmax: float = 50.0,
               s_noise: float = 1.003, guidance_fn: Callable[[Array], Array] | None = None,
               guidance_coeff: float = 0.0, cosine_coeff: float = 0.3, guidance_delay: int = 0,
               normalize_guidance: bool = True) -> Array:
  """EDM stochastic Heun sampler (Karras et al. 2022, Alg. 2) with policy guidance.

  `guidance_fn(x) -> g` returns the log-likelihood gradient with zeros outside the action
  channels; it is added as `x + lambda_i g` before step i (see module docstring).
  """
  t = edm_sigma_steps(num_steps, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho)
  lam = guidance_schedule(num_steps, coeff=guidance_coeff, cosine_coeff=cosine_coeff,
                          delay=guidance_delay)
  gamma_max = min(s_churn / num_steps, np.sqrt(2.0) - 1.0)
  init_key, key = jax.random.split(key)
  x = jax.random.normal(init_key, shape) * t[0]
  batch = shape[0]

  def step(x, inputs):
    i, step_key = inputs
    t_cur, t_next, lam_i = t[i], t[i + 1], lam[i]
    if guidance_fn is not None:
      g = guidance_fn(x)
      if normalize_guidance:
        norm = jnp.sqrt(jnp.sum(jnp.square(g.reshape(batch, -1)), axis=-1))
        g = g / norm.reshape((-1,) + (1,) * (g.ndim - 1)) + 1e-8
      x = jnp.where(lam_i > 0, x + lam_i * g, x)
    gamma = jnp.where((t_cur >= s_tmin) & (t_cur <= s_tmax), gamma_max, 0.0)
    t_hat = t_cur * (1.0 + gamma)
    # sqrt(t_hat^2 - t_cur^2) written so fused rounding cannot make the radicand negative.
    churn_std = t_cur * jnp.sqrt(jnp.maximum((1.0 + gamma)**2 - 1.0, 0.0))
    x_hat = x + churn_std * s_noise * jax.random.normal(step_key, x.shape)
    d = (x_hat - denoise_fn(x_hat, jnp.full((batch,), t_hat))) / t_hat
    x_euler = x_hat + (t_next - t_hat) * d
    safe_next = jnp.maximum(t_next, 1e-12)
    d_next = (x_euler - denoise_fn(x_euler, jnp.full((batch,), safe_next))) / safe_next
    x_heun = x_hat + (t_next - t_hat) * (0.5 * d + 0.5 * d_next)
    return jnp.where(t_next > 0, x_heun, x_euler), None

  x, _ = jax.lax.scan(step, x, (jnp.arange(num_steps), jax.random.split(key, num_steps)))
  return x


class DiffusionModel(NamedTuple):
  net: Denoiser
  params: dict          # EMA parameters
  losses: list[float]
  sigma_data: float


def train_trajectory_diffusion(windows: Windows, key: Array, *, num_steps: int = 5_000,
                               batch_size: int = 32, learning_rate: float = 3e-4,
                               ema_decay: float = 0.995, sigma_data: float = 1.0,
                               hidden_sizes: Sequence[int] = (256, 256)) -> DiffusionModel:
  """Trains the EDM denoiser with Adam and keeps an EMA of its weights (one jitted scan)."""
  net = Denoiser(tuple(hidden_sizes))
  data = jnp.asarray(windows.x)
  init_key, key = jax.random.split(key)
  params = net.init(init_key, data[:1], jnp.zeros((1,)))
  optimizer = optax.adam(learning_rate)

  @jax.jit
  def run(params, key):
    def body(carry, step_key):
      params, ema, opt_state = carry
      idx_key, loss_key = jax.random.split(step_key)
      x = data[jax.random.randint(idx_key, (batch_size,), 0, data.shape[0])]

      def loss_fn(p):
        denoise = lambda y, s: edm_denoise(lambda a, c: net.apply(p, a, c), y, s,
                                           sigma_data=sigma_data)
        return jnp.mean(edm_loss_per_sample(denoise, x, loss_key, sigma_data=sigma_data))

      loss, grads = jax.value_and_grad(loss_fn)(params)
      updates, opt_state = optimizer.update(grads, opt_state, params)
      params = optax.apply_updates(params, updates)
      ema = optax.incremental_update(params, ema, 1.0 - ema_decay)
      return (params, ema, opt_state), loss

    (_, ema, _), losses = jax.lax.scan(body, (params, params, optimizer.init(params)),
                                       jax.random.split(key, num_steps))
    return ema, losses

  ema, losses = run(params, key)
  losses = np.asarray(losses)
  chunks = np.array_split(losses, min(20, len(losses)))
  return DiffusionModel(net, ema, [float(c.mean()) for c in chunks], sigma_data)


def policy_guidance_fn(windows: Windows, target_mean_fn: Callable[[Array], Array]):
  """`g(x) = grad_x sum_t log N(a_t; mu(s_t), I)` on the action channels only.

  `target_mean_fn(obs_normalised) -> action in [-1, 1]`; states are read from the window
  (already in the agent's normalisation) and held fixed.
  """
  s, a = windows.observation_size, windows.action_size
  a_mean, a_std = jnp.asarray(windows.mean[s:s + a]), jnp.asarray(windows.std[s:s + a])

  def log_likelihood(x_action, obs):
    action = x_action * a_std + a_mean
    return -0.5 * jnp.sum(jnp.square(action - jax.lax.stop_gradient(target_mean_fn(obs))))

  def guidance(x):
    g_action = jax.grad(log_likelihood)(x[..., s:s + a], x[..., :s])
    return jnp.zeros_like(x).at[..., s:s + a].set(g_action)
  return guidance


def sample_transitions(model: DiffusionModel, windows: Windows, key: Array, *,
                       num_trajectories: int, num_sampling_steps: int = 32,
                       guidance_coeff: float = 0.0, target_mean_fn=None, max_action: float = 1.0,
                       cosine_coeff: float = 0.3) -> dict[str, Array]:
  """Samples windows and flattens them to transitions `(s_t, a_t, r_t, s_{t+1})`, t < H-1, in the
  format of `OfflineDataset.as_arrays(normalize=True)` (a drop-in for TD3+BC / PRDC data)."""
  s, a = windows.observation_size, windows.action_size
  shape = (num_trajectories,) + windows.x.shape[1:]
  denoise = lambda y, sig: edm_denoise(lambda z, c: model.net.apply(model.params, z, c), y, sig,
                                       sigma_data=model.sigma_data)
  guidance = (policy_guidance_fn(windows, target_mean_fn)
              if target_mean_fn is not None and guidance_coeff > 0 else None)
  x = jax.jit(lambda k: edm_sample(denoise, shape, k, num_steps=num_sampling_steps,
                                   guidance_fn=guidance, guidance_coeff=guidance_coeff,
                                   cosine_coeff=cosine_coeff))(key)
  mean, std = jnp.asarray(windows.mean), jnp.asarray(windows.std)
  obs = x[..., :s]  # already normalised like the agent's states
  actions = jnp.clip(x[..., s:s + a] * std[s:s + a] + mean[s:s + a], -1.0, 1.0) * max_action
  rewards = x[..., s + a] * std[s + a] + mean[s + a]
  flat = lambda y: y.reshape((-1,) + y.shape[2:])
  return {"observations": flat(obs[:, :-1]), "actions": flat(actions[:, :-1]),
          "rewards": flat(rewards[:, :-1]), "next_observations": flat(obs[:, 1:]),
          "terminals": jnp.zeros(num_trajectories * (shape[1] - 1))}
