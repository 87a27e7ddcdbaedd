"""A Dyna/MBPO-style model-based loop on a JAX env, with and without COPlanner.

MBPO: Janner, Fu, Zhang, Levine, "When to Trust Your Model: Model-Based Policy Optimization",
NeurIPS 2019, arXiv 1906.08253. Each epoch:
  1. fit the Gaussian ensemble (`rlpost.planning.coplanner`) to the real replay buffer;
  2. branch `rollout_batch` short model rollouts (length `rollout_length`) from real states and
     append them to a model buffer;
  3. take `epoch_length` real env steps; after each, `updates_per_step` off-policy updates on
     minibatches mixing a `real_ratio` share of real transitions with model transitions.

COPlanner: Wang et al., "COPlanner: Plan to Roll Out Conservatively but to Explore
Optimistically for Model-Based RL", ICLR 2024, arXiv 2310.07220. The uncertainty-aware MPC
(`coplanner_select_action`, score_k = sum_i gamma_r^i r_i + rate * sum_i gamma_u^i u_i) chooses
  (a) each action of the model rollouts in step 2 with rate = -conservative_rate (penalty), and
  (b) each real-env action in step 3 with rate = +optimistic_rate (bonus).
With `use_coplanner=False` the same loop samples one candidate from the policy instead (plain
MBPO). With one candidate (K = 1) both branches produce identical rollouts for any rate.

Deviations (CPU scale, documented in BUILD_NOTES.md):
  * The off-policy learner is TD3 (`rlpost.offline.td3`, reused, actor loss "td3") instead of
    SAC. Candidate actions are pi(s) + N(0, (candidate_noise * a_max)^2), clipped, because TD3's
    policy is deterministic (the official code samples SAC's stochastic policy).
  * Ensemble: 5 members of 2 x 64 SiLU MLPs, no elite selection, no input normalisation,
    warm-started each epoch with a fresh Adam state (MBPO: 7 members, 5 elites, 4 x 200).
  * The supported envs (gymnax Pendulum-v1, rlpost PointMass2D) never terminate, so the model
    predicts no termination and model transitions have terminals = False.
"""
import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from rlpost.offline import envs
from rlpost.offline import td3
from rlpost.planning import coplanner as cp

Array = jax.Array
TD3_KEYS = ("observations", "actions", "rewards", "next_observations", "terminals")


