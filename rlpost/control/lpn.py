"""Action-Jacobian penalty and Linear Policy Nets (smooth time-varying linear policies).

Paper: "Smooth Time-Varying Linear Policies with an Action Jacobian Penalty", 2026,
arXiv 2602.18312.

Penalty, for a deterministic policy mean mu(s, phi) (phi = phase / reference features):

    L_jac = ||d mu / d s||_F^2,    added to the PPO objective as  c_jac * mean_t L_jac(s_t).

Linear Policy Net (LPN): a time-varying linear feedback law whose gains come from an MLP of the
phase features only,

    (K(phi), k(phi)) = MLP(phi),   a = K(phi) s + k(phi)   =>   d a / d s = K(phi),
    L_jac = ||K(phi)||_F^2   (closed form, no extra Jacobian pass).

Deviations / choices (the paper gives no architecture details or defaults; spec section 3 marks
the LPN form as inferred): phi excludes s; the Frobenius norm (paper wording) is used; the
action-change baseline is a loss term `||mu_t - mu_{t-1}||^2` on consecutive policy means (the
same place as the Jacobian penalty) rather than an action-rate reward.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx
import numpy as np

from rlpost.control import policy_gradient as pg
from rlpost.control.envs import PointMassTracking, TrackingParams

Array = jax.Array


def action_jacobian_penalty(policy_fn: Callable[[Array], Array], obs: Array, *,
                            state_size: int) -> Array:
  """`||d policy_fn(obs) / d obs[:state_size]||_F^2` by forward-mode autodiff (`jax.jacfwd`).

  Args:
    policy_fn: maps one observation `[obs_size]` to an action `[A]` (or a chunk `[T, A]`).
    obs: one observation; its first `state_size` entries are s, the rest phase features.
    state_size: number of leading obs entries the Jacobian is taken with respect to.

  Returns:
    A scalar: the squared Frobenius norm of the Jacobian (summed over a chunk).
  """
  s, phi = obs[:state_size], obs[state_size:]
  jac = jax.jacfwd(lambda s_: policy_fn(jnp.concatenate([s_, phi])))(s)
  return jnp.sum(jac**2)


class LinearPolicyNet(nnx.Module):
  """`a = K(phi) s + k(phi)` with `(K, k) = MLP(phi)`; obs = [s (state_size), phi].

  The gain head is scaled by `gain_init_scale` at init so the first policy is nearly
  state-independent.
  """

  chunk_len = 1

  def __init__(self, state_size: int, feature_size: int, action_size: int, *, rngs: nnx.Rngs,
               hidden: Sequence[int] = (64, 64), gain_init_scale: float = 0.01):
    self.state_size, self.action_size = state_size, action_size
    self.net = pg.MLP(feature_size, action_size * (state_size + 1), hidden=hidden, rngs=rngs,
                      head_scale=gain_init_scale)

  def gains(self, phi: Array) -> tuple[Array, Array]:
    """`K [A, state_size]` and `k [A]` for phase features `phi`."""
    out = self.net(phi)
    a, d = self.action_size, self.state_size
    return out[:a * d].reshape(a, d), out[a * d:]

  def __call__(self, obs: Array) -> Array:
    gain, bias = self.gains(obs[self.state_size:])
    return gain @ obs[:self.state_size] + bias

  def action_chunk(self, obs: Array) -> Array:
    return self(obs)[None]

  def jacobian_sq_norm(self, obs: Array) -> Array:
    """Closed-form `||d a / d s||_F^2 = ||K(phi)||_F^2`."""
    gain, _ = self.gains(obs[self.state_size:])
    return jnp.sum(gain**2)


def policy_jacobian_penalty(actor: nnx.Module, obs: Array, state_size: int) -> Array:
  """Closed form for actors with `jacobian_sq_norm` (LPN), `jax.jacfwd` otherwise.

  This is the `jacobian_penalty_fn` handed to `rlpost.control.policy_gradient`.
  """
  if hasattr(actor, "jacobian_sq_norm"):
    if getattr(actor, "state_size", state_size) != state_size:
      raise ValueError(f"actor.state_size={actor.state_size} != state_size={state_size}")
    return actor.jacobian_sq_norm(obs)
  return action_jacobian_penalty(actor.action_chunk, obs, state_size=state_size)


def high_frequency_power(actions: Array, *, dt: float, cutoff_hz: float) -> tuple[Array, Array]:
  """High-frequency power of an action signal `actions [T, A]` sampled every `dt` seconds.

  With the one-sided periodogram of the mean-removed signal, normalised by Parseval so that the
  bins sum to the signal's variance, `P_k = c_k |FFT_k|^2 / T^2` (c_k = 2 except for the DC and
  Nyquist bins), the high-frequency power is `sum_{f_k >= cutoff_hz} P_k`, summed over action
  dimensions. Also returns the fraction of the total (mean-removed) power above the cutoff.
  Units: action^2. A constant signal gives (0, 0).
  """
  x = actions - jnp.mean(actions, axis=0, keepdims=True)
  t = x.shape[0]
  spec = jnp.abs(jnp.fft.rfft(x, axis=0))**2 / t**2
  freqs = jnp.fft.rfftfreq(t, d=dt)
  weight = jnp.full(freqs.shape, 2.0).at[0].set(1.0)
  if t % 2 == 0:
    weight = weight.at[-1].set(1.0)
  power = weight[:, None] * spec
  high = jnp.sum(jnp.where((freqs >= cutoff_hz)[:, None], power, 0.0))
  total = jnp.sum(power)
  return high, jnp.where(total > 0, high / jnp.where(total > 0, total, 1.0), 0.0)


VARIANTS = ("mlp", "mlp_action_change", "mlp_jacobian", "lpn_jacobian")


@dataclasses.dataclass(frozen=True)
class ComparisonConfig:
  """Settings of `run_comparison` (PPO from `policy_gradient`, task from `envs.tracking`)."""
  variants: tuple[str, ...] = VARIANTS
  ppo: pg.PPOConfig = pg.PPOConfig(num_envs=16, num_iterations=150, update_epochs=10,
                                   num_minibatches=4, state_size=4)
  jacobian_coef: float = 1e-3
  action_change_coef: float = 1.0
  hidden: tuple[int, ...] = (64, 64)
  init_log_std: float = -1.0
  eval_episodes: int = 16
  cutoff_hz: float = 3.0
  seed: int = 0
  task: TrackingParams = TrackingParams()

  def __post_init__(self):
    bad = [v for v in self.variants if v not in VARIANTS]
    if bad or not self.variants:
      raise ValueError(f"ComparisonConfig.variants must be a non-empty subset of {VARIANTS}; "
                       f"got {self.variants}")
    if self.ppo.state_size != PointMassTracking.state_size:
      raise ValueError(f"ComparisonConfig.ppo.state_size must be {PointMassTracking.state_size}")
    if self.jacobian_coef < 0 or self.action_change_coef < 0:
      raise ValueError("ComparisonConfig.jacobian_coef and action_change_coef must be >= 0")
    if self.cutoff_hz <= 0 or self.cutoff_hz >= 0.5 / self.task.dt:
      raise ValueError(f"ComparisonConfig.cutoff_hz must be in (0, Nyquist={0.5 / self.task.dt})")


def make_variant(variant: str, config: ComparisonConfig) -> tuple[pg.ActorCritic, pg.PPOConfig]:
  """Model and PPO config of one compared variant."""
  env = PointMassTracking()
  rngs = nnx.Rngs(config.seed)
  ds = env.state_size
  if variant.startswith("lpn"):
    actor = LinearPolicyNet(ds, env.observation_size - ds, env.action_size, rngs=rngs,
                            hidden=config.hidden)
  else:
    actor = pg.MLPPolicy(env.observation_size, env.action_size, hidden=config.hidden, rngs=rngs)
  model = pg.ActorCritic(actor, env.observation_size, env.action_size, rngs=rngs,
                         critic_hidden=config.hidden, init_log_std=config.init_log_std)
  ppo = dataclasses.replace(
      config.ppo,
      jacobian_coef=config.jacobian_coef if variant.endswith("jacobian") else 0.0,
      action_change_coef=config.action_change_coef if variant == "mlp_action_change" else 0.0)
  return model, ppo


def evaluate_smoothness(evaluate: Callable, key: Array, *, num_episodes: int, dt: float,
                        cutoff_hz: float) -> dict[str, Any]:
  """Deterministic (mean-action) episodes: tracking error, return and action smoothness."""
  episodes = evaluate(key, num_episodes=num_episodes, deterministic=True)
  actions = jnp.clip(episodes["action"], -1.0, 1.0)  # what the env executes
  hf, frac = jax.vmap(lambda a: high_frequency_power(a, dt=dt, cutoff_hz=cutoff_hz))(actions)
  return {
      "tracking_error": float(jnp.mean(episodes["info"]["tracking_error"])),
      "eval_return": float(jnp.mean(jnp.sum(episodes["reward"], axis=1))),
      "hf_power": float(jnp.mean(hf)),
      "hf_fraction": float(jnp.mean(frac)),
      "mean_abs_action_change": float(jnp.mean(jnp.abs(jnp.diff(actions, axis=1)))),
      "example_actions": np.asarray(actions[0]),
  }


def run_comparison(config: ComparisonConfig, *, callback: Callable[[str, dict], None] | None = None
                   ) -> dict[str, Any]:
  """Trains every variant with PPO on the tracking task and measures smoothness.

  Returns `{"rows": [{variant, tracking_error, eval_return, hf_power, hf_fraction,
  mean_abs_action_change, train_wall_s, compile_s}], "histories": {variant: [...]},
  "example_actions": {variant: [H, A]}, "dt": dt}`.
  """
  env = PointMassTracking()
  rows, histories, examples = [], {}, {}
  for variant in config.variants:
    model, ppo = make_variant(variant, config)
    key = pg.prng_key(config.seed)
    t0 = time.perf_counter()
    _, history, evaluate = pg.train_ppo(
        env, config.task, model, ppo, key=key, jacobian_penalty_fn=policy_jacobian_penalty,
        callback=None if callback is None else (lambda m, v=variant: callback(v, m)))
    wall = time.perf_counter() - t0
    ev = evaluate_smoothness(evaluate, jax.random.fold_in(key, 10**6),
                             num_episodes=config.eval_episodes, dt=config.task.dt,
                             cutoff_hz=config.cutoff_hz)
    examples[variant] = ev.pop("example_actions")
    rows.append(dict(variant=variant, train_wall_s=wall, compile_s=history[0]["compile_s"],
                     final_train_return=history[-1]["return"], **ev))
    histories[variant] = history
  return {"rows": rows, "histories": histories, "example_actions": examples,
          "dt": config.task.dt}


def plot_smoothness(results: dict[str, Any]):
  """Figure: first action dimension per variant over one evaluation episode, plus HF power bars."""
  import matplotlib.pyplot as plt
  fig, (ax_sig, ax_bar) = plt.subplots(1, 2, figsize=(10, 3.4),
                                       gridspec_kw={"width_ratios": [2, 1]})
  dt = results.get("dt", 1.0)
  for variant, actions in results["example_actions"].items():
    actions = np.asarray(actions)
    ax_sig.plot(np.arange(actions.shape[0]) * dt, actions[:, 0], lw=1, label=variant)
  ax_sig.set_xlabel("time [s]")
  ax_sig.set_ylabel("action[0]")
  ax_sig.legend(fontsize=7)
  names = [r["variant"] for r in results["rows"]]
  ax_bar.bar(range(len(names)), [r["hf_power"] for r in results["rows"]],
             color=[f"C{i}" for i in range(len(names))])
  ax_bar.set_xticks(range(len(names)))
  ax_bar.set_xticklabels(names, rotation=30, ha="right", fontsize=7)
  ax_bar.set_ylabel("high-frequency power")
  ax_bar.set_yscale("symlog", linthresh=1e-6)
  fig.tight_layout()
  return fig


def comparison_config_from(config: Any) -> ComparisonConfig:
  """Builds a `ComparisonConfig` from the ml_collections config of `experiments/lpn.py`."""
  return ComparisonConfig(
      variants=tuple(config.variants),
      ppo=pg.PPOConfig(state_size=PointMassTracking.state_size, **dict(config.ppo)),
      jacobian_coef=config.jacobian_coef, action_change_coef=config.action_change_coef,
      hidden=tuple(config.hidden), init_log_std=config.init_log_std,
      eval_episodes=config.eval_episodes, cutoff_hz=config.cutoff_hz, seed=config.seed,
      task=TrackingParams(**dict(config.task)))


def run_experiment(config: Any, workdir: str, *, log=print) -> dict[str, Any]:
  """The `experiments/lpn.py` binary: trains the variants, writes the run files, prints a table."""
  import os
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  cmp_config = comparison_config_from(config)
  writer = pg.RunWriter(workdir)

  def callback(variant, m):
    writer.write({"variant": variant, **m})
    if m["iteration"] % config.log_every == 0 or m["iteration"] == cmp_config.ppo.num_iterations - 1:
      log(f"[{variant}] iter {m['iteration']:4d} steps {m['env_steps']:7d} "
          f"return {m['return']:8.3f} wall {m['wall_s']:6.1f}s")

  results = run_comparison(cmp_config, callback=callback)
  summary = {"rows": results["rows"], "cutoff_hz": cmp_config.cutoff_hz,
             "jacobian_coef": cmp_config.jacobian_coef,
             "action_change_coef": cmp_config.action_change_coef,
             "env_steps": results["histories"][cmp_config.variants[0]][-1]["env_steps"]}
  writer.summary(summary)
  writer.close()
  fig, ax = plt.subplots(figsize=(5.5, 3.6))
  for variant, h in results["histories"].items():
    ax.plot([x["env_steps"] for x in h], [x["return"] for x in h], label=variant)
  ax.set_xlabel("env steps")
  ax.set_ylabel("episode return")
  ax.set_title("tracking task: return vs samples")
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, "curves.png"), dpi=100)
  plt.close(fig)
  fig = plot_smoothness(results)
  fig.savefig(os.path.join(workdir, "smoothness.png"), dpi=100)
  plt.close(fig)
  log("\n== LPN summary (deterministic eval) ==")
  log(f"{'variant':18s} {'track_err':>9s} {'return':>8s} {'hf_power':>10s} {'hf_frac':>8s} "
      f"{'train_s':>8s} {'compile_s':>9s}")
  for r in results["rows"]:
    log(f"{r['variant']:18s} {r['tracking_error']:9.4f} {r['eval_return']:8.2f} "
        f"{r['hf_power']:10.2e} {r['hf_fraction']:8.4f} {r['train_wall_s']:8.1f} "
        f"{r['compile_s']:9.1f}")
  return summary
