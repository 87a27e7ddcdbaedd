"""Distributional dynamic programming with stock augmentation on tabular MDPs.

Paper: B. A. Pires, M. Rowland, D. Borsa, Z. D. Guo, K. Khetarpal, A. Barreto, D. Abel, R. Munos,
W. Dabney, "Optimizing Return Distributions with Distributional Dynamic Programming", JMLR 2025,
arXiv 2501.13028.

The state is augmented with a *stock* c, a rescaled running sum of rewards:
  c_{t+1} = (c_t + R_{t+1}) / gamma,   so that   c_0 + G_0 = gamma^t (c_t + G_t).
``law(s, c)`` is the law of c + G from (s, c). Its Bellman recursion is
  law(s, c) = law of gamma * Z',  Z' ~ law(S', C'),  S' ~ P(.|s, a),  C' = (c + R) / gamma,
and, at an absorbing terminal state, law(s, c) = delta_c. Objectives are functionals F of the
law of c_0 + G: the expectation (standard RL, F(law(s, c)) = c + V(s)), an expected utility
E f(c_0 + G), CVaR in the Rockafellar-Uryasev form
  CVaR_tau(G) = max_b {b - E[(b - G)^+] / tau} = max_{c_0} {-c_0 + E f(c_0 + G)},
  f(x) = min(x, 0) / tau,
and a homeostatic target f(x) = -(x - target)^2. Greedy distributional value iteration picks
  a*(s, c) = argmax_a F(law of gamma Z'_a).

Representations (static choice): ``"categorical"`` (probabilities on a fixed uniform support,
Cramer / L2 projection as in C51 and rlax ``categorical_l2_project``) and ``"quantile"``
(N locations at the mid-quantiles (2i + 1) / 2N, the W1 projection of QR-DQN).

Deviations and choices (the paper's operators are reconstructed from its framework, no official
code exists): the stock lives on a finite sorted grid and successor stocks are linearly
interpolated in c (the law at an off-grid stock is the mixture of the two neighbouring grid laws;
stocks beyond the grid are clamped to its ends, an approximation when gamma < 1). Transitions into
terminal states are handled exactly (delta at c + r), without the grid. Policies are
deterministic, one action per (state, stock). With gamma = 1, integer rewards, an integer stock
grid and a unit-spaced categorical support the operators are exact.
"""
from __future__ import annotations

import functools
from typing import Callable, NamedTuple, Tuple

import chex
import jax
import jax.numpy as jnp

Functional = Callable[[jax.Array, jax.Array], jax.Array]


class TabularMDP(NamedTuple):
  """A finite MDP. Rewards are paid on transitions; terminal states are absorbing and pay 0.

  Attributes:
    transitions: P[s, a, s'], rows sum to 1.
    rewards: r[s, a, s'].
    terminal: bool[s]; the episode ends on entering such a state.
    discount: gamma in (0, 1].
  """
  transitions: chex.Array
  rewards: chex.Array
  terminal: chex.Array
  discount: float


class ReturnLaw(NamedTuple):
  """A discrete law per grid point: atoms ``locs[..., M]`` with weights ``probs[..., M]``."""
  locs: chex.Array
  probs: chex.Array


class DistributionalSolution(NamedTuple):
  """Result of distributional VI / PI on the (state, stock) grid.

  Attributes:
    law: ReturnLaw of c + G under ``policy``, leading dims [S, K].
    policy: int[S, K], the greedy action per (state, stock).
    values: F(law), [S, K].
    action_values: F of the law of c + G after each first action, [S, K, A].
  """
  law: ReturnLaw
  policy: chex.Array
  values: chex.Array
  action_values: chex.Array


# ----------------------------------------------------------------------------- stock


def stock_update(stock: chex.Array, reward: chex.Array, *, discount: float) -> chex.Array:
  """c_{t+1} = (c_t + r_t) / gamma (Pires et al., arXiv 2501.13028)."""
  return (stock + reward) / discount


