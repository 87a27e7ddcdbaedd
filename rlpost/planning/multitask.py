"""A small multi-task learner over gymnax tasks with ScaleZero's MoE and Dynamic Parameter Scaling.

Paper: Pu et al., "One Model for All Tasks: Leveraging Efficient World Models in Multi-Task
Planning" (ScaleZero), 2025, arXiv 2509.07945. ScaleZero trains one UniZero world model (MCTS
planning) on many tasks; a Mixture-of-Experts feed-forward reduces gradient conflicts between
tasks, and DPS adds LoRA adapters in stages as tasks get solved, removing solved tasks from the
training pool so that fewer environment interactions are used.

What is built here (a simpler learner, as the issue allows; no MuZero/mctx planning):
  * one shared actor-critic network for all tasks: input = [obs zero-padded to the largest task's
    obs size, one-hot task id] -> Linear (or `StagedLoRALinear` with DPS) -> tanh -> residual
    feed-forward block (`MoEFeedForward`: top-1 routing + shared expert, or a dense FFN of the
    same width) -> policy logits (invalid actions of smaller action spaces masked) and value;
  * PPO-clip (Schulman et al. 2017, arXiv 1707.06347) with GAE, both from `rlpost.core`;
    the loss is sum_t w_t L_t over tasks t (w_t = 1 / #active tasks, 0 for solved tasks under
    DPS) plus `load_balance_coef` times the MoE balance loss;
  * gradient conflict: the mean pairwise cosine of the per-task loss gradients g_t = grad L_t
    (PPO + value + entropy + balance terms) on all shared parameters (`mean_pairwise_cosine`),
    measured every update on the first minibatch of the first epoch;
  * sample use: env steps consumed per task (solved tasks stop consuming under DPS) and the env
    steps at which each task was first solved.
Deviations: the DPS freeze applies to the staged layers (input and policy head); the MoE block,
layer norm and value head train at every stage. A task counts as solved when the mean return of
its training episodes finished in the last rollout reaches the target (ScaleZero: evaluation
return). Unsolved tasks are weighted uniformly (the paper's rank-based weights are unspecified).
Episode ends (terminated or truncated) cut the GAE recursion as in PureJaxRL.
"""
import dataclasses
from typing import Any, Callable

import flax.nnx as nnx
import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm

from rlpost import core
from rlpost.planning import scalezero as sz

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class MultiTaskConfig:
  tasks: tuple[str, ...] = ("CartPole-v1", "Acrobot-v1", "MountainCar-v0")
  target_returns: tuple[float, ...] = (475.0, -100.0, -110.0)
  use_moe: bool = True
  use_dps: bool = True
  num_updates: int = 120
  num_envs: int = 16
  rollout_steps: int = 64
  hidden: int = 64
  num_experts: int = 4
  num_stages: int = 3
  lora_rank: int = 8
  min_stage0_updates: int = 30
  max_stage_updates: int = 40
  load_balance_coef: float = 0.01
  learning_rate: float = 1e-3
  max_grad_norm: float = 0.5
  num_epochs: int = 4
  num_minibatches: int = 4
  gamma: float = 0.99
  gae_lambda: float = 0.95
  clip_eps: float = 0.2
  vf_coef: float = 0.5
  ent_coef: float = 0.01
  eval_every: int = 10

  def __post_init__(self):
    if len(self.tasks) < 2:
      raise ValueError(f"tasks needs at least two gymnax tasks, got {self.tasks}")
    if len(self.target_returns) != len(self.tasks):
      raise ValueError(f"target_returns needs one entry per task ({len(self.tasks)}), got "
                       f"{len(self.target_returns)}")
    for name in ("num_updates", "num_envs", "rollout_steps", "hidden", "num_experts",
                 "num_stages", "lora_rank", "num_epochs", "num_minibatches", "eval_every"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
    if (self.num_envs * self.rollout_steps) % self.num_minibatches:
      raise ValueError(f"num_minibatches ({self.num_minibatches}) must divide num_envs * "
                       f"rollout_steps ({self.num_envs * self.rollout_steps})")


# ------------------------------------------------------------------------------ pure pieces


def mean_pairwise_cosine(grads: Array, eps: float = 1e-12) -> Array:
  """Mean cosine similarity over task pairs i < j of flattened gradients `grads [T, P]`.

  1 when all task gradients point the same way, -1 for two opposite gradients, about 0 for
  orthogonal ones (ScaleZero's gradient-conflict view). A zero gradient gives cosine 0.
  """
  norm = jnp.linalg.norm(grads, axis=-1)
  cos = (grads @ grads.T) / jnp.maximum(norm[:, None] * norm[None, :], eps)
  t = grads.shape[0]
  iu = jnp.triu_indices(t, k=1)
  return jnp.mean(cos[iu])


def flatten_tree(tree) -> Array:
  return jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(tree)])


