"""JAX environments used to generate rlpost's own offline-RL datasets.

They follow the gymnax 1.0 call shape with auto-reset, so they are drop-in peers of
`gymnax.make("Pendulum-v1")` in `rlpost.offline`.
"""
from rlpost.control.envs_offline.point_mass import PointMass2D
from rlpost.control.envs_offline.point_mass import PointMassParams
from rlpost.control.envs_offline.point_mass import PointMassState

__all__ = ["PointMass2D", "PointMassParams", "PointMassState"]
