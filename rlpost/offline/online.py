"""Online TD3 on a JAX env with a replay buffer: trains the behaviour policies for the datasets.

This is the D4RL recipe's "train an online agent, keep checkpoints and its replay buffer" step
(Fu et al., "D4RL: Datasets for Deep Data-Driven Reinforcement Learning", 2020, arXiv 2004.07219),
with TD3 (arXiv 1802.09477) in place of SAC. Each chunk of `eval_every` env steps is one jitted
`lax.scan` (act with Gaussian exploration noise, store the transition, one TD3 update once
`learning_starts` transitions are stored); between chunks the deterministic policy is evaluated
and its parameters are kept as a snapshot.
"""
import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from rlpost.offline import envs
from rlpost.offline import td3

Array = jax.Array
BUFFER_KEYS = ("observations", "actions", "rewards", "next_observations", "terminals",
               "timeouts")


@dataclasses.dataclass(frozen=True)
class OnlineConfig:
  total_steps: int = 30_000
  learning_starts: int = 1_000
  exploration_noise: float = 0.1
  eval_every: int = 1_000
  eval_episodes: int = 10
  hidden_sizes: tuple[int, ...] = (256, 256)

  def __post_init__(self):
    if self.total_steps < self.eval_every or self.total_steps % self.eval_every:
      raise ValueError(f"total_steps ({self.total_steps}) must be a positive multiple of "
                       f"eval_every ({self.eval_every})")
    if self.learning_starts < 1:
      raise ValueError(f"learning_starts must be >= 1, got {self.learning_starts}")
    if self.exploration_noise < 0:
      raise ValueError(f"exploration_noise must be >= 0, got {self.exploration_noise}")


@dataclasses.dataclass
class OnlineResult:
  agent: td3.TD3Agent
  snapshots: list[dict[str, Any]]  # {"env_steps", "eval_return", "actor_params"}
  buffer: dict[str, np.ndarray]    # every stored transition, in collection order


def train_online_td3(spec: envs.EnvSpec, key: Array, config: OnlineConfig = OnlineConfig(),
                     progress: bool = False,
                     log_fn: Callable[[dict], None] | None = None) -> OnlineResult:
  """Trains TD3 online on `spec`; returns snapshots after every chunk and the replay buffer."""
  agent = td3.make_td3_agent(observation_size=spec.observation_size,
                             action_size=spec.action_size, max_action=spec.max_action,
                             config=td3.TD3Config(actor_loss="td3",
                                                  hidden_sizes=config.hidden_sizes))
  env, params = spec.env, spec.params
  capacity = config.total_steps
  key, init_key, reset_key = jax.random.split(key, 3)
  state = td3.init_td3_state(agent, init_key, spec.observation_size)
  obs, env_state = env.reset(reset_key, params)
  buffer = {
      "observations": jnp.zeros((capacity, spec.observation_size)),
      "actions": jnp.zeros((capacity, spec.action_size)),
      "rewards": jnp.zeros((capacity,)),
      "next_observations": jnp.zeros((capacity, spec.observation_size)),
      "terminals": jnp.zeros((capacity,), bool),
      "timeouts": jnp.zeros((capacity,), bool),
  }
  ones = jnp.ones(spec.observation_size)
  zeros = jnp.zeros(spec.observation_size)

  def env_step(carry, step_key):
    state, env_state, obs, buffer, size = carry
    act_key, env_key, upd_key, idx_key = jax.random.split(step_key, 4)
    greedy = agent.actor.apply(state.actor_params, obs)
    noisy = jnp.clip(greedy + config.exploration_noise * spec.max_action
                     * jax.random.normal(act_key, greedy.shape), -spec.max_action,
                     spec.max_action)
    uniform = jax.random.uniform(act_key, greedy.shape, minval=-spec.max_action,
                                 maxval=spec.max_action)
    action = jnp.where(size < config.learning_starts, uniform, noisy)
    next_obs, env_state, reward, terminated, truncated, info = env.step(env_key, env_state,
                                                                        action, params)
    row = {"observations": obs, "actions": action, "rewards": reward,
           "next_observations": info["final_observation"], "terminals": terminated,
           "timeouts": truncated}
    buffer = {k: buffer[k].at[size].set(row[k]) for k in BUFFER_KEYS}
    size = size + 1

    def learn(state):
      idx = jax.random.randint(idx_key, (agent.config.batch_size,), 0, size)
      batch = {k: buffer[k][idx] for k in BUFFER_KEYS}
      return td3.td3_update(agent, state, batch, upd_key)[0]

    state = jax.lax.cond(size >= config.learning_starts, learn, lambda s: s, state)
    return (state, env_state, next_obs, buffer, size), reward

  @jax.jit
  def run_chunk(carry, chunk_key):
    return jax.lax.scan(env_step, carry, jax.random.split(chunk_key, config.eval_every))[0]

  @jax.jit
  def evaluate(actor_params, eval_key):
    policy = td3.make_policy_fn(agent, actor_params, zeros, ones)
    return envs.rollout_returns(spec, policy, eval_key, config.eval_episodes)

  carry = (state, env_state, obs, buffer, jnp.zeros((), jnp.int32))
  snapshots = []
  num_chunks = config.total_steps // config.eval_every
  for i in tqdm.trange(num_chunks, disable=not progress, desc=f"online TD3 {spec.name}"):
    key, chunk_key, eval_key = jax.random.split(key, 3)
    carry = run_chunk(carry, chunk_key)
    actor_params = carry[0].actor_params
    eval_return = float(jnp.mean(evaluate(actor_params, eval_key)))
    env_steps = (i + 1) * config.eval_every
    snapshots.append({"env_steps": env_steps, "eval_return": eval_return,
                      "actor_params": jax.device_get(actor_params)})
    if log_fn is not None:
      log_fn({"phase": "online", "env": spec.name, "env_steps": env_steps,
              "eval_return": eval_return})
  buffer = {k: np.asarray(v) for k, v in carry[3].items()}
  return OnlineResult(agent=agent, snapshots=snapshots, buffer=buffer)
