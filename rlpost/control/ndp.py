"""Neural Dynamic Policies: a network emits the goal and forcing weights of a DMP.

Paper: Bahl, Mukadam, Gupta, Pathak, "Neural Dynamic Policies for End-to-End Sensorimotor
Learning", NeurIPS 2020, arXiv 2012.02788.

The dynamic movement primitive (per degree of freedom, Euler-integrated like the official
`dmp_layer.integrate`, the phase x advanced before the basis is evaluated, y updated with the old z):

    canonical system   tau x' = -a_x x,                x(0) = 1
    basis              psi_i(x) = exp(-h_i (x - c_i)^2),  c_i = exp(-a_x i / (N - 1)),
                                                       h_i = N^1.5 / (c_i a_x)
    forcing            f(x) = (sum_i w_i psi_i(x) / sum_i psi_i(x)) x (g - y0)
    transformation     tau z' = a_z (b_z (g - y) - z) + f,   tau y' = z,   b_z = a_z / 4

with dt = tau / (T l): T actions, each the difference of the trajectory over l Euler substeps.
z(0) = tau * dy0.

Deviations (documented in BUILD_NOTES too):
- `NDPPolicy` parametrises the goal relative to the start, g = y0 + goal_scale * net_g(s), and
  scales the last layer by 0.01 at init so the first trajectories are gentle; the official code
  emits the absolute goal and uses an orthogonal init of gain 1.
- `forcing_scaling="unit"` drops the (g - y0) factor so closed strokes (g ~ y0, digits 0 and 8)
  remain learnable; the paper's form `"goal_offset"` is the default everywhere except the
  stroke-imitation experiment.
- Imitation uses synthetic strokes (`envs.strokes`) rather than S-MNIST, at T 40, l 5, N 20.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from flax import nnx
import numpy as np
import optax

from rlpost.control import policy_gradient as pg
from rlpost.control.envs import make_strokes

Array = jax.Array
_RBFS = ("gaussian", "multiquadric", "inverse_quadric", "inverse_multiquadric", "linear")


def dmp_basis(num_basis: int, *, a_x: float = 1.0) -> tuple[Array, Array]:
  """Centres `c [N]` and widths `h [N]` of the DMP basis (official `DMPParameters`)."""
  c = jnp.exp(-a_x * jnp.linspace(0.0, 1.0, num_basis))
  h = num_basis**1.5 / c / a_x
  return c, h


def _rbf(eps: Array, h: Array, kind: str) -> Array:
  if kind == "gaussian":
    return jnp.exp(-h * eps)
  if kind == "multiquadric":
    return jnp.sqrt(1.0 + h * eps)
  if kind == "inverse_quadric":
    return 1.0 / (1.0 + h * eps)
  if kind == "inverse_multiquadric":
    return 1.0 / jnp.sqrt(1.0 + h * eps)
  return h * eps  # linear


def dmp_integrate(y0: Array, dy0: Array, goal: Array, weights: Array, *, num_steps: int,
                  dt: float, tau: float = 1.0, a_z: float = 25.0, a_x: float = 1.0,
                  rbf: str = "gaussian", forcing_scaling: str = "goal_offset"
                  ) -> tuple[Array, Array, Array]:
  """Euler-integrates the DMP of the module docstring for `num_steps` steps with `lax.scan`.

  Args:
    y0, dy0, goal: `[d]` start position, start velocity and goal.
    weights: `[d, N]` forcing weights.
    num_steps: number of Euler steps (T * l in the paper's notation).
    dt: step size (tau / (T * l) in the paper).
    tau, a_z, a_x: time constant and gains; b_z = a_z / 4 (critically damped).
    rbf: basis kind, one of "gaussian" (paper), "multiquadric", "inverse_quadric",
      "inverse_multiquadric", "linear".
    forcing_scaling: "goal_offset" (paper: f scaled by g - y0) or "unit" (no scaling).

  Returns:
    `(y, dy, ddy)`, each `[num_steps + 1, d]`; row 0 is the initial condition.
  """
  if rbf not in _RBFS:
    raise ValueError(f"rbf must be one of {_RBFS}; got {rbf!r}")
  if forcing_scaling not in ("goal_offset", "unit"):
    raise ValueError(f"forcing_scaling must be 'goal_offset' or 'unit'; got {forcing_scaling!r}")
  y0, dy0, goal, weights = (jnp.asarray(v, jnp.float32) for v in (y0, dy0, goal, weights))
  c, h = dmp_basis(weights.shape[-1], a_x=a_x)
  b_z = a_z / 4.0
  scale = (goal - y0) if forcing_scaling == "goal_offset" else jnp.ones_like(goal)

  def step(carry, _):
    x, y, z = carry
    x = x - a_x * x / tau * dt
    psi = _rbf((x - c)**2, h, rbf)
    f = (weights @ psi) / jnp.sum(psi) * x * scale
    dz = (a_z * (b_z * (goal - y) - z) + f) / tau
    dy = z / tau
    y, z = y + dy * dt, z + dz * dt
    return (x, y, z), (y, dy, dz)

  init = (jnp.ones((), jnp.float32), y0, dy0 * tau)
  _, (ys, dys, ddys) = jax.lax.scan(step, init, None, length=num_steps)
  return (jnp.concatenate([y0[None], ys]), jnp.concatenate([dy0[None], dys]),
          jnp.concatenate([dy0[None] * tau, ddys]))


def trajectory_actions(y: Array, substeps: int) -> Array:
  """Differences of `y [T*l + 1, d]` sub-sampled every `l` steps: `[T, d]` actions."""
  return jnp.diff(y[::substeps], axis=0)


@dataclasses.dataclass(frozen=True)
class DMPSpec:
  """DMP hyperparameters (DMPNet class defaults of the official code)."""
  num_basis: int = 5
  chunk_len: int = 10  # T
  substeps: int = 10  # l
  tau: float = 1.0
  a_z: float = 25.0
  a_x: float = 1.0
  rbf: str = "gaussian"
  forcing_scaling: str = "goal_offset"

  def __post_init__(self):
    for name in ("num_basis", "chunk_len", "substeps"):
      if getattr(self, name) < 1:
        raise ValueError(f"DMPSpec.{name} must be >= 1; got {getattr(self, name)}")
    if self.tau <= 0 or self.a_z <= 0 or self.a_x <= 0:
      raise ValueError("DMPSpec.tau, a_z and a_x must be > 0")

  @property
  def num_steps(self) -> int:
    return self.chunk_len * self.substeps

  @property
  def dt(self) -> float:
    return self.tau / self.num_steps

  def integrate(self, y0, dy0, goal, weights):
    return dmp_integrate(y0, dy0, goal, weights, num_steps=self.num_steps, dt=self.dt,
                         tau=self.tau, a_z=self.a_z, a_x=self.a_x, rbf=self.rbf,
                         forcing_scaling=self.forcing_scaling)[0]


class NDPPolicy(nnx.Module):
  """NDP actor: obs -> MLP -> (g, w) -> DMP trajectory -> `chunk_len` position increments.

  The DMP starts at `y0 = obs[position_index : position_index + dof]` with velocity
  `velocity_scale * obs[velocity_index : velocity_index + dof]` (zero when `velocity_index` is
  None); `velocity_scale` converts the env's velocity unit to "per tau". Network outputs are
  scaled by `goal_scale` (goal offset) and `weight_scale` (forcing weights; the paper uses 100).
  """

  def __init__(self, obs_size: int, dof: int, *, rngs: nnx.Rngs, dmp: DMPSpec = DMPSpec(),
               hidden: Sequence[int] = (100, 100), position_index: int = 0,
               velocity_index: int | None = None, velocity_scale: float = 1.0,
               goal_scale: float = 1.0, weight_scale: float = 100.0):
    self.dmp = dmp
    self.chunk_len = dmp.chunk_len
    self.dof = dof
    self.position_index, self.velocity_index = position_index, velocity_index
    self.velocity_scale, self.goal_scale, self.weight_scale = velocity_scale, goal_scale, weight_scale
    self.net = pg.MLP(obs_size, dof * (dmp.num_basis + 1), hidden=hidden, rngs=rngs,
                      head_scale=0.01)

  def dmp_params(self, obs: Array) -> tuple[Array, Array, Array, Array]:
    """`(y0, dy0, goal, weights [dof, N])` for one observation."""
    out = self.net(obs)
    y0 = jax.lax.dynamic_slice_in_dim(obs, self.position_index, self.dof)
    if self.velocity_index is None:
      dy0 = jnp.zeros_like(y0)
    else:
      dy0 = self.velocity_scale * jax.lax.dynamic_slice_in_dim(obs, self.velocity_index, self.dof)
    goal = y0 + self.goal_scale * out[:self.dof]
    weights = self.weight_scale * out[self.dof:].reshape(self.dof, self.dmp.num_basis)
    return y0, dy0, goal, weights

  def trajectory(self, obs: Array) -> Array:
    """The integrated DMP `[T*l + 1, dof]` for one observation."""
    return self.dmp.integrate(*self.dmp_params(obs))

  def action_chunk(self, obs: Array) -> Array:
    return trajectory_actions(self.trajectory(obs), self.dmp.substeps)


# ----------------------------------------------------------------------------- imitation


class StrokeNDP(nnx.Module):
  """Image -> (g, w) -> DMP stroke of `chunk_len + 1` points starting at the given pen-down y0."""

  def __init__(self, input_size: int, *, rngs: nnx.Rngs, dmp: DMPSpec,
               hidden: Sequence[int] = (128, 128), weight_scale: float = 100.0):
    self.dmp, self.weight_scale = dmp, weight_scale
    self.net = pg.MLP(input_size, 2 * (dmp.num_basis + 1), hidden=hidden, rngs=rngs,
                      head_scale=0.1)

  def __call__(self, image: Array, y0: Array) -> Array:
    out = self.net(image.reshape(-1))
    goal = y0 + out[:2]
    weights = self.weight_scale * out[2:].reshape(2, self.dmp.num_basis)
    y = self.dmp.integrate(y0, jnp.zeros(2), goal, weights)
    return y[::self.dmp.substeps]


class StrokeMLP(nnx.Module):
  """Image -> raw waypoints: `y0 + [0, MLP(image)]`, `num_points` points."""

  def __init__(self, input_size: int, *, num_points: int, rngs: nnx.Rngs,
               hidden: Sequence[int] = (128, 128)):
    self.num_points = num_points
    self.net = pg.MLP(input_size, 2 * (num_points - 1), hidden=hidden, rngs=rngs,
                      head_scale=0.1)

  def __call__(self, image: Array, y0: Array) -> Array:
    offsets = self.net(image.reshape(-1)).reshape(self.num_points - 1, 2)
    return y0 + jnp.concatenate([jnp.zeros((1, 2)), offsets])


def stroke_metrics(pred: Array, target: Array) -> dict[str, Array]:
  """Error and smoothness of strokes `[n, P, 2]`.

  `error`: mean Euclidean distance per waypoint. `roughness`: mean squared second difference
  `||y_{t+1} - 2 y_t + y_{t-1}||^2` (a discrete acceleration energy, x 1e4 for readability);
  `target_roughness` is the same quantity for the ground truth.
  """
  def rough(y):
    return 1e4 * jnp.mean(jnp.sum((y[:, 2:] - 2 * y[:, 1:-1] + y[:, :-2])**2, axis=-1))

  return {"error": jnp.mean(jnp.linalg.norm(pred - target, axis=-1)),
          "roughness": rough(pred), "target_roughness": rough(target)}


def fit_stroke_model(model: nnx.Module, data: dict[str, Array], *, key: Array, steps: int,
                     batch_size: int = 32, learning_rate: float = 1e-3):
  """Adam on the mean squared waypoint error; one jitted `lax.scan` over `steps`."""
  graphdef, params = nnx.split(model)
  tx = optax.adam(learning_rate)
  n = data["traj"].shape[0]
  batch_size = min(batch_size, n)

  def loss_fn(params, idx):
    m = nnx.merge(graphdef, params)
    pred = jax.vmap(m)(data["image"][idx], data["y0"][idx])
    return jnp.mean(jnp.sum((pred - data["traj"][idx])**2, axis=-1))

  def step(carry, k):
    params, opt_state = carry
    idx = jax.random.choice(k, n, (batch_size,), replace=False)
    loss, grads = jax.value_and_grad(loss_fn)(params, idx)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), loss

  @jax.jit
  def run(params, key):
    return jax.lax.scan(step, (params, tx.init(params)), jax.random.split(key, steps))

  (params, _), losses = run(params, key)
  return nnx.merge(graphdef, params), losses


def predict_strokes(model: nnx.Module, data: dict[str, Array]) -> Array:
  return jax.jit(jax.vmap(model))(data["image"], data["y0"])


def run_imitation(*, train_sizes: Sequence[int] = (20, 100, 500), test_size: int = 500,
                  steps: int = 2000, seed: int = 0, dmp: DMPSpec | None = None,
                  weight_scale: float = 100.0, hidden: Sequence[int] = (128, 128),
                  num_examples: int = 4) -> dict[str, Any]:
  """NDP vs raw-waypoint MLP on synthetic strokes for each training-set size.

  Returns `{"rows": [{"model", "train_size", "error", "roughness", "target_roughness",
  "train_wall_s"}...], "examples": {"target", "ndp", "mlp"}}` (examples from the largest size).
  """
  dmp = dmp or DMPSpec(num_basis=20, chunk_len=40, substeps=5, a_z=25.0, forcing_scaling="unit")
  num_points = dmp.chunk_len + 1
  key = pg.prng_key(seed)
  test = make_strokes(jax.random.fold_in(key, 1), test_size, num_points=num_points)
  pool = make_strokes(jax.random.fold_in(key, 2), max(train_sizes), num_points=num_points)
  input_size = int(np.prod(test["image"].shape[1:]))
  rows, examples = [], {"target": np.asarray(test["traj"][:num_examples])}
  for size in train_sizes:
    train = jax.tree.map(lambda x: x[:size], pool)
    for name in ("ndp", "mlp"):
      rngs = nnx.Rngs(seed)
      if name == "ndp":
        model = StrokeNDP(input_size, rngs=rngs, dmp=dmp, hidden=hidden, weight_scale=weight_scale)
      else:
        model = StrokeMLP(input_size, num_points=num_points, rngs=rngs, hidden=hidden)
      t0 = time.perf_counter()
      model, losses = fit_stroke_model(model, train, key=jax.random.fold_in(key, size),
                                       steps=steps)
      jax.block_until_ready(losses)
      wall = time.perf_counter() - t0
      pred = predict_strokes(model, test)
      metrics = {k: float(v) for k, v in stroke_metrics(pred, test["traj"]).items()}
      rows.append(dict(model=name, train_size=int(size), final_train_loss=float(losses[-1]),
                       train_wall_s=wall, **metrics))
      examples[name] = np.asarray(pred[:num_examples])
  return {"rows": rows, "examples": examples}


# ----------------------------------------------------------------------------- RL


def make_rl_models(env: Any, *, kind: str, seed: int, dmp: DMPSpec, env_dt: float,
                   hidden: Sequence[int] = (100, 100), init_log_std: float = -1.0
                   ) -> pg.ActorCritic:
  """An `ActorCritic` with an NDP actor (`kind="ndp"`) or a per-step MLP actor (`"mlp"`)."""
  rngs = nnx.Rngs(seed)
  if kind == "ndp":
    actor = NDPPolicy(env.observation_size, env.action_size, rngs=rngs, dmp=dmp, hidden=hidden,
                      position_index=env.position_index, velocity_index=env.velocity_index,
                      velocity_scale=dmp.chunk_len * env_dt / dmp.tau)
  elif kind == "mlp":
    actor = pg.MLPPolicy(env.observation_size, env.action_size, hidden=hidden, rngs=rngs)
  else:
    raise ValueError(f"kind must be 'ndp' or 'mlp'; got {kind!r}")
  return pg.ActorCritic(actor, env.observation_size, env.action_size, rngs=rngs,
                        critic_hidden=hidden, init_log_std=init_log_std)


# ----------------------------------------------------------------------------- plotting


def plot_rollout(imitation: dict[str, Any] | None = None,
                 rl_histories: dict[str, list[dict]] | None = None):
  """Figure: imitation strokes (target vs NDP vs MLP) and/or RL return-vs-samples curves.

  Args:
    imitation: the dict returned by `run_imitation` (uses its `examples`).
    rl_histories: `{"task/policy": history}` with `env_steps` and `return` per entry.
  """
  import matplotlib.pyplot as plt
  n_ex = 0 if imitation is None else len(imitation["examples"]["target"])
  n_cols = n_ex + (1 if rl_histories else 0)
  fig, axes = plt.subplots(1, max(n_cols, 1), figsize=(3.2 * max(n_cols, 1), 3.2), squeeze=False)
  axes = axes[0]
  for i in range(n_ex):
    ex = imitation["examples"]
    ax = axes[i]
    ax.plot(ex["target"][i, :, 0], ex["target"][i, :, 1], "k-", lw=3, alpha=0.3, label="target")
    for name, style in (("ndp", "C0.-"), ("mlp", "C1.-")):
      if name in ex:
        ax.plot(ex[name][i, :, 0], ex[name][i, :, 1], style, ms=3, lw=1, label=name)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    if i == 0:
      ax.legend(fontsize=7)
  if rl_histories:
    ax = axes[n_ex]
    for name, hist in rl_histories.items():
      ax.plot([h["env_steps"] for h in hist], [h["return"] for h in hist], label=name)
    ax.set_xlabel("env steps")
    ax.set_ylabel("episode return")
    ax.legend(fontsize=7)
  fig.tight_layout()
  return fig


# ----------------------------------------------------------------------------- experiment

RL_TASKS = ("reacher", "throwing")


def _make_task(name: str):
  from rlpost.control import envs
  if name == "reacher":
    return envs.Reacher2D()
  if name == "throwing":
    return envs.Throwing()
  raise ValueError(f"config.rl.tasks entries must be in {RL_TASKS}; got {name!r}")


def run_rl(config: Any, *, log=print, writer: pg.RunWriter | None = None
           ) -> dict[str, list[dict]]:
  """PPO with NDP vs per-step MLP actors on each task of `config.rl`; returns histories."""
  histories = {}
  for task in config.tasks:
    env = _make_task(task)
    dmp_cfg = config.dmp[task]
    dmp = DMPSpec(**dict(dmp_cfg))
    params = env.default_params
    ppo = pg.PPOConfig(**dict(config.ppo))
    for kind in config.policies:
      model = make_rl_models(env, kind=kind, seed=config.seed, dmp=dmp, env_dt=params.dt,
                             hidden=tuple(config.hidden), init_log_std=config.init_log_std)
      name = f"{task}/{kind}"

      def callback(m, name=name):
        if writer is not None:
          writer.write({"part": "rl", "run": name, **m})
        if m["iteration"] % config.log_every == 0 or m["iteration"] == ppo.num_iterations - 1:
          log(f"[{name}] iter {m['iteration']:4d} steps {m['env_steps']:7d} "
              f"return {m['return']:8.3f} wall {m['wall_s']:6.1f}s")

      _, history, _ = pg.train_ppo(env, params, model, ppo, key=pg.prng_key(config.seed),
                                   callback=callback)
      histories[name] = history
  return histories


def run_experiment(config: Any, workdir: str, *, log=print) -> dict[str, Any]:
  """The `experiments/ndp.py` binary: imitation table + RL curves; writes the run files."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import os

  if config.mode not in ("all", "imitation", "rl"):
    raise ValueError(f"config.mode must be 'all', 'imitation' or 'rl'; got {config.mode!r}")
  writer = pg.RunWriter(workdir)
  summary: dict[str, Any] = {"mode": config.mode}
  imitation, histories = None, {}
  if config.mode in ("all", "imitation"):
    im = config.imitation
    if min(im.train_sizes) < 1 or im.steps < 1:
      raise ValueError("config.imitation.train_sizes and steps must be >= 1")
    log(f"imitation: train sizes {tuple(im.train_sizes)}, {im.steps} Adam steps each")
    imitation = run_imitation(
        train_sizes=tuple(im.train_sizes), test_size=im.test_size, steps=im.steps,
        seed=config.seed, dmp=DMPSpec(**dict(im.dmp)), weight_scale=im.weight_scale,
        hidden=tuple(im.hidden))
    for row in imitation["rows"]:
      writer.write({"part": "imitation", **row})
      log(f"  {row['model']:4s} n={row['train_size']:5d} error {row['error']:.4f} "
          f"roughness {row['roughness']:.3f} (data {row['target_roughness']:.3f})")
    summary["imitation"] = imitation["rows"]
  if config.mode in ("all", "rl"):
    histories = run_rl(config.rl, log=log, writer=writer)
    summary["rl"] = [
        {"run": name, "env_steps": h[-1]["env_steps"], "final_return": h[-1]["return"],
         "best_return": max(x["return"] for x in h),
         "return_last5": float(np.mean([x["return"] for x in h[-5:]])),
         "train_wall_s": h[-1]["wall_s"], "compile_s": h[0]["compile_s"]}
        for name, h in histories.items()]
  writer.summary(summary)
  writer.close()

  fig = plot_rollout(imitation, None)
  fig.savefig(os.path.join(workdir, "rollouts.png"), dpi=100)
  plt.close(fig)
  tasks = sorted({n.split("/")[0] for n in histories})
  n_panels = len(tasks) + (imitation is not None)
  fig, axes = plt.subplots(1, max(n_panels, 1), figsize=(4.5 * max(n_panels, 1), 3.5),
                           squeeze=False)
  for ax, task in zip(axes[0], tasks):
    for name, h in histories.items():
      if name.startswith(task + "/"):
        ax.plot([x["env_steps"] for x in h], [x["return"] for x in h], label=name.split("/")[1])
    ax.set_title(f"{task}: return vs samples")
    ax.set_xlabel("env steps")
    ax.legend()
  if imitation is not None:
    ax = axes[0][-1]
    for model in ("ndp", "mlp"):
      rows = [r for r in imitation["rows"] if r["model"] == model]
      ax.plot([r["train_size"] for r in rows], [r["error"] for r in rows], "o-", label=model)
    ax.set_xscale("log")
    ax.set_xlabel("training strokes")
    ax.set_ylabel("test waypoint error")
    ax.set_title("imitation")
    ax.legend()
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, "curves.png"), dpi=100)
  plt.close(fig)

  log("\n== NDP summary ==")
  if imitation is not None:
    log(f"{'model':6s} {'n_train':>7s} {'error':>8s} {'roughness':>10s}")
    for r in imitation["rows"]:
      log(f"{r['model']:6s} {r['train_size']:7d} {r['error']:8.4f} {r['roughness']:10.3f}")
  for r in summary.get("rl", []):
    log(f"{r['run']:18s} steps {r['env_steps']:7d} final {r['final_return']:8.3f} "
        f"last5 {r['return_last5']:8.3f} wall {r['train_wall_s']:6.1f}s")
  return summary