class _DenseFFN(nnx.Module):
  """The dense baseline block: Linear D -> 4D, GELU, 4D -> D (one always-on expert)."""

  def __init__(self, dim: int, *, hidden_mult: int, rngs: nnx.Rngs):
    self.ffn = sz._Expert(dim, hidden_mult * dim, rngs=rngs)  # pylint: disable=protected-access

  def __call__(self, x):
    return self.ffn(x), {"load_balance_loss": jnp.zeros(())}


class MultiTaskNet(nnx.Module):
  """Shared actor-critic for all tasks (see the module docstring)."""

  def __init__(self, in_dim: int, num_actions: int, *, hidden: int, use_moe: bool,
               use_dps: bool, num_experts: int, num_stages: int, lora_rank: int,
               rngs: nnx.Rngs):
    def linear(i, o):
      if use_dps:
        return sz.StagedLoRALinear(i, o, num_stages=num_stages, rank=lora_rank,
                                   lora_alpha=float(lora_rank), rngs=rngs)
      return nnx.Linear(i, o, rngs=rngs)
    self.embed = linear(in_dim, hidden)
    self.norm = nnx.LayerNorm(hidden, rngs=rngs)
    # MoE: routed experts of width 2D plus a shared expert; dense: one FFN of width 4D, so both
    # have the same active width per token.
    self.ffn = (sz.MoEFeedForward(hidden, num_experts=num_experts, top_k=1, hidden_mult=2,
                                  shared_expert=True, rngs=rngs) if use_moe
                else _DenseFFN(hidden, hidden_mult=4, rngs=rngs))
    self.policy = linear(hidden, num_actions)
    self.value = nnx.Linear(hidden, 1, rngs=rngs)

  def __call__(self, x):
    h = jnp.tanh(self.embed(x))
    out, aux = self.ffn(self.norm(h))
    h = h + out
    return self.policy(h), self.value(h)[..., 0], aux["load_balance_loss"]


def dps_update_mask(params, stage: Array, num_stages: int):
  """Multiplier pytree for updates: the `dps_stage_mask` of `stage` on every staged layer, 1
  elsewhere. Staged layers are recognised by their `lora_a` leaf."""
  m = sz.dps_stage_mask(stage, num_stages)

  def leaf_mask(path, x):
    keys = [getattr(p, "key", getattr(p, "name", None)) for p in path]
    keys = [k for k in keys if k not in ("value", "raw_value")]  # Variable wrappers
    last = keys[-1] if keys else None
    if last in ("lora_a", "lora_b"):
      return jnp.broadcast_to(m[last][:, None, None], x.shape).astype(x.dtype)
    if last == "scale_logits":
      return m["scale_logits"].astype(x.dtype)
    if "base" in keys:
      return jnp.broadcast_to(m["base"], x.shape).astype(x.dtype)
    return jnp.ones_like(x)
  return jax.tree_util.tree_map_with_path(leaf_mask, params)


# ----------------------------------------------------------------------------- the learner


