"""Deterministic neural inventory policies (plain pytrees): vanilla MLPs and a warehouse->store GNN.

Paper: Alvo, Russo, Kanoria, Lee, "Deep Reinforcement Learning for Inventory Networks: Toward Reliable
Policy Optimization", 2023, arXiv:2306.11246 (official `neural_networks.py`).

  VanillaOneStore   q = mu * softplus(MLP(x / mu) + 1)            MLP [32, 32, 32] ELU
  VanillaSerial     a_j = sigmoid(.) * on_hand_{j+1} (j < E-1),  top order mu * softplus(. + 1)
  VanillaWarehouse  desired_i = mu_i * softplus(. + 1), warehouse = sigmoid(.) * 4 * sum(mu)
  GNN (v3)          node encoders -> message passing along warehouse<->store edges with weights
                    shared across stores -> per-node heads (same output maps as above)

Deviations: inputs are divided by the mean demand and the softplus outputs multiplied by it (the official
nets see raw units; the scaling makes one learning rate work across settings). The GNN uses residual
updates, mean aggregation over stores and `message_steps` (default 2) rounds; each store's features
include its own primitives (mu, CV, p, h, L) so one set of shared weights serves heterogeneous stores.
"""
from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rlpost.control.inventory import env as env_lib
from rlpost.control.inventory.baselines import Policy

Array = jax.Array
Params = Any

# sigmoid(-log 3) = 1/4, so an untrained warehouse head orders about the mean total demand.
_WH_OFFSET = float(-np.log(3.0))


def mlp_init(key: Array, sizes: Sequence[int], *, final_scale: float = 1.0) -> list[dict]:
  """He-style normal init for an MLP with layer sizes [in, h1, ..., out]."""
  params = []
  keys = jax.random.split(key, len(sizes) - 1)
  for i, (k, n_in, n_out) in enumerate(zip(keys, sizes[:-1], sizes[1:])):
    scale = np.sqrt(1.0 / n_in) * (final_scale if i == len(sizes) - 2 else np.sqrt(2.0))
    params.append({"w": jax.random.normal(k, (n_in, n_out)) * scale, "b": jnp.zeros((n_out,))})
  return params


def mlp_apply(params: list[dict], x: Array, *, activation=jax.nn.elu) -> Array:
  for layer in params[:-1]:
    x = activation(x @ layer["w"] + layer["b"])
  return x @ params[-1]["w"] + params[-1]["b"]


def make_mlp_policy(problem: Any, *, hidden: Sequence[int] = (32, 32, 32)) -> Policy:
  """Vanilla MLP policy for any problem in `env` (dispatches on the problem type)."""
  if isinstance(problem, env_lib.SingleStore):
    mu = problem.mean

    def init(key):
      return mlp_init(key, [problem.state_dim, *hidden, 1], final_scale=0.1)

    def apply(params, state):
      return mu * jax.nn.softplus(mlp_apply(params, state / mu)[..., 0] + 1.0)

    return Policy(init, apply)

  if isinstance(problem, env_lib.Serial):
    mu, e, k = problem.mean, problem.n_echelons, max(problem.lead_times)

    def init(key):
      return mlp_init(key, [e * k, *hidden, e], final_scale=0.1)

    def apply(params, state):
      out = mlp_apply(params, state.reshape(*state.shape[:-2], e * k) / mu)
      on_hand = state[..., 0]
      ship = jax.nn.sigmoid(out[..., :-1]) * jax.nn.relu(on_hand[..., 1:])
      top = mu * jax.nn.softplus(out[..., -1:] + 1.0)
      return jnp.concatenate([ship, top], axis=-1)

    return Policy(init, apply)

  if isinstance(problem, env_lib.OneWarehouse):
    n, ks = problem.n_stores, problem.store_dim
    means = np.asarray(problem.means, np.float32)
    total = float(means.sum())

    def init(key):
      return mlp_init(key, [n * ks + problem.warehouse_lead_time, *hidden, n + 1], final_scale=0.1)

    def apply(params, state):
      xs = (state.stores / means[:, None]).reshape(*state.stores.shape[:-2], n * ks)
      out = mlp_apply(params, jnp.concatenate([xs, state.warehouse / total], axis=-1))
      return env_lib.WarehouseAction(
          stores=means * jax.nn.softplus(out[..., :n] + 1.0),
          warehouse=problem.warehouse_bound * jax.nn.sigmoid(out[..., n] + _WH_OFFSET))

    return Policy(init, apply)
  raise TypeError(f"no MLP policy for problem type {type(problem).__name__}")


