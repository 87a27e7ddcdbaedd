"""Small tabular-MDP helpers: value iteration, exact policy evaluation, robust VI, test MDPs.

All functions take a ``rlpost.core.distributional.TabularMDP`` (transitions P[s, a, s'], rewards
r[s, a, s'], absorbing zero-reward terminal states, discount) and are jit-able. Robust variants take
a finite set of transition kernels ``models[J, S, A, S']`` and the sa-rectangular convex hull they
span: the adversary picks a mixture of the J kernels independently per (s, a), so the inner
minimum of a linear function is attained at one of the J vertices.
"""
from __future__ import annotations

import functools
from typing import Tuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

from rlpost.core.distributional import TabularMDP


def _live(mdp: TabularMDP) -> chex.Array:
  return 1.0 - mdp.terminal.astype(jnp.float32)


def q_backup(values: chex.Array, transitions: chex.Array, mdp: TabularMDP) -> chex.Array:
  """Q[s, a] = sum_s' P[s, a, s'] (r[s, a, s'] + gamma V[s']), zero at terminal states."""
  q = jnp.einsum("sap,sap->sa", transitions, mdp.rewards + mdp.discount * values[None, None, :])
  return q * _live(mdp)[:, None]


@functools.partial(jax.jit, static_argnames=("num_iterations",))
def value_iteration(mdp: TabularMDP, *, num_iterations: int = 200) -> Tuple[chex.Array, chex.Array]:
  """Standard VI: V <- max_a Q. Returns (V[S], Q[S, A])."""
  def body(_, v):
    return jnp.max(q_backup(v, mdp.transitions, mdp), axis=-1)
  v = jax.lax.fori_loop(0, num_iterations, body, jnp.zeros(mdp.terminal.shape, jnp.float32))
  return v, q_backup(v, mdp.transitions, mdp)


def policy_evaluation(policy: chex.Array, transitions: chex.Array, mdp: TabularMDP) -> chex.Array:
  """Exact V^pi = (I - gamma P_pi)^{-1} r_pi for a deterministic policy int[S] on ``transitions``.

  Terminal rows are zeroed (absorbing, no reward). Needs gamma < 1 or a proper policy.
  """
  num_states = mdp.terminal.shape[0]
  rows = jnp.arange(num_states)
  p_pi = transitions[rows, policy] * _live(mdp)[:, None]
  r_pi = jnp.sum(transitions[rows, policy] * mdp.rewards[rows, policy], axis=-1) * _live(mdp)
  return jnp.linalg.solve(jnp.eye(num_states) - mdp.discount * p_pi, r_pi)


@functools.partial(jax.jit, static_argnames=("num_iterations",))
def robust_value_iteration(
    models: chex.Array, mdp: TabularMDP, *, num_iterations: int = 300
) -> Tuple[chex.Array, chex.Array]:
  """Robust VI over the sa-rectangular hull of ``models[J, S, A, S']`` (rewards from ``mdp``).

  V(s) = max_a min_j sum_s' P_j[s, a, s'] (r + gamma V(s')) (Iyengar 2005; Nilim & El Ghaoui 2005).
  Returns (V[S], robust Q[S, A]).
  """
  def robust_q(v):
    return jnp.min(jax.vmap(lambda p: q_backup(v, p, mdp))(models), axis=0)
  v = jax.lax.fori_loop(
      0, num_iterations, lambda _, v: jnp.max(robust_q(v), axis=-1),
      jnp.zeros(mdp.terminal.shape, jnp.float32))
  return v, robust_q(v)


@functools.partial(jax.jit, static_argnames=("num_iterations",))
def robust_policy_evaluation(
    policy: chex.Array, models: chex.Array, mdp: TabularMDP, *, num_iterations: int = 300
) -> chex.Array:
  """Worst-case value of a deterministic policy over the sa-rectangular hull of ``models``."""
  rows = jnp.arange(mdp.terminal.shape[0])

  def body(_, v):
    q = jnp.min(jax.vmap(lambda p: q_backup(v, p, mdp))(models), axis=0)
    return q[rows, policy]
  return jax.lax.fori_loop(
      0, num_iterations, body, jnp.zeros(mdp.terminal.shape, jnp.float32))