def make_multitask(config: MultiTaskConfig):
  """Returns `(init, update, random_returns)`, pure and jit/vmap-able (see `train_multitask`)."""
  envs = [gymnax.make(name) for name in config.tasks]
  obs_dims = [int(e.observation_space(p).shape[0]) for e, p in envs]
  act_dims = [int(e.action_space(p).n) for e, p in envs]
  num_tasks, obs_max, act_max = len(envs), max(obs_dims), max(act_dims)
  in_dim = obs_max + num_tasks
  tx = optax.chain(optax.clip_by_global_norm(config.max_grad_norm),
                   optax.adam(config.learning_rate, eps=1e-5))
  action_masks = [jnp.arange(act_max) < n for n in act_dims]

  def featurise(obs, t):
    pad = jnp.zeros(obs.shape[:-1] + (obs_max - obs.shape[-1],))
    onehot = jnp.broadcast_to(jax.nn.one_hot(t, num_tasks), obs.shape[:-1] + (num_tasks,))
    return jnp.concatenate([obs.astype(jnp.float32), pad, onehot], axis=-1)

  def build(key):
    return MultiTaskNet(in_dim, act_max, hidden=config.hidden, use_moe=config.use_moe,
                        use_dps=config.use_dps, num_experts=config.num_experts,
                        num_stages=config.num_stages, lora_rank=config.lora_rank,
                        rngs=nnx.Rngs(key))

  graphdef, _, stage_template = nnx.split(build(jax.random.key(0)), nnx.Param, nnx.Variable)

  def forward(params, stage, x, t):
    stages = jax.tree.map(lambda v: jnp.full_like(v, stage), stage_template)
    logits, value, balance = nnx.merge(graphdef, params, stages)(x)
    logits = jnp.where(action_masks[t], logits, -1e9)
    return logits, value, balance

  def init(key):
    k_net, k_env = jax.random.split(key)
    _, params, _ = nnx.split(build(k_net), nnx.Param, nnx.Variable)
    env_states, obs = [], []
    for t, (env, p) in enumerate(envs):
      o, s = jax.vmap(env.reset, in_axes=(0, None))(
          jax.random.split(jax.random.fold_in(k_env, t), config.num_envs), p)
      env_states.append(s)
      obs.append(o)
    running = jnp.zeros((num_tasks, config.num_envs))
    return {"params": params, "opt_state": tx.init(params), "env_states": env_states,
            "obs": obs, "running_return": running}

  def rollout(params, stage, env_state, obs, running, t, key):
    env, p = envs[t]

    def step(carry, k):
      env_state, obs, running = carry
      k_act, k_env = jax.random.split(k)
      logits, value, _ = forward(params, stage, featurise(obs, t), t)
      action = jax.random.categorical(k_act, logits)
      logp = jnp.take_along_axis(jax.nn.log_softmax(logits), action[:, None], -1)[:, 0]
      obs_next, env_state, reward, terminated, truncated, _ = jax.vmap(
          env.step, in_axes=(0, 0, 0, None))(jax.random.split(k_env, config.num_envs),
                                             env_state, action, p)
      done = jnp.logical_or(terminated, truncated)
      running = running + reward
      finished = jnp.where(done, running, 0.0)
      running = jnp.where(done, 0.0, running)
      row = {"x": featurise(obs, t), "action": action, "logp": logp, "value": value,
             "reward": reward.astype(jnp.float32), "done": done}
      return (env_state, obs_next, running), (row, finished, done)

    (env_state, obs, running), (rows, finished, done) = jax.lax.scan(
        step, (env_state, obs, running), jax.random.split(key, config.rollout_steps))
    _, last_value, _ = forward(params, stage, featurise(obs, t), t)
    values = jnp.concatenate([rows["value"], last_value[None]], axis=0)  # [T+1, N]
    discount = config.gamma * (1.0 - rows["done"].astype(jnp.float32))
    adv, ret = jax.vmap(lambda r, d, v: core.gae_advantages(r, d, v, lambda_=config.gae_lambda),
                        in_axes=1, out_axes=1)(rows["reward"], discount, values)
    count = jnp.sum(done)
    episode_return = jnp.where(count > 0, jnp.sum(finished) / jnp.maximum(count, 1), jnp.nan)
    data = {"x": rows["x"], "action": rows["action"], "logp": rows["logp"], "adv": adv,
            "ret": ret}
    data = jax.tree.map(lambda a: a.reshape((-1,) + a.shape[2:]), data)
    return env_state, obs, running, data, episode_return

  def task_loss(params, stage, batch, t):
    logits, value, balance = forward(params, stage, batch["x"], t)
    logp_all = jax.nn.log_softmax(logits)
    logp = jnp.take_along_axis(logp_all, batch["action"][:, None], -1)[:, 0]
    adv = batch["adv"]
    adv = (adv - jnp.mean(adv)) / (jnp.std(adv) + 1e-8)
    mask = jnp.ones_like(logp)
    pg, _ = core.ppo_clip_loss_per_token(logp, batch["logp"], adv, mask,
                                         clip_low=config.clip_eps, clip_high=config.clip_eps)
    value_loss = 0.5 * jnp.square(value - batch["ret"])
    entropy = core.entropy_from_logits(jnp.where(action_masks[t], logits, -1e9))
    per_sample = pg + config.vf_coef * value_loss - config.ent_coef * entropy
    return jnp.mean(per_sample) + config.load_balance_coef * balance

  def update(state, stage, active, key):
    """One PPO update on every task; `active [num_tasks]` (0/1) weights the task losses."""
    params = state["params"]
    k_roll, k_perm = jax.random.split(key)
    env_states, obs, running, datas, ep_returns = [], [], [], [], []
    for t in range(num_tasks):
      s, o, r, d, e = rollout(params, stage, state["env_states"][t], state["obs"][t],
                              state["running_return"][t], t, jax.random.fold_in(k_roll, t))
      env_states.append(s)
      obs.append(o)
      running.append(r)
      datas.append(d)
      ep_returns.append(e)
    weights = active / jnp.maximum(jnp.sum(active), 1.0)
    n = config.num_envs * config.rollout_steps
    mb = n // config.num_minibatches

    def epoch(carry, k):
      perms = [jax.random.permutation(jax.random.fold_in(k, t), n) for t in range(num_tasks)]

      def minibatch(carry, i):
        params, opt_state = carry
        grads = []
        for t in range(num_tasks):
          idx = jax.lax.dynamic_slice(perms[t], (i * mb,), (mb,))
          batch = jax.tree.map(lambda a: a[idx], datas[t])
          grads.append(jax.grad(lambda p: task_loss(p, stage, batch, t))(params))
        total = jax.tree.map(lambda *gs: sum(w * g for w, g in zip(weights, gs)), *grads)
        upd, opt_state = tx.update(total, opt_state, params)
        if config.use_dps:
          upd = jax.tree.map(lambda u, m: u * m, upd,
                             dps_update_mask(params, stage, config.num_stages))
        params = optax.apply_updates(params, upd)
        cos = mean_pairwise_cosine(jnp.stack([flatten_tree(g) for g in grads]))
        return (params, opt_state), cos

      carry, cos = jax.lax.scan(minibatch, carry, jnp.arange(config.num_minibatches))
      return carry, cos[0]

    (params, opt_state), cos = jax.lax.scan(epoch, (params, state["opt_state"]),
                                            jax.random.split(k_perm, config.num_epochs))
    new_state = {"params": params, "opt_state": opt_state, "env_states": env_states,
                 "obs": obs, "running_return": jnp.stack(running)}
    return new_state, {"episode_return": jnp.stack(ep_returns), "grad_cosine": cos[0]}

  def random_returns(key, num_episodes: int = 16):
    """Mean return of the uniform policy per task (the 0 of the normalised score)."""
    out = []
    for t, (env, p) in enumerate(envs):
      steps = int(p.max_steps_in_episode)

      def episode(k, env=env, p=p, t=t, steps=steps):
        k_reset, k_run = jax.random.split(k)
        o, s = env.reset(k_reset, p)

        def step(carry, kk):
          s, o, alive = carry
          k_a, k_e = jax.random.split(kk)
          a = jax.random.randint(k_a, (), 0, act_dims[t])
          o, s, r, term, trunc, _ = env.step(k_e, s, a, p)
          total = alive * r
          alive = alive * (1.0 - jnp.logical_or(term, trunc).astype(jnp.float32))
          return (s, o, alive), total

        _, rewards = jax.lax.scan(step, (s, o, jnp.ones(())), jax.random.split(k_run, steps))
        return jnp.sum(rewards)

      out.append(jnp.mean(jax.vmap(episode)(jax.random.split(jax.random.fold_in(key, t),
                                                             num_episodes))))
    return jnp.stack(out)

  return init, update, random_returns


