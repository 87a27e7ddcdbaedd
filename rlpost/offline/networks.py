"""Small Flax (linen) networks shared by the offline-RL methods: MLP, deterministic actor, twin critic.

Linen modules are used (not NNX) because every training loop here is a pure `lax.scan` over
parameter pytrees, as in PureJaxRL.
"""
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp


class MLP(nn.Module):
  """ReLU multilayer perceptron with a linear output layer."""
  hidden_sizes: Sequence[int]
  output_size: int

  @nn.compact
  def __call__(self, x):
    for size in self.hidden_sizes:
      x = nn.relu(nn.Dense(size)(x))
    return nn.Dense(self.output_size)(x)


class DeterministicActor(nn.Module):
  """`a = max_action * tanh(MLP(s))` (TD3, Fujimoto et al. 2018, arXiv 1802.09477)."""
  action_size: int
  max_action: float
  hidden_sizes: Sequence[int] = (256, 256)

  @nn.compact
  def __call__(self, obs):
    return self.max_action * jnp.tanh(MLP(self.hidden_sizes, self.action_size)(obs))


class TwinCritic(nn.Module):
  """Two independent Q-networks `Q_k(s, a)`, k = 1, 2; returns `[2, ...]`."""
  hidden_sizes: Sequence[int] = (256, 256)

  @nn.compact
  def __call__(self, obs, action):
    x = jnp.concatenate([obs, action], axis=-1)
    ensemble = nn.vmap(MLP, variable_axes={"params": 0}, split_rngs={"params": True},
                       in_axes=None, out_axes=0, axis_size=2)
    return ensemble(self.hidden_sizes, 1)(x)[..., 0]
