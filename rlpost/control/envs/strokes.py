"""Procedurally generated handwriting-like 2-D strokes (digit-like curves) for NDP imitation.

Each of ten digit-like templates is a polyline in the unit square, resampled by arc length to
`N_CONTROL` control points. A sample jitters the control points, applies a random similarity
transform (scale, rotation, translation), passes a uniform Catmull-Rom spline through the points
and samples it on a minimum-jerk time warp `s(t) = 10 t^3 - 15 t^4 + 6 t^5`, so strokes start and
end at rest like pen strokes. The network input is a small rasterised image of the stroke
(Gaussian splats on an `image_size^2` grid), standing in for the S-MNIST images of the NDP paper.

Deviation: the NDP paper uses recorded S-MNIST digit strokes; none are available offline, so the
strokes here are synthetic.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
N_CONTROL = 10

_TEMPLATES_RAW = {
    0: [(.5, 1), (.2, .75), (.2, .25), (.5, 0), (.8, .25), (.8, .75), (.52, .98)],
    1: [(.35, .8), (.55, 1), (.55, .5), (.55, 0)],
    2: [(.2, .8), (.5, 1), (.8, .8), (.6, .45), (.2, 0), (.8, 0)],
    3: [(.2, .9), (.7, .95), (.5, .55), (.8, .25), (.5, 0), (.2, .1)],
    4: [(.7, 0), (.7, 1), (.15, .35), (.85, .35)],
    5: [(.8, 1), (.25, 1), (.25, .55), (.75, .5), (.7, .1), (.2, .05)],
    6: [(.7, 1), (.3, .6), (.25, .2), (.55, 0), (.75, .25), (.5, .45), (.28, .3)],
    7: [(.15, 1), (.85, 1), (.5, .5), (.35, 0)],
    8: [(.5, .55), (.25, .8), (.5, 1), (.75, .8), (.5, .55), (.2, .25), (.5, 0), (.8, .25),
        (.52, .53)],
    9: [(.75, .6), (.45, .5), (.3, .75), (.5, 1), (.75, .8), (.7, .4), (.6, 0)],
}


def _resample_polyline(points, n: int) -> np.ndarray:
  pts = np.asarray(points, np.float64)
  seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
  cum = np.concatenate([[0.0], np.cumsum(seg)])
  s = np.linspace(0.0, cum[-1], n)
  return np.stack([np.interp(s, cum, pts[:, 0]), np.interp(s, cum, pts[:, 1])], axis=1)


# [10, N_CONTROL, 2] control points, centred on the origin with unit-ish extent.
STROKE_TEMPLATES = np.stack(
    [_resample_polyline(_TEMPLATES_RAW[d], N_CONTROL) for d in range(10)]).astype(np.float32) - 0.5


def catmull_rom(control: Array, u: Array) -> Array:
  """Uniform Catmull-Rom spline through `control [M, 2]` at parameters `u in [0, M-1]`."""
  m = control.shape[0]
  padded = jnp.concatenate([control[:1], control, control[-1:]], axis=0)
  i = jnp.clip(jnp.floor(u).astype(jnp.int32), 0, m - 2)
  t = (u - i)[:, None]
  p0, p1, p2, p3 = padded[i], padded[i + 1], padded[i + 2], padded[i + 3]
  return 0.5 * (2 * p1 + (p2 - p0) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
                + (3 * p1 - p0 - 3 * p2 + p3) * t**3)


def rasterize_stroke(traj: Array, *, image_size: int = 16, sigma: float = 0.06,
                     extent: float = 0.8) -> Array:
  """Gaussian-splat image `[image_size, image_size]` of a stroke in `[-extent, extent]^2`."""
  grid = jnp.linspace(-extent, extent, image_size)
  gx, gy = jnp.meshgrid(grid, grid[::-1])
  d2 = (gx[None] - traj[:, 0, None, None])**2 + (gy[None] - traj[:, 1, None, None])**2
  return jnp.max(jnp.exp(-d2 / (2 * sigma**2)), axis=0)


@functools.partial(jax.jit, static_argnames=("num", "num_points", "image_size"))
def make_strokes(key: Array, num: int, *, num_points: int = 41, image_size: int = 16,
                 jitter: float = 0.04, scale_range: tuple[float, float] = (0.8, 1.1),
                 max_rotation: float = 0.3, max_shift: float = 0.1) -> dict[str, Array]:
  """Samples `num` digit-like strokes.

  Returns a dict with `traj [num, num_points, 2]`, `image [num, image_size, image_size]`,
  `y0 [num, 2]` (the pen-down point) and `label [num]` (the template digit).
  """
  k_lab, k_jit, k_sc, k_rot, k_sh = jax.random.split(key, 5)
  label = jax.random.randint(k_lab, (num,), 0, 10)
  control = jnp.asarray(STROKE_TEMPLATES)[label]
  control = control + jitter * jax.random.normal(k_jit, control.shape)
  scale = jax.random.uniform(k_sc, (num, 1, 1), minval=scale_range[0], maxval=scale_range[1])
  angle = jax.random.uniform(k_rot, (num,), minval=-max_rotation, maxval=max_rotation)
  rot = jnp.stack([jnp.stack([jnp.cos(angle), -jnp.sin(angle)], -1),
                   jnp.stack([jnp.sin(angle), jnp.cos(angle)], -1)], -2)
  shift = jax.random.uniform(k_sh, (num, 1, 2), minval=-max_shift, maxval=max_shift)
  control = jnp.einsum("nij,nmj->nmi", rot, scale * control) + shift
  tau = jnp.linspace(0.0, 1.0, num_points)
  u = (10 * tau**3 - 15 * tau**4 + 6 * tau**5) * (N_CONTROL - 1)
  traj = jax.vmap(lambda c: catmull_rom(c, u))(control)
  image = jax.vmap(lambda tr: rasterize_stroke(tr, image_size=image_size))(traj)
  return {"traj": traj, "image": image, "y0": traj[:, 0], "label": label}
