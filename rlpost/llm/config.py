"""Decoder configuration whose field names mirror HF `Qwen2Config` / `LlamaConfig`.

The model family is the Llama / Qwen2 decoder (Touvron et al., "LLaMA: Open and Efficient
Foundation Language Models", 2023, arXiv:2302.13971; Qwen Team, "Qwen2 Technical Report", 2024,
arXiv:2407.10671): pre-norm RMSNorm blocks, rotary position embeddings, grouped-query attention and
a SwiGLU MLP. Qwen2 adds a bias to the q/k/v projections (`attention_bias=True` here).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import jax.numpy as jnp

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
_MODEL_TYPES = ("qwen2", "llama")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Hyperparameters of a Qwen2/Llama decoder (HF field names).

  `attention_bias` means a bias on the q/k/v projections only (Qwen2 style). HF Llama's
  `attention_bias=True` also biases `o_proj`; that variant is rejected by `from_hf_config`.
  `param_dtype` is the storage dtype of the weights and `dtype` the compute dtype; logits,
  log-probs, softmax and RMSNorm statistics are always computed in float32.
  """
  vocab_size: int = 512
  hidden_size: int = 256
  intermediate_size: int = 688
  num_hidden_layers: int = 4
  num_attention_heads: int = 4
  num_key_value_heads: int = 2
  head_dim: Optional[int] = None
  rms_norm_eps: float = 1e-6
  rope_theta: float = 10000.0
  max_position_embeddings: int = 2048
  tie_word_embeddings: bool = True
  attention_bias: bool = False
  model_type: str = "llama"
  param_dtype: str = "float32"
  dtype: str = "float32"
  bos_token_id: Optional[int] = None
  eos_token_id: Optional[int] = None
  pad_token_id: Optional[int] = None

  def __post_init__(self):
    for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                 "num_attention_heads", "num_key_value_heads", "max_position_embeddings"):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"ModelConfig.{name} must be a positive int, got {value!r}")
    if self.num_attention_heads % self.num_key_value_heads:
      raise ValueError(
          f"ModelConfig.num_attention_heads ({self.num_attention_heads}) must be a multiple of "
          f"ModelConfig.num_key_value_heads ({self.num_key_value_heads})")
    if self.head_dim is None and self.hidden_size % self.num_attention_heads:
      raise ValueError(
          f"ModelConfig.hidden_size ({self.hidden_size}) must be divisible by "
          f"ModelConfig.num_attention_heads ({self.num_attention_heads}) when head_dim is None")
    if self.resolved_head_dim % 2:
      raise ValueError(f"ModelConfig.head_dim must be even for RoPE, got {self.resolved_head_dim}")
    if not self.rms_norm_eps > 0:
      raise ValueError(f"ModelConfig.rms_norm_eps must be > 0, got {self.rms_norm_eps!r}")
    if not self.rope_theta > 0:
      raise ValueError(f"ModelConfig.rope_theta must be > 0, got {self.rope_theta!r}")
    for name in ("param_dtype", "dtype"):
      if getattr(self, name) not in _DTYPES:
        raise ValueError(
            f"ModelConfig.{name} must be one of {sorted(_DTYPES)}, got {getattr(self, name)!r}")
    if self.model_type not in _MODEL_TYPES:
      raise ValueError(f"ModelConfig.model_type must be one of {_MODEL_TYPES}, "
                       f"got {self.model_type!r}")

  @property
  def resolved_head_dim(self) -> int:
    return self.head_dim if self.head_dim is not None else (
        self.hidden_size // self.num_attention_heads)

  @property
  def jnp_dtype(self):
    return _DTYPES[self.dtype]

  @property
  def jnp_param_dtype(self):
    return _DTYPES[self.param_dtype]

  def replace(self, **changes: Any) -> "ModelConfig":
    return dataclasses.replace(self, **changes)

  @classmethod
  def tiny(cls, **overrides: Any) -> "ModelConfig":
    """The benchmark/test preset: vocab 512, hidden 256, 4 layers, 4 heads, 2 KV heads."""
    base = dict(vocab_size=512, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                max_position_embeddings=2048)
    base.update(overrides)
    return cls(**base)

  def num_params(self) -> int:
    """Number of weights (embeddings counted once when tied)."""
    h, d = self.hidden_size, self.resolved_head_dim
    nq, nkv = self.num_attention_heads, self.num_key_value_heads
    attn = h * nq * d + 2 * h * nkv * d + nq * d * h
    if self.attention_bias:
      attn += nq * d + 2 * nkv * d
    layer = attn + 3 * h * self.intermediate_size + 2 * h
    head = 0 if self.tie_word_embeddings else self.vocab_size * h
    return self.vocab_size * h + self.num_hidden_layers * layer + h + head

  def to_hf_dict(self) -> dict[str, Any]:
    """A config.json dict that transformers (4.x and 5.x) loads as Qwen2Config/LlamaConfig."""
    arch = {"qwen2": "Qwen2ForCausalLM", "llama": "LlamaForCausalLM"}[self.model_type]
    out = dict(
        architectures=[arch], model_type=self.model_type, vocab_size=self.vocab_size,
        hidden_size=self.hidden_size, intermediate_size=self.intermediate_size,
        num_hidden_layers=self.num_hidden_layers, num_attention_heads=self.num_attention_heads,
        num_key_value_heads=self.num_key_value_heads, head_dim=self.resolved_head_dim,
        rms_norm_eps=self.rms_norm_eps, rope_theta=self.rope_theta,
        rope_parameters={"rope_type": "default", "rope_theta": self.rope_theta},
        max_position_embeddings=self.max_position_embeddings,
        tie_word_embeddings=self.tie_word_embeddings, hidden_act="silu",
        torch_dtype=self.param_dtype, dtype=self.param_dtype,
        bos_token_id=self.bos_token_id, eos_token_id=self.eos_token_id,
        pad_token_id=self.pad_token_id)
    if self.model_type == "llama":
      if self.attention_bias:
        raise ValueError("ModelConfig.attention_bias=True (q/k/v bias only) has no LlamaConfig "
                         "equivalent; use model_type='qwen2'")
      out.update(attention_bias=False, mlp_bias=False)
    elif not self.attention_bias:
      raise ValueError("ModelConfig.attention_bias=False has no Qwen2Config equivalent (Qwen2 "
                       "always has q/k/v bias); use model_type='llama'")
    return out


def _get(hf_config: Any, name: str, default: Any = None) -> Any:
  if isinstance(hf_config, dict):
    return hf_config.get(name, default)
  return getattr(hf_config, name, default)


def from_hf_config(hf_config: Any, *, param_dtype: str = "float32",
                   dtype: str = "float32") -> ModelConfig:
  """Builds a `ModelConfig` from a transformers config object or a config.json dict.

  Handles both the transformers 4.x `rope_theta` field and the 5.x `rope_parameters` dict; only the
  default (unscaled) RoPE type is supported.
  """
  model_type = _get(hf_config, "model_type", "llama")
  if model_type not in _MODEL_TYPES:
    raise ValueError(f"hf_config.model_type must be one of {_MODEL_TYPES}, got {model_type!r}")
  rope = _get(hf_config, "rope_parameters") or _get(hf_config, "rope_scaling") or {}
  rope_type = rope.get("rope_type", rope.get("type", "default")) if rope else "default"
  if rope_type != "default":
    raise ValueError(f"hf_config.rope_parameters.rope_type={rope_type!r} is not supported "
                     "(only 'default')")
  rope_theta = rope.get("rope_theta") if rope else None
  if rope_theta is None:
    rope_theta = _get(hf_config, "rope_theta", 10000.0)
  act = _get(hf_config, "hidden_act", "silu")
  if act != "silu":
    raise ValueError(f"hf_config.hidden_act must be 'silu', got {act!r}")
  if model_type == "llama":
    if _get(hf_config, "attention_bias", False):
      raise ValueError("hf_config.attention_bias=True (Llama biases o_proj too) is not supported")
    if _get(hf_config, "mlp_bias", False):
      raise ValueError("hf_config.mlp_bias=True is not supported")
    attention_bias = False
  else:
    attention_bias = True  # Qwen2 always has q/k/v bias.
  if model_type == "qwen2" and _get(hf_config, "use_sliding_window", False):
    raise ValueError("hf_config.use_sliding_window=True is not supported")
  num_heads = _get(hf_config, "num_attention_heads")
  num_kv = _get(hf_config, "num_key_value_heads") or num_heads
  head_dim = _get(hf_config, "head_dim")
  hidden = _get(hf_config, "hidden_size")
  if head_dim is not None and num_heads and hidden and head_dim * num_heads == hidden:
    head_dim = None  # the default; keeps configs equal across a save/load round trip
  eos = _get(hf_config, "eos_token_id")
  if isinstance(eos, (list, tuple)):
    eos = eos[0] if eos else None
  return ModelConfig(
      vocab_size=_get(hf_config, "vocab_size"),
      hidden_size=_get(hf_config, "hidden_size"),
      intermediate_size=_get(hf_config, "intermediate_size"),
      num_hidden_layers=_get(hf_config, "num_hidden_layers"),
      num_attention_heads=num_heads,
      num_key_value_heads=num_kv,
      head_dim=head_dim,
      rms_norm_eps=float(_get(hf_config, "rms_norm_eps", 1e-6)),
      rope_theta=float(rope_theta),
      max_position_embeddings=_get(hf_config, "max_position_embeddings", 2048),
      tie_word_embeddings=bool(_get(hf_config, "tie_word_embeddings", False)),
      attention_bias=attention_bias,
      model_type=model_type,
      param_dtype=param_dtype,
      dtype=dtype,
      bos_token_id=_get(hf_config, "bos_token_id"),
      eos_token_id=eos,
      pad_token_id=_get(hf_config, "pad_token_id"),
  )
