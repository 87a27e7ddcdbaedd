"""Mesh helpers: a ("data", "fsdp") mesh, rule-based parameter shardings, sharded SFT step.

Only JAX's own SPMD is used (jax.sharding + jit in/out shardings); XLA inserts the collectives.
The batch dimension is split over both axes; parameters are split over "fsdp" by regex rules
(fully-sharded data parallelism, Rajbhandari et al., "ZeRO", 2019, arXiv:1910.02054), so with
fsdp=1 this is plain data parallelism.

Multi-host (GPU/TPU slices, or several CPU processes): call
  jax.distributed.initialize(coordinator_address, num_processes, process_id)
(no arguments on Cloud TPU / SLURM / Open MPI, which are auto-detected) in every process before
any other JAX call, then run the same program everywhere. `make_mesh()` spans
`jax.devices()`, i.e. every device of every process; `put_global(x, sharding)` builds a global
array from a host value that every process holds in full (each process only copies its
addressable shards), and results are read back with
`jax.experimental.multihost_utils.process_allgather`. On CPU, cross-process collectives need
`jax.config.update("jax_cpu_collectives_implementation", "gloo")` (the default in jax 0.10) before
initialisation; tests/parallel_worker.py runs exactly this with two localhost processes.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Optional, Sequence

import jax
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from rlpost.llm.model import sft_cross_entropy

AXES = ("data", "fsdp")
BATCH_AXES = ("data", "fsdp")

# (regex searched in the "/"-joined leaf path, PartitionSpec); the first match wins. A dimension
# that the mesh axis does not divide is replicated instead. Optimizer-state leaves ("0/mu/<param
# path>") match the same rules, so moments are sharded like their parameters.
DEFAULT_RULES: tuple[tuple[str, P], ...] = (
    (r"embed_tokens(/value)?$", P("fsdp", None)),  # [vocab, hidden]
    (r"lm_head/kernel(/value)?$", P(None, "fsdp")),  # [hidden, vocab]
    (r"lora_[ab](/value)?$", P()),  # adapters are small
    (r"kernel(/value)?$", P("fsdp", None)),  # [in, out] projections
    (r".*", P()),  # norms and biases
)


def make_mesh(data: Optional[int] = None, fsdp: Optional[int] = None, *,
              devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
  """A 2-D ("data", "fsdp") mesh; by default every device goes to "fsdp"."""
  devices = list(jax.devices() if devices is None else devices)
  n = len(devices)
  if data is None and fsdp is None:
    data, fsdp = 1, n
  elif data is None:
    data = n // fsdp
  elif fsdp is None:
    fsdp = n // data
  if data * fsdp != n:
    raise ValueError(f"mesh data={data} x fsdp={fsdp} does not match {n} devices")
  return Mesh(np.asarray(devices, dtype=object).reshape(data, fsdp), AXES)


def path_name(path: tuple[Any, ...]) -> str:
  parts = []
  for k in path:
    key = getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))
    parts.append(str(key))
  return "/".join(parts)


def spec_for(name: str, shape: Sequence[int], mesh: Mesh,
             rules: Sequence[tuple[str, P]] = DEFAULT_RULES) -> P:
  """The first matching rule's spec, with undivisible / missing dims replicated."""
  for pattern, spec in rules:
    if re.search(pattern, name):
      break
  else:
    return P()
  axes = list(spec) + [None] * (len(shape) - len(spec))
  axes = axes[:len(shape)]
  for i, axis in enumerate(axes):
    if axis is None:
      continue
    size = int(np.prod([mesh.shape[a] for a in ((axis,) if isinstance(axis, str) else axis)]))
    if shape[i] % size:
      axes[i] = None
  while axes and axes[-1] is None:  # canonical form: P("fsdp"), not P("fsdp", None)
    axes.pop()
  return P(*axes)


def param_shardings(params: Any, mesh: Mesh,
                    rules: Sequence[tuple[str, P]] = DEFAULT_RULES) -> Any:
  """A pytree of NamedSharding matching `params` (an nnx.State or any pytree of arrays)."""
  return jax.tree_util.tree_map_with_path(
      lambda path, x: NamedSharding(mesh, spec_for(path_name(path), x.shape, mesh, rules)),
      params)


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
  """Leading (batch) dim split over ("data", "fsdp"), the rest replicated."""
  return NamedSharding(mesh, P(BATCH_AXES, *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def put_global(tree: Any, shardings: Any) -> Any:
  """Places host values (identical in every process) as global arrays with `shardings`.

  Works single- and multi-process: each process materialises only its addressable shards.
  """
  def put(x, sharding):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])
  return jax.tree.map(put, tree, shardings)


def shard_model(model: nnx.Module, mesh: Mesh,
                rules: Sequence[tuple[str, P]] = DEFAULT_RULES) -> tuple[nnx.GraphDef, Any, Any]:
  """(graphdef, sharded params, their shardings) for a model."""
  graphdef, params = nnx.split(model)
  shardings = param_shardings(params, mesh, rules)
  return graphdef, put_global(params, shardings), shardings


def make_sharded_forward(graphdef: nnx.GraphDef, fn: Callable[..., Any], mesh: Mesh,
                         shardings: Any) -> Callable[..., Any]:
  """jit(fn(nnx.merge(graphdef, params), tokens, mask)) with sharded params and batch."""
  data = batch_sharding(mesh)

  @jax.jit
  def forward(params, tokens, attention_mask):
    params = jax.lax.with_sharding_constraint(params, shardings)
    tokens = jax.lax.with_sharding_constraint(tokens, data)
    attention_mask = jax.lax.with_sharding_constraint(attention_mask, data)
    return fn(nnx.merge(graphdef, params), tokens, attention_mask)

  return forward


def make_sft_train_step(graphdef: nnx.GraphDef, optimizer: optax.GradientTransformation, *,
                        mesh: Optional[Mesh] = None, param_shardings_: Any = None,
                        opt_shardings: Any = None) -> Callable[..., Any]:
  """A jitted, donating step(params, opt_state, batch) -> (params, opt_state, loss).

  `batch` is a dict with "tokens", "attention_mask", "loss_mask" (all [B, T]); the loss is the
  token-mean next-token cross-entropy (`sft_cross_entropy`). With a mesh, inputs and outputs are
  pinned to the given shardings, so the step compiles once and keeps its layout across calls.
  """

  def loss_fn(params, batch):
    model = nnx.merge(graphdef, params)
    return sft_cross_entropy(model, batch["tokens"], batch["attention_mask"], batch["loss_mask"])

  def step(params, opt_state, batch):
    loss, grads = jax.value_and_grad(loss_fn)(params, batch)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  if mesh is None:
    return jax.jit(step, donate_argnums=(0, 1))
  data = batch_sharding(mesh)
  batch_shardings = {"tokens": data, "attention_mask": data, "loss_mask": data}
  return jax.jit(step, donate_argnums=(0, 1),
                 in_shardings=(param_shardings_, opt_shardings, batch_shardings),
                 out_shardings=(param_shardings_, opt_shardings, replicated(mesh)))


def init_optimizer(optimizer: optax.GradientTransformation, params: Any, mesh: Mesh,
                   rules: Sequence[tuple[str, P]] = DEFAULT_RULES) -> tuple[Any, Any]:
  """(opt_state, its shardings); moments follow the parameter rules, counters are replicated."""
  shardings = param_shardings(jax.eval_shape(optimizer.init, params), mesh, rules)
  return jax.jit(optimizer.init, out_shardings=shardings)(params), shardings
