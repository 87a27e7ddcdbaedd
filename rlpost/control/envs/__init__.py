"""Small fixed-horizon JAX environments for the NDP and LPN experiments.

All environments share the gymnax 1.0 call shape,
`obs, state = env.reset(key, params)` and
`obs, state, reward, terminated, truncated, info = env.step(key, state, action, params)`,
but they do not auto-reset: every episode lasts exactly `params.horizon` steps and the
episode-based PPO driver (`rlpost.control.policy_gradient`) resets all environments itself.
"""
from rlpost.control.envs.reacher import Reacher2D, ReacherParams, ReacherState
from rlpost.control.envs.strokes import make_strokes, rasterize_stroke, STROKE_TEMPLATES
from rlpost.control.envs.throwing import Throwing, ThrowingParams, ThrowingState, landing_x
from rlpost.control.envs.tracking import (PointMassTracking, TrackingParams, TrackingState,
                                          reference_motion)

__all__ = [
    "Reacher2D", "ReacherParams", "ReacherState", "make_strokes", "rasterize_stroke",
    "STROKE_TEMPLATES", "Throwing", "ThrowingParams", "ThrowingState", "landing_x",
    "PointMassTracking", "TrackingParams", "TrackingState", "reference_motion",
]