def stock_interpolation(stocks: chex.Array, values: chex.Array) -> Tuple[chex.Array, chex.Array]:
  """Linear interpolation weights of ``values`` on the sorted grid ``stocks[K]``.

  Returns (lower index, weight of the lower index); the upper index is lower + 1. Values outside
  the grid are clamped to its ends. A one-point grid always returns (0, 1).
  """
  num = stocks.shape[0]
  if num == 1:
    return jnp.zeros(values.shape, jnp.int32), jnp.ones(values.shape, stocks.dtype)
  clipped = jnp.clip(values, stocks[0], stocks[-1])
  lower = jnp.clip(jnp.searchsorted(stocks, clipped, side="right") - 1, 0, num - 2)
  width = stocks[lower + 1] - stocks[lower]
  w_upper = (clipped - stocks[lower]) / jnp.where(width > 0, width, 1.0)
  return lower.astype(jnp.int32), 1.0 - w_upper


# ------------------------------------------------------------------------ projections


def categorical_projection(locs: chex.Array, probs: chex.Array, support: chex.Array) -> chex.Array:
  """Cramer (L2) projection of atoms onto a uniform support (Bellemare et al. 2017, C51).

  proj_j = sum_i p_i * max(0, 1 - |clip(x_i) - z_j| / dz). Keeps total mass, and keeps the mean
  when every atom lies inside [z_0, z_{M-1}]. Equal to rlax ``categorical_l2_project``.

  Args:
    locs: atoms x[..., N].
    probs: weights p[..., N].
    support: uniform z[M], increasing (M >= 2).

  Returns:
    Probabilities on ``support``, shape [..., M].
  """
  delta = support[1] - support[0]
  clipped = jnp.clip(locs, support[0], support[-1])
  hat = jnp.clip(1.0 - jnp.abs(clipped[..., :, None] - support) / delta, 0.0, 1.0)
  return jnp.einsum("...n,...nm->...m", probs, hat)


def quantile_midpoints(num_quantiles: int) -> chex.Array:
  """tau_i = (2i + 1) / (2N), i = 0..N-1."""
  return (2.0 * jnp.arange(num_quantiles) + 1.0) / (2.0 * num_quantiles)


def quantile_projection(locs: chex.Array, probs: chex.Array, num_quantiles: int) -> chex.Array:
  """W1 projection onto N equally weighted atoms: the law's quantiles at (2i + 1) / 2N.

  Args:
    locs: atoms x[..., N_in]; probs: weights p[..., N_in] (summing to 1).
    num_quantiles: N.

  Returns:
    Sorted quantile locations, shape [..., N].
  """
  order = jnp.argsort(locs, axis=-1)
  sorted_locs = jnp.take_along_axis(locs, order, axis=-1)
  cdf = jnp.cumsum(jnp.take_along_axis(probs, order, axis=-1), axis=-1)
  cdf = cdf / jnp.maximum(cdf[..., -1:], 1e-12)
  taus = quantile_midpoints(num_quantiles)
  # Index of the first atom whose cdf reaches tau (generalised inverse cdf).
  index = jnp.sum(cdf[..., None, :] < taus[:, None] - 1e-7, axis=-1)
  index = jnp.minimum(index, locs.shape[-1] - 1)
  return jnp.take_along_axis(sorted_locs, index, axis=-1)


# ------------------------------------------------------------------------ functionals


def expectation(locs: chex.Array, probs: chex.Array) -> chex.Array:
  """E[X] over the last axis."""
  return jnp.sum(locs * probs, axis=-1)


def expected_utility(locs: chex.Array, probs: chex.Array, *, utility: Callable) -> chex.Array:
  """E[f(X)] over the last axis."""
  return jnp.sum(utility(locs) * probs, axis=-1)


def cvar(locs: chex.Array, probs: chex.Array, *, tau: float) -> chex.Array:
  """Lower-tail CVaR_tau in the Rockafellar-Uryasev form, exact for a discrete law.

  CVaR_tau(X) = max_b {b - E[(b - X)^+] / tau}; the objective is concave and piecewise linear in
  b with kinks at the atoms, so the max over the atoms is exact (Rockafellar & Uryasev, 2000).
  """
  excess = jnp.maximum(locs[..., None, :] - locs[..., :, None], 0.0)  # (b_j - x_i)^+ at [i, j]
  objective = locs - jnp.einsum("...i,...ij->...j", probs, excess) / tau
  return jnp.max(objective, axis=-1)


def cvar_stock_utility(x: chex.Array, *, tau: float) -> chex.Array:
  """f(x) = min(x, 0) / tau: CVaR_tau(G) = max_{c_0} {-c_0 + E f(c_0 + G)}."""
  return jnp.minimum(x, 0.0) / tau