def make_gnn_policy(problem: env_lib.OneWarehouse, *, embed: int = 32,
                    hidden: Sequence[int] = (32, 32), message_steps: int = 2) -> Policy:
  """GNN over the one-warehouse topology; all store-side weights are shared across stores.

  Node features: store i -> [x_i / mu_i, mu_i / 5, CV_i, p_i / 10, h_i, L_i / 3];
  warehouse -> [x_w / sum(mu), h_w, log(N)]. Per round r:
    m_w   = mean_i phi_msg(e_i)
    e_w  += phi_w([e_w, m_w])
    e_i  += phi_s([e_i, e_w])            (uses the updated warehouse embedding)
  Heads: desired_i = mu_i * softplus(psi_s(e_i) + 1), warehouse = sigmoid(psi_w(e_w)) * bound.
  The number of stores is not baked into the weights, so one trained set of weights runs at any N.
  """
  if not isinstance(problem, env_lib.OneWarehouse):
    raise TypeError("make_gnn_policy needs a OneWarehouse problem")
  ks, kw = problem.store_dim, problem.warehouse_lead_time
  means = np.asarray(problem.means, np.float32)
  cv = np.asarray(problem.stds, np.float32) / means
  prim = np.stack([means / 5.0, cv, np.asarray(problem.p, np.float32) / 10.0,
                   np.asarray(problem.h, np.float32),
                   np.asarray(problem.lead_times, np.float32) / 3.0], axis=-1)  # [N, 5]
  total = float(means.sum())
  wh_prim = np.asarray([problem.warehouse_h, np.log(problem.n_stores)], np.float32)
  h = list(hidden)

  def init(key):
    keys = iter(jax.random.split(key, 4 + 3 * message_steps))
    return {
        "enc_s": mlp_init(next(keys), [ks + prim.shape[-1], *h, embed]),
        "enc_w": mlp_init(next(keys), [kw + wh_prim.shape[-1], *h, embed]),
        "rounds": [{"msg": mlp_init(next(keys), [embed, *h, embed], final_scale=0.1),
                    "upd_w": mlp_init(next(keys), [2 * embed, *h, embed], final_scale=0.1),
                    "upd_s": mlp_init(next(keys), [2 * embed, *h, embed], final_scale=0.1)}
                   for _ in range(message_steps)],
        "head_s": mlp_init(next(keys), [embed, *h, 1], final_scale=0.1),
        "head_w": mlp_init(next(keys), [embed, *h, 1], final_scale=0.1),
    }

  def apply(params, state):
    batch = state.stores.shape[:-2]
    fs = jnp.concatenate([state.stores / means[:, None],
                          jnp.broadcast_to(prim, (*batch, *prim.shape))], axis=-1)
    fw = jnp.concatenate([state.warehouse / total,
                          jnp.broadcast_to(wh_prim, (*batch, wh_prim.shape[0]))], axis=-1)
    e_s = mlp_apply(params["enc_s"], fs)  # [..., N, E]
    e_w = mlp_apply(params["enc_w"], fw)  # [..., E]
    for rnd in params["rounds"]:
      m_w = mlp_apply(rnd["msg"], e_s).mean(-2)
      e_w = e_w + mlp_apply(rnd["upd_w"], jnp.concatenate([e_w, m_w], -1))
      e_ws = jnp.broadcast_to(e_w[..., None, :], e_s.shape)
      e_s = e_s + mlp_apply(rnd["upd_s"], jnp.concatenate([e_s, e_ws], -1))
    return env_lib.WarehouseAction(
        stores=means * jax.nn.softplus(mlp_apply(params["head_s"], e_s)[..., 0] + 1.0),
        warehouse=problem.warehouse_bound * jax.nn.sigmoid(
            mlp_apply(params["head_w"], e_w)[..., 0] + _WH_OFFSET))

  return Policy(init, apply)
