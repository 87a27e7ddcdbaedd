"""LoRA adapters for the rlpost decoder (Hu et al., "LoRA: Low-Rank Adaptation of Large Language
Models", 2021, arXiv:2106.09685).

Each targeted projection computes y = x W + (alpha / r) * (x A) B with A [in, r] Gaussian
(std 1/sqrt(in)) and B [r, out] zero, so a freshly adapted model equals its base exactly. Adapter
weights are `nnx.LoRAParam` variables; base weights stay `nnx.Param`, so training only the
adapters is a filter:

  graphdef, lora_params, base_params = nnx.split(model, nnx.LoRAParam, ...)
  loss(lora_params) = f(nnx.merge(graphdef, lora_params, base_params))
  grads = jax.grad(loss)(lora_params)        # base weights are closed-over constants

`merge_lora` folds W <- W + (alpha / r) A B and removes the adapters (e.g. before
`save_hf_checkpoint` or to sample without the extra matmuls). Deviation from the paper: A uses a
Gaussian with std 1/sqrt(in) (the paper says "random Gaussian"; peft uses Kaiming-uniform).
"""
from __future__ import annotations

from typing import Iterator, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from rlpost.llm.model import Decoder, Dense

ATTENTION_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_TARGETS = ("gate_proj", "up_proj", "down_proj")
ALL_TARGETS = ATTENTION_TARGETS + MLP_TARGETS


def _targets(model: Decoder, targets: Sequence[str]) -> Iterator[tuple[str, Dense]]:
  unknown = set(targets) - set(ALL_TARGETS)
  if unknown:
    raise ValueError(f"targets {sorted(unknown)} are not among {ALL_TARGETS}")
  for i, layer in enumerate(model.layers):
    for name in targets:
      owner = layer.self_attn if name in ATTENTION_TARGETS else layer.mlp
      yield f"layers.{i}.{name}", getattr(owner, name)


def apply_lora(model: Decoder, *, rank: int = 8, alpha: float = 16.0,
               targets: Sequence[str] = ALL_TARGETS, seed: int = 0) -> Decoder:
  """Attaches zero-effect adapters to `targets` in every layer (in place; returns `model`)."""
  if rank < 1:
    raise ValueError(f"rank must be >= 1, got {rank}")
  key = jax.random.key(seed)
  for i, (_, dense) in enumerate(_targets(model, targets)):
    if dense.lora_a is not None:
      raise ValueError("model already has LoRA adapters; merge_lora first")
    fan_in, fan_out = dense.kernel.value.shape
    dtype = dense.kernel.value.dtype
    a = jax.random.normal(jax.random.fold_in(key, i), (fan_in, rank), dtype) / jnp.sqrt(fan_in)
    dense.lora_a = nnx.LoRAParam(a.astype(dtype))
    dense.lora_b = nnx.LoRAParam(jnp.zeros((rank, fan_out), dtype))
    dense.lora_scale = float(alpha) / rank
  return model


def merge_lora(model: Decoder) -> Decoder:
  """W <- W + scale * A B for every adapted projection, then drops the adapters (in place)."""
  for _, dense in _targets(model, ALL_TARGETS):
    if dense.lora_a is None:
      continue
    delta = dense.lora_scale * (dense.lora_a.value.astype(jnp.float32)
                                @ dense.lora_b.value.astype(jnp.float32))
    kernel = dense.kernel.value
    dense.kernel.value = (kernel.astype(jnp.float32) + delta).astype(kernel.dtype)
    dense.lora_a = None
    dense.lora_b = None
    dense.lora_scale = 0.0
  return model


def split_lora(model: Decoder) -> tuple[nnx.GraphDef, nnx.State, nnx.State]:
  """(graphdef, adapter params, frozen rest) — differentiate w.r.t. the second only."""
  return nnx.split(model, nnx.LoRAParam, ...)


def num_lora_params(model: Decoder) -> int:
  return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.LoRAParam)))