@dataclasses.dataclass(frozen=True)
class MBPOConfig:
  """Hyperparameters of the Dyna/MBPO loop; COPlanner defaults are the paper's MBPO variant."""
  env_name: str = "pendulum"
  use_coplanner: bool = True
  num_epochs: int = 14
  epoch_length: int = 250
  initial_random_steps: int = 500
  # Ensemble model.
  num_members: int = 5
  model_hidden: int = 64
  model_train_steps: int = 300
  model_batch_size: int = 256
  model_lr: float = 1e-3
  # Branched model rollouts.
  rollout_batch: int = 512
  rollout_length: int = 3
  model_retain_epochs: int = 4
  real_ratio: float = 0.1
  # Off-policy learner (TD3).
  updates_per_step: int = 10
  batch_size: int = 256
  hidden_sizes: tuple[int, ...] = (64, 64)
  exploration_noise: float = 0.1
  candidate_noise: float = 0.2
  # COPlanner MPC (paper MBPO defaults).
  num_candidates: int = 5
  plan_horizon: int = 5
  gamma_r: float = 0.97
  gamma_u: float = 0.97
  conservative_rate: float = 2.0
  optimistic_rate: float = 1.0
  eval_episodes: int = 10

  def __post_init__(self):
    if self.env_name not in envs.ENV_NAMES:
      raise ValueError(f"env_name must be one of {envs.ENV_NAMES}, got {self.env_name!r}")
    for name in ("num_epochs", "epoch_length", "initial_random_steps", "num_members",
                 "model_hidden", "model_train_steps", "model_batch_size", "rollout_batch",
                 "rollout_length", "model_retain_epochs", "updates_per_step", "batch_size",
                 "num_candidates", "plan_horizon", "eval_episodes"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
    if not 0.0 <= self.real_ratio <= 1.0:
      raise ValueError(f"real_ratio must be in [0, 1], got {self.real_ratio}")
    for name in ("conservative_rate", "optimistic_rate", "exploration_noise", "candidate_noise"):
      if getattr(self, name) < 0:
        raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
    for name in ("gamma_r", "gamma_u"):
      if not 0.0 <= getattr(self, name) <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")

  @property
  def total_env_steps(self) -> int:
    return self.initial_random_steps + self.num_epochs * self.epoch_length


class MBPOState(NamedTuple):
  agent: td3.TD3State
  model: Any
  real: dict[str, Array]
  real_size: Array
  synthetic: dict[str, Array]
  synthetic_size: Array
  synthetic_ptr: Array
  env_state: Any
  obs: Array


# ------------------------------------------------------------------------ pure building blocks


def noisy_policy(actor_apply: Callable, actor_params, *, noise: float, max_action: float
                 ) -> cp.PolicyFn:
  """`policy(obs [N, ds], key) -> [N, da]`: clip(pi(s) + noise * a_max * N(0, 1))."""
  def policy(obs, key):
    a = actor_apply(actor_params, obs)
    a = a + noise * max_action * jax.random.normal(key, a.shape)
    return jnp.clip(a, -max_action, max_action)
  return policy


def choose_action(model, policy: cp.PolicyFn, obs: Array, key: Array,
                  ens_config: cp.EnsembleConfig, *, use_coplanner: bool, rate: float,
                  num_candidates: int = 5, plan_horizon: int = 5, gamma_r: float = 0.97,
                  gamma_u: float = 0.97) -> Array:
  """One state's action: COPlanner MPC with signed `rate`, or one plain policy sample.

  The plain branch draws its sample with the key COPlanner uses for its candidates, so with
  `num_candidates=1` both branches return the same action for any rate.
  """
  if not use_coplanner:
    return policy(obs[None], jax.random.split(key)[0])[0]
  action, _ = cp.coplanner_select_action(model, policy, obs, key, ens_config, rate=rate,
                                         num_candidates=num_candidates, horizon=plan_horizon,
                                         gamma_r=gamma_r, gamma_u=gamma_u)
  return action


def model_step(model, obs: Array, action: Array, key: Array, ens_config: cp.EnsembleConfig
               ) -> tuple[Array, Array, Array]:
  """Next state, reward and disagreement `[N]` from one random member's sample (MBPO style)."""
  k_pred, k_member = jax.random.split(key)
  sample, u = cp.ensemble_predict(model, obs, action, k_pred, ens_config)
  n = obs.shape[0]
  pick = sample[jax.random.randint(k_member, (n,), 0, ens_config.num_members), jnp.arange(n)]
  return obs + pick[:, :-1], pick[:, -1], u


def model_rollouts(model, policy: cp.PolicyFn, start_obs: Array, key: Array,
                   ens_config: cp.EnsembleConfig, *, length: int, use_coplanner: bool,
                   rate: float, num_candidates: int = 5, plan_horizon: int = 5,
                   gamma_r: float = 0.97, gamma_u: float = 0.97
                   ) -> tuple[dict[str, Array], Array]:
  """Branched model rollouts from `start_obs [N, ds]` for `length` steps.

  Returns the transitions (TD3 keys, `[length * N, ...]`, terminals all False) and the ensemble
  disagreement of every executed model transition, `[length, N]`.
  """
  n = start_obs.shape[0]
  choose = jax.vmap(lambda o, k: choose_action(
      model, policy, o, k, ens_config, use_coplanner=use_coplanner, rate=rate,
      num_candidates=num_candidates, plan_horizon=plan_horizon, gamma_r=gamma_r,
      gamma_u=gamma_u))

  def step(obs, k):
    k_act, k_model = jax.random.split(k)
    action = choose(obs, jax.random.split(k_act, n))
    next_obs, reward, u = model_step(model, obs, action, k_model, ens_config)
    row = {"observations": obs, "actions": action, "rewards": reward,
           "next_observations": next_obs, "terminals": jnp.zeros((n,), bool)}
    return next_obs, (row, u)

  _, (rows, unc) = jax.lax.scan(step, start_obs, jax.random.split(key, length))
  return jax.tree.map(lambda x: x.reshape((length * n,) + x.shape[2:]), rows), unc


def _write(buffer: dict[str, Array], rows: dict[str, Array], start: Array) -> dict[str, Array]:
  """Writes `rows` at `start, start+1, ...` modulo the capacity (a circular buffer)."""
  cap = buffer["observations"].shape[0]
  m = rows["observations"].shape[0]
  idx = (start + jnp.arange(m)) % cap
  return {k: buffer[k].at[idx].set(rows[k].astype(buffer[k].dtype)) for k in TD3_KEYS}


def _empty_buffer(capacity: int, obs_dim: int, action_dim: int) -> dict[str, Array]:
  return {"observations": jnp.zeros((capacity, obs_dim)),
          "actions": jnp.zeros((capacity, action_dim)), "rewards": jnp.zeros((capacity,)),
          "next_observations": jnp.zeros((capacity, obs_dim)),
          "terminals": jnp.zeros((capacity,), bool)}


# ------------------------------------------------------------------------------- the loop


def make_mbpo(config: MBPOConfig):
  """Returns `(spec, init, epoch, evaluate)`, all pure and jit/vmap-able.

  init(key) -> MBPOState after `initial_random_steps` uniform-random env steps;
  epoch(state, key) -> (state, metrics): model fit, model rollouts, `epoch_length` env steps with
      `updates_per_step` TD3 updates each;
  evaluate(state, key) -> returns `[eval_episodes]` of the deterministic policy.
  """
  spec = envs.make_env(config.env_name)
  env, env_params = spec.env, spec.params
  ds, da, a_max = spec.observation_size, spec.action_size, spec.max_action
  agent = td3.make_td3_agent(observation_size=ds, action_size=da, max_action=a_max,
                             config=td3.TD3Config(actor_loss="td3",
                                                  batch_size=config.batch_size,
                                                  hidden_sizes=config.hidden_sizes))
  ens_config = cp.EnsembleConfig(obs_dim=ds, action_dim=da, num_members=config.num_members,
                                 hidden=config.model_hidden)
  mpc = dict(num_candidates=config.num_candidates, plan_horizon=config.plan_horizon,
             gamma_r=config.gamma_r, gamma_u=config.gamma_u)
  synth_capacity = config.rollout_batch * config.rollout_length * config.model_retain_epochs
  n_real = int(round(config.real_ratio * config.batch_size))
  n_synth = config.batch_size - n_real

  def env_step(env_state, obs, action, key):
    next_obs, env_state, reward, _, _, info = env.step(key, env_state, action, env_params)
    row = {"observations": obs, "actions": action, "rewards": reward,
           "next_observations": info["final_observation"],
           "terminals": jnp.zeros((), bool)}  # no true terminations in the supported envs
    return next_obs, env_state, jax.tree.map(lambda x: x[None], row), reward

  def init(key):
    k_agent, k_model, k_reset, k_run = jax.random.split(key, 4)
    obs, env_state = env.reset(k_reset, env_params)
    real = _empty_buffer(config.total_env_steps, ds, da)

    def random_step(carry, k):
      env_state, obs, real, size = carry
      k_a, k_e = jax.random.split(k)
      action = jax.random.uniform(k_a, (da,), minval=-a_max, maxval=a_max)
      obs_next, env_state, row, _ = env_step(env_state, obs, action, k_e)
      return (env_state, obs_next, _write(real, row, size), size + 1), None

    (env_state, obs, real, size), _ = jax.lax.scan(
        random_step, (env_state, obs, real, jnp.zeros((), jnp.int32)),
        jax.random.split(k_run, config.initial_random_steps))
    return MBPOState(agent=td3.init_td3_state(agent, k_agent, ds),
                     model=cp.init_ensemble(ens_config, k_model), real=real, real_size=size,
                     synthetic=_empty_buffer(synth_capacity, ds, da),
                     synthetic_size=jnp.zeros((), jnp.int32),
                     synthetic_ptr=jnp.zeros((), jnp.int32), env_state=env_state, obs=obs)

  def epoch(state: MBPOState, key):
    k_fit, k_start, k_roll, k_env = jax.random.split(key, 4)
    model_data = {"obs": state.real["observations"], "action": state.real["actions"],
                  "next_obs": state.real["next_observations"], "reward": state.real["rewards"]}
    model, model_loss = cp.fit_ensemble(state.model, model_data, ens_config, k_fit,
                                        steps=config.model_train_steps,
                                        batch=config.model_batch_size, lr=config.model_lr,
                                        size=state.real_size)
    # 2. Branched model rollouts (conservative COPlanner MPC, or plain policy samples).
    cand = noisy_policy(agent.actor.apply, state.agent.actor_params,
                        noise=config.candidate_noise, max_action=a_max)
    idx = jax.random.randint(k_start, (config.rollout_batch,), 0, state.real_size)
    rows, rollout_unc = model_rollouts(
        model, cand, state.real["observations"][idx], k_roll, ens_config,
        length=config.rollout_length, use_coplanner=config.use_coplanner,
        rate=-config.conservative_rate, **mpc)
    synthetic = _write(state.synthetic, rows, state.synthetic_ptr)
    m = rows["observations"].shape[0]
    synth_size = jnp.minimum(state.synthetic_size + m, synth_capacity)
    synth_ptr = (state.synthetic_ptr + m) % synth_capacity

    # 3. Real env steps (optimistic COPlanner MPC, or policy + exploration noise) + updates.
    def one_step(carry, k):
      agent_state, env_state, obs, real, size = carry
      k_act, k_env_step, k_upd = jax.random.split(k, 3)
      if config.use_coplanner:
        explore = noisy_policy(agent.actor.apply, agent_state.actor_params,
                               noise=config.candidate_noise, max_action=a_max)
        action = choose_action(model, explore, obs, k_act, ens_config, use_coplanner=True,
                               rate=config.optimistic_rate, **mpc)
      else:
        explore = noisy_policy(agent.actor.apply, agent_state.actor_params,
                               noise=config.exploration_noise, max_action=a_max)
        action = explore(obs[None], k_act)[0]
      obs_next, env_state, row, reward = env_step(env_state, obs, action, k_env_step)
      real = _write(real, row, size)
      size = size + 1

      def update(agent_state, kk):
        k_r, k_s, k_u = jax.random.split(kk, 3)
        ir = jax.random.randint(k_r, (n_real,), 0, size)
        isy = jax.random.randint(k_s, (n_synth,), 0, synth_size)
        batch = {k: jnp.concatenate([real[k][ir], synthetic[k][isy]]) for k in TD3_KEYS}
        return td3.td3_update(agent, agent_state, batch, k_u)

      agent_state, metrics = jax.lax.scan(update, agent_state,
                                          jax.random.split(k_upd, config.updates_per_step))
      return (agent_state, env_state, obs_next, real, size), (reward, metrics)

    carry = (state.agent, state.env_state, state.obs, state.real, state.real_size)
    (agent_state, env_state, obs, real, size), (rewards, metrics) = jax.lax.scan(
        one_step, carry, jax.random.split(k_env, config.epoch_length))
    new_state = MBPOState(agent=agent_state, model=model, real=real, real_size=size,
                          synthetic=synthetic, synthetic_size=synth_size,
                          synthetic_ptr=synth_ptr, env_state=env_state, obs=obs)
    out = {k: jnp.mean(v) for k, v in metrics.items()}
    out.update(model_loss=model_loss, rollout_uncertainty=jnp.mean(rollout_unc),
               rollout_reward=jnp.mean(rows["rewards"]),
               train_reward_per_step=jnp.mean(rewards), env_steps=size)
    return new_state, out

  def evaluate(state: MBPOState, key):
    policy = td3.make_policy_fn(agent, state.agent.actor_params, jnp.zeros(ds), jnp.ones(ds))
    return envs.rollout_returns(spec, policy, key, config.eval_episodes)

  return spec, init, epoch, evaluate


def train_mbpo(config: MBPOConfig, seeds: list[int], *, progress: bool = False,
               log_fn: Callable[[dict], None] | None = None) -> dict[str, Any]:
  """Runs the loop for every seed at once (vmapped) with a progress bar over epochs.

  Returns {"env_steps": [num_epochs + 1], "returns": [num_seeds, num_epochs + 1] (mean eval
  return after the random phase and after each epoch), "metrics": list of per-epoch dicts of
  `[num_seeds]` lists}.
  """
  _, init, epoch, evaluate = make_mbpo(config)
  keys = jax.vmap(jax.random.key)(jnp.asarray(seeds))
  run_keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys)
  init_v = jax.jit(jax.vmap(init))
  epoch_v = jax.jit(jax.vmap(epoch))
  eval_v = jax.jit(jax.vmap(lambda s, k: jnp.mean(evaluate(s, k))))
  state = init_v(keys)
  steps = [config.initial_random_steps]
  returns = [np.asarray(eval_v(state, jax.vmap(lambda k: jax.random.fold_in(k, 10**6))(keys)))]
  history = []
  name = "coplanner" if config.use_coplanner else "mbpo"
  bar = tqdm.trange(config.num_epochs, disable=not progress, desc=f"{name} {config.env_name}")
  for i in bar:
    epoch_keys = jax.vmap(lambda k: jax.random.fold_in(k, i))(run_keys)
    state, metrics = epoch_v(state, epoch_keys)
    ret = np.asarray(eval_v(state, jax.vmap(lambda k: jax.random.fold_in(k, 10**6 + i + 1))(
        keys)))
    metrics = {k: np.asarray(v).tolist() for k, v in metrics.items()}
    for k, v in metrics.items():
      if not np.all(np.isfinite(v)):
        raise FloatingPointError(f"{name}: non-finite {k} at epoch {i}: {v}")
    env_steps = config.initial_random_steps + (i + 1) * config.epoch_length
    steps.append(env_steps)
    returns.append(ret)
    history.append(metrics)
    bar.set_postfix(ret=f"{float(np.mean(ret)):.1f}")
    if log_fn is not None:
      log_fn({"method": name, "epoch": i, "env_steps": env_steps,
              "eval_return": ret.tolist(), **metrics})
  return {"env_steps": steps, "returns": np.stack(returns, axis=1), "metrics": history}
