"""Decoder configuration whose field names mirror HF `Qwen2Config` / `LlamaConfig`.

The model family is the Llama / Qwen2 decoder (Touvron et al., "LLaMA: Open and Efficient
Foundation Language Models", 2023, arXiv:2302.13971; Qwen Team, "Qwen2 Technical Report", 2024,
arXiv:2407.10671): pre-norm RMSNorm blocks, rotary position embeddings, grouped-query attention and
a SwiGLU MLP. Qwen2 adds a bias to the q/k/v projections (`attention_bias=True` here).

RoPE scaling (`rope_scaling`, HF's `rope_parameters` minus `rope_theta`) supports the rope types
"default", "linear" (position interpolation: Chen et al., "Extending Context Window of Large
Language Models via Positional Interpolation", 2023, arXiv:2306.15595, inv_freq_i / factor) and
"llama3" (Llama Team, "The Llama 3 Herd of Models", 2024, arXiv:2407.21783, wavelength-banded
interpolation; see `rlpost.llm.model.rope_inv_freq`). Every other type (yarn, dynamic, longrope,
...) is rejected with an error naming the field.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Optional

import jax.numpy as jnp

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
_MODEL_TYPES = ("qwen2", "llama")
# Supported RoPE types and the parameters each one requires (HF `rope_parameters` key names).
ROPE_TYPES = {
    "default": (),
    "linear": ("factor",),
    "llama3": ("factor", "low_freq_factor", "high_freq_factor",
               "original_max_position_embeddings"),
}
RopeScaling = tuple[tuple[str, Any], ...]


def normalize_rope_scaling(rope_scaling: Any, *,
                           field: str = "ModelConfig.rope_scaling") -> Optional[RopeScaling]:
  """Validated, hashable RoPE-scaling spec: None (default RoPE) or ordered (key, value) pairs.

  Args:
    rope_scaling: None, a mapping such as {"rope_type": "llama3", "factor": 8.0, ...} or an
      iterable of (key, value) pairs (the normalized form itself). `rope_theta` does not belong
      here (it is `ModelConfig.rope_theta`).
    field: the name used in error messages.

  Returns:
    None for default RoPE, else (("rope_type", t), (param, value), ...) with params in the order
    of `ROPE_TYPES[t]`, factors as float and original_max_position_embeddings as int.

  Raises:
    ValueError: naming the field and value, for an unsupported rope_type, a missing or unknown
      key, or an out-of-range value.
  """
  if rope_scaling is None:
    return None
  try:
    spec = dict(rope_scaling.items() if isinstance(rope_scaling, Mapping) else rope_scaling)
  except (TypeError, ValueError) as e:
    raise ValueError(f"{field} must be None, a dict or (key, value) pairs, "
                     f"got {rope_scaling!r}") from e
  if not spec:
    return None
  rope_type = spec.pop("rope_type", None)
  if not isinstance(rope_type, str) or rope_type not in ROPE_TYPES:
    raise ValueError(f"{field}['rope_type']={rope_type!r} is not supported (supported: "
                     f"{', '.join(ROPE_TYPES)})")
  names = ROPE_TYPES[rope_type]
  unknown = sorted(set(spec) - set(names))
  if unknown:
    raise ValueError(f"{field} has unknown key(s) {unknown} for rope_type={rope_type!r} "
                     f"(expected {list(names)})")
  missing = [n for n in names if n not in spec]
  if missing:
    raise ValueError(f"{field} is missing {missing} for rope_type={rope_type!r}")
  if rope_type == "default":
    return None
  out = [("rope_type", rope_type)]
  for name in names:
    value = spec[name]
    if name == "original_max_position_embeddings":
      ok = (isinstance(value, int) or (isinstance(value, float) and value.is_integer())) and (
          not isinstance(value, bool)) and value > 0
      if not ok:
        raise ValueError(f"{field}['{name}'] must be a positive int, got {value!r}")
      value = int(value)
    else:
      if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
          math.isfinite(value) and value > 0):
        raise ValueError(f"{field}['{name}'] must be a finite number > 0, got {value!r}")
      value = float(value)
    out.append((name, value))
  params = dict(out)
  if rope_type == "llama3" and not params["high_freq_factor"] > params["low_freq_factor"]:
    raise ValueError(f"{field}['high_freq_factor'] ({params['high_freq_factor']}) must be > "
                     f"{field}['low_freq_factor'] ({params['low_freq_factor']})")
  return tuple(out)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Hyperparameters of a Qwen2/Llama decoder (HF field names).

  `attention_bias` means a bias on the q/k/v projections only (Qwen2 style). HF Llama's
  `attention_bias=True` also biases `o_proj`; that variant is rejected by `from_hf_config`.
  `param_dtype` is the storage dtype of the weights and `dtype` the compute dtype; logits,
  log-probs, softmax and RMSNorm statistics are always computed in float32.
  `rope_scaling` mirrors HF's `rope_parameters` without `rope_theta`: None (default RoPE) or e.g.
  {"rope_type": "linear", "factor": 2.0}; it may be given as a dict and is stored as a tuple of
  (key, value) pairs (see `normalize_rope_scaling`) so the config stays hashable, as `jax.jit`
  static arguments and NNX graphdefs require. `rope_scaling_dict` gives the dict back.
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
  rope_scaling: Optional[RopeScaling] = None
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
    object.__setattr__(self, "rope_scaling", normalize_rope_scaling(self.rope_scaling))
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
  def rope_scaling_dict(self) -> dict[str, Any]:
    """HF-style RoPE parameters without rope_theta, e.g. {"rope_type": "default"}."""
    return dict(self.rope_scaling) if self.rope_scaling else {"rope_type": "default"}

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
    """A config.json dict that transformers (4.x and 5.x) loads as Qwen2Config/LlamaConfig.

    RoPE is written as 5.x `rope_parameters` ({"rope_type", "rope_theta", **params}) plus the 4.x
    fields `rope_theta` and, for a scaled type, `rope_scaling` (the same dict without rope_theta;
    5.x gives it precedence and fills in rope_theta, so both versions read the same RoPE).
    """
    arch = {"qwen2": "Qwen2ForCausalLM", "llama": "LlamaForCausalLM"}[self.model_type]
    out = dict(
        architectures=[arch], model_type=self.model_type, vocab_size=self.vocab_size,
        hidden_size=self.hidden_size, intermediate_size=self.intermediate_size,
        num_hidden_layers=self.num_hidden_layers, num_attention_heads=self.num_attention_heads,
        num_key_value_heads=self.num_key_value_heads, head_dim=self.resolved_head_dim,
        rms_norm_eps=self.rms_norm_eps, rope_theta=self.rope_theta,
        rope_parameters={**self.rope_scaling_dict, "rope_theta": self.rope_theta},
        max_position_embeddings=self.max_position_embeddings,
        tie_word_embeddings=self.tie_word_embeddings, hidden_act="silu",
        torch_dtype=self.param_dtype, dtype=self.param_dtype,
        bos_token_id=self.bos_token_id, eos_token_id=self.eos_token_id,
        pad_token_id=self.pad_token_id)
    if self.rope_scaling:
      out["rope_scaling"] = self.rope_scaling_dict
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


def _rope_from_hf(hf_config: Any) -> tuple[float, Optional[RopeScaling]]:
  """(rope_theta, normalized rope_scaling) of an HF config object or config.json dict."""
  scaling = _get(hf_config, "rope_scaling")
  params = _get(hf_config, "rope_parameters")
  # A transformers 5.x config object aliases rope_scaling to rope_parameters: name the latter.
  from_scaling = bool(scaling) and not (params and dict(scaling) == dict(params))
  field = "hf_config.rope_scaling" if from_scaling else "hf_config.rope_parameters"
  rope = dict(scaling or params or {})
  nested = sorted(k for k, v in rope.items() if isinstance(v, Mapping))
  if nested:
    raise ValueError(f"{field} is nested per layer type ({nested}); only a single global RoPE "
                     "is supported")
  if "rope_type" not in rope and "type" in rope:
    rope["rope_type"] = rope["type"]  # transformers 4.x legacy key
  rope.pop("type", None)
  rope.setdefault("rope_type", "default")
  rope_type = rope["rope_type"]
  if rope_type not in ROPE_TYPES:
    raise ValueError(f"{field}.rope_type={rope_type!r} is not supported (supported: "
                     f"{', '.join(ROPE_TYPES)})")
  theta = rope.pop("rope_theta", None)
  if theta is None:
    theta = _get(hf_config, "rope_theta")
  if theta is None and scaling and params:
    theta = dict(params).get("rope_theta")
  theta = 10000.0 if theta is None else theta
  partial = rope.pop("partial_rotary_factor", _get(hf_config, "partial_rotary_factor"))
  if partial is not None and partial != 1.0:
    raise ValueError(f"{field}.partial_rotary_factor={partial!r} is not supported (only 1.0)")
  if rope_type == "llama3":
    top = _get(hf_config, "original_max_position_embeddings")
    if top is not None:
      rope["original_max_position_embeddings"] = top
    rope.setdefault("original_max_position_embeddings",
                    _get(hf_config, "max_position_embeddings", 2048))
  return theta, normalize_rope_scaling(rope, field=field)


def from_hf_config(hf_config: Any, *, param_dtype: str = "float32",
                   dtype: str = "float32") -> ModelConfig:
  """Builds a `ModelConfig` from a transformers config object or a config.json dict.

  Handles both the transformers 4.x fields (`rope_theta`, `rope_scaling` with "type" or
  "rope_type") and the 5.x `rope_parameters` dict, resolved the way transformers 5.x does:
  `rope_scaling` wins over `rope_parameters`, a missing `rope_theta` comes from the top-level field
  (default 10000), and llama3's `original_max_position_embeddings` comes from the top-level field
  when present, else defaults to `max_position_embeddings`. Supported rope types: "default",
  "linear", "llama3"; anything else raises a ValueError naming the field.
  """
  model_type = _get(hf_config, "model_type", "llama")
  if model_type not in _MODEL_TYPES:
    raise ValueError(f"hf_config.model_type must be one of {_MODEL_TYPES}, got {model_type!r}")
  rope_theta, rope_scaling = _rope_from_hf(hf_config)
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
      rope_scaling=rope_scaling,
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