def homeostatic_utility(x: chex.Array, *, target: float = 0.0) -> chex.Array:
  """f(x) = -(x - target)^2: keep the (stock-augmented) return near a target.

  The paper names homeostatic regulation as an objective; this quadratic form is our choice. It is
  not positively homogeneous, so with gamma < 1 greedy stock-augmented DP is only approximate.
  """
  return -jnp.square(x - target)


def cvar_from_stock_values(values: chex.Array, stocks: chex.Array) -> Tuple[chex.Array, chex.Array]:
  """Outer Rockafellar-Uryasev maximisation: max_k {-c_k + U(c_k)} over the stock grid.

  Args:
    values: U[..., K] = E f(c_k + G) with f = :func:`cvar_stock_utility`, under the optimal
      stock-augmented policy.
    stocks: c[K].

  Returns:
    (CVaR estimate [...], index of the maximising initial stock [...]).
  """
  objective = values - stocks
  return jnp.max(objective, axis=-1), jnp.argmax(objective, axis=-1)


# ----------------------------------------------------------------------------- backups


def _successor_weights(mdp: TabularMDP, stocks: chex.Array):
  """Per (s, a, s', k): interpolation indices/weights of C' and the exact terminal atom c + r."""
  rewards = mdp.rewards[..., None]  # [S, A, S', 1]
  next_stocks = stock_update(stocks, rewards, discount=mdp.discount)  # [S, A, S', K]
  lower, w_lower = stock_interpolation(stocks, next_stocks)
  live = mdp.transitions * (1.0 - mdp.terminal.astype(stocks.dtype))  # [S, A, S']
  ends = mdp.transitions * mdp.terminal.astype(stocks.dtype)
  terminal_atoms = stocks + rewards  # gamma * C' = c + r exactly.
  return lower, w_lower, live, ends, terminal_atoms


def _gather_successor(law: chex.Array, lower: chex.Array) -> Tuple[chex.Array, chex.Array]:
  """law[s', lower[s, a, s', k]] and law[s', lower + 1]: [S, A, S', K, M] each."""
  num_stocks = law.shape[1]
  s_next = jnp.arange(law.shape[0])[None, None, :, None]
  upper = jnp.minimum(lower + 1, num_stocks - 1)
  return law[s_next, lower], law[s_next, upper]


def _categorical_backup(probs, cache):
  """Law of c + G after each first action: probabilities [S, K, A, M]."""
  lower, w_lower, live, _, _ = cache["succ"]
  at_lower, at_upper = _gather_successor(probs, lower)
  mixed = w_lower[..., None] * at_lower + (1.0 - w_lower[..., None]) * at_upper
  mixed = jnp.einsum("sap,sapkm->skam", live, mixed)
  scaled = mixed @ cache["discount_projection"]  # atoms gamma * z, projected back onto z.
  return scaled + cache["terminal_part"]


def _quantile_backup(locs, mdp, num_quantiles, cache):
  """Law of c + G after each first action: quantile locations [S, K, A, N]."""
  lower, w_lower, live, ends, terminal_atoms = cache["succ"]
  at_lower, at_upper = _gather_successor(locs, lower)  # [S, A, S', K, N]
  n = locs.shape[-1]
  atoms = mdp.discount * jnp.concatenate([at_lower, at_upper], axis=-1)  # [S, A, S', K, 2N]
  weights = jnp.concatenate([
      jnp.broadcast_to((live[..., None] * w_lower)[..., None], at_lower.shape),
      jnp.broadcast_to((live[..., None] * (1.0 - w_lower))[..., None], at_upper.shape),
  ], axis=-1) / n
  term_atoms = terminal_atoms[..., None]  # [S, A, S', K, 1]
  term_weights = jnp.broadcast_to(ends[..., None, None], term_atoms.shape)
  atoms = jnp.concatenate([atoms, term_atoms], axis=-1)
  weights = jnp.concatenate([weights, term_weights], axis=-1)
  # Move s' into the atom axis: [S, K, A, S' * (2N + 1)].
  num_s, num_a, num_sp, num_k, width = atoms.shape
  atoms = atoms.transpose(0, 3, 1, 2, 4).reshape(num_s, num_k, num_a, num_sp * width)
  weights = weights.transpose(0, 3, 1, 2, 4).reshape(num_s, num_k, num_a, num_sp * width)
  return quantile_projection(atoms, weights, num_quantiles)