def train_multitask(config: MultiTaskConfig, seeds: list[int], *, progress: bool = False,
                    log_fn: Callable[[dict], None] | None = None) -> dict[str, Any]:
  """Trains one multi-task learner per seed (vmapped); the DPS schedule runs on the host.

  Returns numpy arrays: `returns`/`score` `[S, E, T]` at the E evaluation points
  (`env_steps [E]` counts all tasks' steps per seed when none is dropped), `mean_score [S, E]`,
  `grad_cosine [S, U]` per update, `task_env_steps [S, T]` consumed, `steps_to_solve [S, T]`
  (per-task env steps when first solved, NaN if never), `final_stage [S]`, `random_returns [T]`.
  """
  init, update, random_returns = make_multitask(config)
  num_tasks = len(config.tasks)
  s = len(seeds)
  keys = jax.vmap(jax.random.key)(jnp.asarray(seeds))
  init_v, update_v = jax.jit(jax.vmap(init)), jax.jit(jax.vmap(update))
  rand = np.asarray(jax.jit(random_returns)(jax.random.key(12345)))
  target = np.asarray(config.target_returns)
  score_fn = lambda r: 100.0 * (r - rand) / (target - rand)
  state = init_v(keys)
  steps_per_update = config.num_envs * config.rollout_steps
  last_return = np.full((s, num_tasks), np.nan)
  solved = np.zeros((s, num_tasks), bool)
  steps_to_solve = np.full((s, num_tasks), np.nan)
  task_steps = np.zeros((s, num_tasks))
  stage = np.zeros(s, np.int32)
  iters_in_stage = np.zeros(s, np.int64)
  solved_at_stage_start = np.zeros(s, np.int64)
  cosines, eval_steps, eval_returns = [], [], []
  name = "scalezero" if config.use_moe or config.use_dps else "scalezero_dense"
  bar = tqdm.trange(config.num_updates, disable=not progress, desc=name)
  for u in bar:
    active = np.where(solved & config.use_dps, 0.0, 1.0)
    if config.use_dps and np.all(active == 0):
      active = np.ones_like(active)  # everything solved: keep training all (no steps counted)
    ukeys = jax.vmap(lambda k: jax.random.fold_in(k, u))(keys)
    state, metrics = update_v(state, jnp.asarray(stage), jnp.asarray(active, jnp.float32), ukeys)
    ep = np.asarray(metrics["episode_return"])
    last_return = np.where(np.isnan(ep), last_return, ep)
    counted = np.where(solved & config.use_dps, 0.0, 1.0)
    task_steps += counted * steps_per_update
    newly = (~solved) & (last_return >= target)
    steps_to_solve = np.where(newly, task_steps, steps_to_solve)
    solved |= newly
    cosines.append(np.asarray(metrics["grad_cosine"]))
    if config.use_dps:
      iters_in_stage += 1
      for i in range(s):
        n_solved = int(solved[i].sum())
        if sz.dps_should_advance(stage=int(stage[i]), num_stages=config.num_stages,
                                 iters_in_stage=int(iters_in_stage[i]),
                                 newly_solved=n_solved - int(solved_at_stage_start[i]),
                                 unsolved=num_tasks - int(solved_at_stage_start[i]),
                                 min_stage0_iters=config.min_stage0_updates,
                                 max_stage_iters=config.max_stage_updates):
          stage[i] += 1
          iters_in_stage[i] = 0
          solved_at_stage_start[i] = n_solved
    if (u + 1) % config.eval_every == 0 or u + 1 == config.num_updates:
      eval_steps.append((u + 1) * steps_per_update * num_tasks)
      eval_returns.append(last_return.copy())
      finite = score_fn(last_return)[np.isfinite(last_return)]
      bar.set_postfix(score=f"{finite.mean() if finite.size else float('nan'):.0f}",
                      cos=f"{float(np.mean(cosines[-1])):.2f}", stage=int(stage[0]))
      if log_fn is not None:
        log_fn({"update": u + 1, "env_steps": eval_steps[-1],
                "episode_return": last_return.tolist(),
                "score": score_fn(last_return).tolist(),
                "grad_cosine": np.asarray(cosines[-1]).tolist(), "stage": stage.tolist(),
                "solved": solved.tolist(), "task_env_steps": task_steps.tolist()})
  returns = np.stack(eval_returns, axis=1)  # [S, E, T]
  score = score_fn(np.nan_to_num(returns, nan=-np.inf))
  score = np.where(np.isfinite(score), score, 0.0)
  return {"env_steps": eval_steps, "returns": returns, "score": score,
          "mean_score": score.mean(-1), "grad_cosine": np.stack(cosines, axis=1),
          "task_env_steps": task_steps, "steps_to_solve": steps_to_solve,
          "final_stage": stage, "random_returns": rand}
