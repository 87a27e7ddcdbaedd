"""TD3 and TD3+BC on optax, with a jitted update and a `lax.scan` offline training loop.

TD3: Fujimoto, van Hoof, Meger, "Addressing Function Approximation Error in Actor-Critic
Methods", ICML 2018, arXiv 1802.09477. Twin critics, target policy smoothing, delayed actor:

  y = r + gamma * (1 - d) * min_k Q'_k(s', clip(pi'(s') + clip(eps, -c, c), -a_max, a_max)),
  eps ~ N(0, (sigma * a_max)^2), c = noise_clip * a_max;
  L_critic = sum_k (Q_k(s, a) - y)^2;  L_actor = -Q_1(s, pi(s))  every `policy_freq` steps.

TD3+BC: Fujimoto & Gu, "A Minimalist Approach to Offline Reinforcement Learning", NeurIPS 2021,
arXiv 2106.06860:

  L_actor = -lambda * Q_1(s, pi(s)) + mean_j (pi(s)_j - a_j)^2,  lambda = alpha / sg(mean_B |Q_1|),

with alpha = 2.5 and states normalised by the dataset mean/std (done by the caller, see
`rlpost.offline.datasets.OfflineDataset.normalization`). PRDC (`rlpost.offline.prdc`) reuses
the same actor loss with the nearest-neighbour dataset action as the reference action.

All losses return unreduced per-sample values; the update reduces them with an explicit mean.
"""
import dataclasses
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import optax

from rlpost.offline.networks import DeterministicActor
from rlpost.offline.networks import TwinCritic

Array = jax.Array
Params = Any
ACTOR_LOSSES = ("td3", "td3_bc", "prdc")


@dataclasses.dataclass(frozen=True)
class TD3Config:
  """TD3 / TD3+BC hyperparameters (paper defaults); validated on construction."""
  discount: float = 0.99
  tau: float = 0.005
  policy_noise: float = 0.2
  noise_clip: float = 0.5
  policy_freq: int = 2
  actor_lr: float = 3e-4
  critic_lr: float = 3e-4
  batch_size: int = 256
  hidden_sizes: Sequence[int] = (256, 256)
  actor_loss: str = "td3_bc"
  alpha: float = 2.5

  def __post_init__(self):
    if self.actor_loss not in ACTOR_LOSSES:
      raise ValueError(f"actor_loss must be one of {ACTOR_LOSSES}, got {self.actor_loss!r}")
    if not 0.0 <= self.discount <= 1.0:
      raise ValueError(f"discount must be in [0, 1], got {self.discount}")
    if not 0.0 < self.tau <= 1.0:
      raise ValueError(f"tau must be in (0, 1], got {self.tau}")
    if self.policy_freq < 1:
      raise ValueError(f"policy_freq must be >= 1, got {self.policy_freq}")
    if self.batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
    if self.alpha < 0:
      raise ValueError(f"alpha must be >= 0, got {self.alpha}")


class TD3State(NamedTuple):
  actor_params: Params
  critic_params: Params
  actor_target_params: Params
  critic_target_params: Params
  actor_opt_state: Any
  critic_opt_state: Any
  step: Array


# ------------------------------------------------------------------------------------- losses


def td3_target(r_t: Array, discount_t: Array, q_next: Array) -> Array:
  """Clipped double-Q target `y = r_t + discount_t * min_k q_next[k]`; q_next is `[2, B]`."""
  return r_t + discount_t * jnp.min(q_next, axis=0)


def td3_critic_loss_per_sample(q_tm1: Array, target: Array) -> Array:
  """`sum_k (Q_k(s, a) - sg(y))^2` per sample; `q_tm1` is `[2, B]`, returns `[B]`."""
  return jnp.sum(jnp.square(q_tm1 - jax.lax.stop_gradient(target)[None]), axis=0)


def td3_actor_loss_per_sample(q: Array) -> Array:
  """Plain TD3 actor loss `-Q_1(s, pi(s))` per sample."""
  return -q