class _Model(NamedTuple):
  """Static pieces of one representation: backup, terminal law, and (locs, probs) views."""
  backup: Callable
  terminal_law: chex.Array
  as_law: Callable


def _make_model(mdp, stocks, representation, support, num_quantiles) -> _Model:
  succ = _successor_weights(mdp, stocks)
  num_s, num_k = mdp.terminal.shape[0], stocks.shape[0]
  if representation == "categorical":
    if support is None:
      raise ValueError("representation='categorical' needs `support`.")
    support = jnp.asarray(support, jnp.float32)
    # Row i: the projection of the single atom gamma * z_i onto z.
    discount_projection = categorical_projection(
        mdp.discount * support[:, None], jnp.ones((support.shape[0], 1)), support)
    cache = {"succ": succ, "discount_projection": discount_projection}
    _, _, _, ends, terminal_atoms = succ
    term = categorical_projection(  # [S, A, S', K, M]
        terminal_atoms[..., None], jnp.ones_like(terminal_atoms)[..., None], support)
    cache["terminal_part"] = jnp.einsum("sap,sapkm->skam", ends, term)
    terminal_law = categorical_projection(
        stocks[:, None], jnp.ones((num_k, 1)), support)[None].repeat(num_s, 0)
    backup = functools.partial(_categorical_backup, cache=cache)
    as_law = lambda p: ReturnLaw(jnp.broadcast_to(support, p.shape), p)
  elif representation == "quantile":
    if num_quantiles is None or num_quantiles < 1:
      raise ValueError("representation='quantile' needs num_quantiles >= 1.")
    cache = {"succ": succ}
    terminal_law = jnp.broadcast_to(stocks[None, :, None], (num_s, num_k, num_quantiles))
    backup = functools.partial(
        _quantile_backup, mdp=mdp, num_quantiles=num_quantiles, cache=cache)
    as_law = lambda q: ReturnLaw(q, jnp.full(q.shape, 1.0 / q.shape[-1], q.dtype))
  else:
    raise ValueError(f"representation must be 'categorical' or 'quantile', got {representation!r}")
  return _Model(backup=backup, terminal_law=terminal_law, as_law=as_law)


def _keep_terminal(mdp, new, terminal_law):
  return jnp.where(mdp.terminal[:, None, None], terminal_law, new)


def _select(per_action: chex.Array, policy: chex.Array) -> chex.Array:
  """per_action[s, k, policy[s, k], ...]."""
  return jnp.take_along_axis(per_action, policy[:, :, None, None], axis=2)[:, :, 0]


def _greedy(model, per_action, functional):
  locs, probs = model.as_law(per_action)
  action_values = functional(locs, probs)  # [S, K, A]
  return jnp.argmax(action_values, axis=-1).astype(jnp.int32), action_values


# ----------------------------------------------------------------------------- solvers


@functools.partial(
    jax.jit, static_argnames=("representation", "num_quantiles", "num_iterations"))
def distributional_policy_evaluation(
    policy: chex.Array,
    mdp: TabularMDP,
    stocks: chex.Array,
    *,
    representation: str = "categorical",
    support: chex.Array | None = None,
    num_quantiles: int | None = None,
    num_iterations: int = 100,
) -> ReturnLaw:
  """Iterates law(s, c) <- law of gamma Z' under a deterministic (state, stock) policy.

  Args:
    policy: int[S, K] actions, or int[S] for a stock-blind policy.
    mdp: the TabularMDP.
    stocks: sorted stock grid c[K].
    representation: "categorical" (needs ``support``) or "quantile" (needs ``num_quantiles``).
    support: uniform categorical support z[M].
    num_quantiles: N for the quantile representation.
    num_iterations: Bellman iterations; >= the horizon makes an episodic MDP exact.

  Returns:
    ReturnLaw with leading dims [S, K]: the law of c + G from each (s, c).
  """
  stocks = jnp.asarray(stocks, jnp.float32)
  model = _make_model(mdp, stocks, representation, support, num_quantiles)
  policy = jnp.asarray(policy, jnp.int32)
  if policy.ndim == 1:
    policy = jnp.broadcast_to(policy[:, None], (policy.shape[0], stocks.shape[0]))

  def body(_, law):
    new = _select(model.backup(law), policy)
    return _keep_terminal(mdp, new, model.terminal_law)

  law = jax.lax.fori_loop(0, num_iterations, body, model.terminal_law)
  return model.as_law(law)