# --------------------------------------------------------------------------- test MDPs


def layered_mdp(
    seed: int, *, num_layers: int = 3, width: int = 3, num_actions: int = 2,
    reward_values=(-1, 0, 1, 2), discount: float = 1.0,
) -> TabularMDP:
  """Random episodic MDP: states in layers, moves only to the next layer, last layer terminal.

  Integer rewards, so with gamma = 1 the stock-augmented return stays on integer grids.
  """
  rng = np.random.default_rng(seed)
  num_states = num_layers * width + 1  # + one terminal sink
  p = np.zeros((num_states, num_actions, num_states), np.float32)
  r = np.zeros_like(p)
  sink = num_states - 1
  for layer in range(num_layers):
    for i in range(width):
      s = layer * width + i
      targets = (np.arange(width) + (layer + 1) * width) if layer + 1 < num_layers else [sink]
      for a in range(num_actions):
        w = rng.dirichlet(np.ones(len(targets)))
        p[s, a, targets] = w
        r[s, a, targets] = rng.choice(reward_values, size=len(targets))
  p[sink, :, sink] = 1.0
  terminal = np.zeros(num_states, bool)
  terminal[sink] = True
  return TabularMDP(jnp.asarray(p), jnp.asarray(r), jnp.asarray(terminal), discount)


def lottery_bridge_mdp(
    *, lottery_high: float = 2.0, risky_low: float = 0.0, risky_high: float = 3.0,
    risky_low_prob: float = 0.2, safe_reward: float = 1.0,
) -> TabularMDP:
  """A 6-cell gridworld where the CVaR-best action at the bridge depends on the reward so far.

  Cells: 0 start -> (wind) 1 or 2 with reward 0 or ``lottery_high`` (prob 1/2 each) -> both
  funnel into 3, the bridge. At the bridge, action 0 takes the safe exit (reward ``safe_reward``)
  and action 1 crosses (``risky_low`` w.p. ``risky_low_prob`` else ``risky_high``). Cells 4 and 5
  are terminal. A stock-blind policy cannot tell at cell 3 how the lottery went; a stock-augmented
  one can. Two actions everywhere (only the bridge's choice matters), gamma = 1.
  """
  p = np.zeros((6, 2, 6), np.float32)
  r = np.zeros_like(p)
  for a in range(2):
    p[0, a, 1] = p[0, a, 2] = 0.5
    r[0, a, 2] = lottery_high
    p[1, a, 3] = p[2, a, 3] = 1.0
    p[4, a, 4] = p[5, a, 5] = 1.0
  p[3, 0, 4] = 1.0
  r[3, 0, 4] = safe_reward
  p[3, 1, 4] = risky_low_prob
  r[3, 1, 4] = risky_low
  p[3, 1, 5] = 1.0 - risky_low_prob
  r[3, 1, 5] = risky_high
  terminal = np.array([False, False, False, False, True, True])
  return TabularMDP(jnp.asarray(p), jnp.asarray(r), jnp.asarray(terminal), 1.0)


def bandit_mdp() -> TabularMDP:
  """One-step bandit: arm 0 pays 1 surely; arm 1 pays 0 w.p. 0.1 and 2 w.p. 0.9 (mean 1.8)."""
  p = np.zeros((3, 2, 3), np.float32)
  r = np.zeros_like(p)
  p[0, 0, 1] = 1.0
  r[0, 0, 1] = 1.0
  p[0, 1, 1] = 0.1
  p[0, 1, 2] = 0.9
  r[0, 1, 2] = 2.0
  p[1, :, 1] = p[2, :, 2] = 1.0
  terminal = np.array([False, True, True])
  return TabularMDP(jnp.asarray(p), jnp.asarray(r), jnp.asarray(terminal), 1.0)