def td3_bc_actor_loss_per_sample(q: Array, policy_action: Array, reference_action: Array, *,
                                 alpha: float = 2.5) -> tuple[Array, dict[str, Array]]:
  """TD3+BC actor loss per sample (arXiv 2106.06860, Eq. 3).

  `-lambda * q_i + mean_j (pi(s_i)_j - a_ref_ij)^2` with `lambda = alpha / sg(mean_i |q_i|)`.
  The batch statistic lambda makes the value term scale-free; 1e-8 guards an all-zero Q batch.

  Args:
    q: `[B]` Q_1(s, pi(s)).
    policy_action: `[B, A]` pi(s).
    reference_action: `[B, A]` dataset action (TD3+BC) or its nearest neighbour (PRDC).
    alpha: trade-off; alpha=0 gives pure behaviour cloning.
  Returns:
    `(loss [B], aux)` with aux keys `lambda` and `bc_mse` (`[B]`).
  """
  lam = alpha / (jax.lax.stop_gradient(jnp.mean(jnp.abs(q))) + 1e-8)
  bc = jnp.mean(jnp.square(policy_action - jax.lax.stop_gradient(reference_action)), axis=-1)
  return -lam * q + bc, {"lambda": lam, "bc_mse": bc}


# ------------------------------------------------------------------------------------- agent


class TD3Agent(NamedTuple):
  """Networks, optimizers and config; `init`/`update` are the pure entry points."""
  actor: DeterministicActor
  critic: TwinCritic
  actor_optimizer: optax.GradientTransformation
  critic_optimizer: optax.GradientTransformation
  config: TD3Config
  max_action: float


def make_td3_agent(*, observation_size: int, action_size: int, max_action: float,
                   config: TD3Config = TD3Config()) -> TD3Agent:
  del observation_size
  return TD3Agent(
      actor=DeterministicActor(action_size, max_action, tuple(config.hidden_sizes)),
      critic=TwinCritic(tuple(config.hidden_sizes)),
      actor_optimizer=optax.adam(config.actor_lr),
      critic_optimizer=optax.adam(config.critic_lr),
      config=config, max_action=max_action)


def init_td3_state(agent: TD3Agent, key: Array, observation_size: int) -> TD3State:
  k_actor, k_critic = jax.random.split(key)
  obs = jnp.zeros((1, observation_size))
  action_size = agent.actor.action_size
  actor_params = agent.actor.init(k_actor, obs)
  critic_params = agent.critic.init(k_critic, obs, jnp.zeros((1, action_size)))
  return TD3State(actor_params=actor_params, critic_params=critic_params,
                  actor_target_params=actor_params, critic_target_params=critic_params,
                  actor_opt_state=agent.actor_optimizer.init(actor_params),
                  critic_opt_state=agent.critic_optimizer.init(critic_params),
                  step=jnp.zeros((), jnp.int32))


# (batch, policy_action, extra) -> reference action for the BC term.
ReferenceFn = Callable[[dict[str, Array], Array, Any], Array]


def dataset_action_reference(batch, policy_action, extra):
  del policy_action, extra
  return batch["actions"]