@functools.partial(
    jax.jit,
    static_argnames=("functional", "representation", "num_quantiles", "num_iterations"))
def distributional_value_iteration(
    mdp: TabularMDP,
    stocks: chex.Array,
    *,
    functional: Functional = expectation,
    representation: str = "categorical",
    support: chex.Array | None = None,
    num_quantiles: int | None = None,
    num_iterations: int = 100,
) -> DistributionalSolution:
  """Greedy distributional value iteration on the (state, stock) grid.

  law_{k+1}(s, c) = law of gamma Z'_{a*},  a* = argmax_a F(law of gamma Z'_a)
  (Pires et al., arXiv 2501.13028). With F = expectation, F(law(s, c)) = V*(s) + c.

  Args:
    mdp: the TabularMDP.
    stocks: sorted stock grid c[K].
    functional: F(locs, probs) -> value over the last axis (hashable; e.g. functools.partial).
    representation, support, num_quantiles: see :func:`distributional_policy_evaluation`.
    num_iterations: number of greedy backups.

  Returns:
    DistributionalSolution.
  """
  stocks = jnp.asarray(stocks, jnp.float32)
  model = _make_model(mdp, stocks, representation, support, num_quantiles)

  def body(_, law):
    per_action = model.backup(law)
    policy, _ = _greedy(model, per_action, functional)
    return _keep_terminal(mdp, _select(per_action, policy), model.terminal_law)

  law = jax.lax.fori_loop(0, num_iterations, body, model.terminal_law)
  return _solution(model, mdp, law, functional)


def _solution(model, mdp, law, functional) -> DistributionalSolution:
  per_action = model.backup(law)
  policy, action_values = _greedy(model, per_action, functional)
  ret = model.as_law(law)
  return DistributionalSolution(
      law=ret, policy=policy, values=functional(*ret), action_values=action_values)


@functools.partial(
    jax.jit,
    static_argnames=("functional", "representation", "num_quantiles", "num_iterations",
                     "num_evaluation_iterations"))
def distributional_policy_iteration(
    mdp: TabularMDP,
    stocks: chex.Array,
    *,
    functional: Functional = expectation,
    representation: str = "categorical",
    support: chex.Array | None = None,
    num_quantiles: int | None = None,
    num_iterations: int = 10,
    num_evaluation_iterations: int = 50,
) -> DistributionalSolution:
  """Distributional policy iteration: evaluate the law of pi, then improve greedily w.r.t. F.

  pi_{i+1}(s, c) = argmax_a F(law of gamma Z'_a under pi_i)  (Pires et al., arXiv 2501.13028).
  Starts from action 0 everywhere. Ties keep the lowest action index.

  Args:
    See :func:`distributional_value_iteration`; ``num_iterations`` counts improvement steps and
    ``num_evaluation_iterations`` the Bellman backups per evaluation.

  Returns:
    DistributionalSolution for the final policy.
  """
  stocks = jnp.asarray(stocks, jnp.float32)
  model = _make_model(mdp, stocks, representation, support, num_quantiles)
  policy0 = jnp.zeros((mdp.terminal.shape[0], stocks.shape[0]), jnp.int32)

  def evaluate(policy, law):
    def body(_, law):
      return _keep_terminal(mdp, _select(model.backup(law), policy), model.terminal_law)
    return jax.lax.fori_loop(0, num_evaluation_iterations, body, law)

  def improve(_, carry):
    policy, law = carry
    law = evaluate(policy, law)
    policy, _ = _greedy(model, model.backup(law), functional)
    return policy, law

  policy, law = jax.lax.fori_loop(0, num_iterations, improve, (policy0, model.terminal_law))
  law = evaluate(policy, law)
  ret = model.as_law(law)
  per_action = model.backup(law)
  _, action_values = _greedy(model, per_action, functional)
  return DistributionalSolution(
      law=ret, policy=policy, values=functional(*ret), action_values=action_values)