def td3_update(agent: TD3Agent, state: TD3State, batch: dict[str, Array], key: Array,
               extra: Any = None, reference_fn: ReferenceFn = dataset_action_reference
               ) -> tuple[TD3State, dict[str, Array]]:
  """One TD3 / TD3+BC / PRDC gradient step (pure; jit it or scan it).

  `batch` holds `observations, actions, rewards, next_observations, terminals` (`[B, ...]`).
  The actor and the target networks move every `policy_freq` critic steps (`lax.cond`).
  """
  cfg = agent.config
  s, a, r = batch["observations"], batch["actions"], batch["rewards"]
  s_next, done = batch["next_observations"], batch["terminals"].astype(jnp.float32)

  noise = jnp.clip(cfg.policy_noise * agent.max_action * jax.random.normal(key, a.shape),
                   -cfg.noise_clip * agent.max_action, cfg.noise_clip * agent.max_action)
  a_next = jnp.clip(agent.actor.apply(state.actor_target_params, s_next) + noise,
                    -agent.max_action, agent.max_action)
  q_next = agent.critic.apply(state.critic_target_params, s_next, a_next)
  target = td3_target(r, cfg.discount * (1.0 - done), q_next)

  def critic_loss_fn(critic_params):
    q = agent.critic.apply(critic_params, s, a)
    return jnp.mean(td3_critic_loss_per_sample(q, target)), q

  (critic_loss, q_data), critic_grads = jax.value_and_grad(critic_loss_fn, has_aux=True)(
      state.critic_params)
  updates, critic_opt_state = agent.critic_optimizer.update(critic_grads, state.critic_opt_state,
                                                            state.critic_params)
  critic_params = optax.apply_updates(state.critic_params, updates)

  def actor_loss_fn(actor_params):
    pi = agent.actor.apply(actor_params, s)
    q1 = agent.critic.apply(critic_params, s, pi)[0]
    if cfg.actor_loss == "td3":
      per_sample, bc = td3_actor_loss_per_sample(q1), jnp.zeros_like(q1)
    else:
      reference = reference_fn(batch, jax.lax.stop_gradient(pi), extra)
      per_sample, aux = td3_bc_actor_loss_per_sample(q1, pi, reference, alpha=cfg.alpha)
      bc = aux["bc_mse"]
    return jnp.mean(per_sample), jnp.mean(bc)

  def actor_step(operand):
    actor_params, actor_target, critic_target, opt_state = operand
    (loss, bc), grads = jax.value_and_grad(actor_loss_fn, has_aux=True)(actor_params)
    upd, opt_state = agent.actor_optimizer.update(grads, opt_state, actor_params)
    actor_params = optax.apply_updates(actor_params, upd)
    actor_target = optax.incremental_update(actor_params, actor_target, cfg.tau)
    critic_target = optax.incremental_update(critic_params, critic_target, cfg.tau)
    return (actor_params, actor_target, critic_target, opt_state), (loss, bc)

  def skip(operand):
    return operand, (jnp.zeros(()), jnp.zeros(()))

  operand = (state.actor_params, state.actor_target_params, state.critic_target_params,
             state.actor_opt_state)
  (actor_params, actor_target, critic_target, actor_opt_state), (actor_loss, bc) = jax.lax.cond(
      (state.step + 1) % cfg.policy_freq == 0, actor_step, skip, operand)
  new_state = TD3State(actor_params=actor_params, critic_params=critic_params,
                       actor_target_params=actor_target, critic_target_params=critic_target,
                       actor_opt_state=actor_opt_state, critic_opt_state=critic_opt_state,
                       step=state.step + 1)
  metrics = {"critic_loss": critic_loss, "actor_loss": actor_loss, "bc_mse": bc,
             "q_mean": jnp.mean(q_data)}
  return new_state, metrics


def make_offline_train_chunk(agent: TD3Agent, num_steps: int,
                             reference_fn: ReferenceFn = dataset_action_reference):
  """Returns jitted `chunk(state, data, key, extra) -> (state, mean metrics)`: `num_steps`
  minibatch updates (uniform sampling with replacement) as one `lax.scan`.

  `data` is a dict of `[N, ...]` arrays (normalised observations); it is an argument, not a
  closure constant, so one compilation serves every dataset of the same size.
  """
  batch_size = agent.config.batch_size

  def chunk(state, data, key, extra=None):
    n = data["observations"].shape[0]

    def body(state, step_key):
      idx_key, upd_key = jax.random.split(step_key)
      idx = jax.random.randint(idx_key, (batch_size,), 0, n)
      batch = jax.tree.map(lambda x: x[idx], data)
      return td3_update(agent, state, batch, upd_key, extra, reference_fn)

    state, metrics = jax.lax.scan(body, state, jax.random.split(key, num_steps))
    return state, jax.tree.map(jnp.mean, metrics)

  return jax.jit(chunk)


def make_policy_fn(agent: TD3Agent, actor_params: Params, obs_mean: Array, obs_std: Array,
                   *, noise_std: float = 0.0):
  """`policy(obs, key) -> action` in env units; observations are normalised inside.

  `noise_std` adds clipped Gaussian exploration noise (as a fraction of `max_action`).
  """
  def policy(obs, key):
    action = agent.actor.apply(actor_params, (obs - obs_mean) / obs_std)
    if noise_std > 0.0:
      action = action + noise_std * agent.max_action * jax.random.normal(key, action.shape)
    return jnp.clip(action, -agent.max_action, agent.max_action)
  return policy
