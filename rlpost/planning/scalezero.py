"""ScaleZero pieces: a Mixture-of-Experts feed-forward and Dynamic Parameter Scaling (staged LoRA).

Paper: Pu et al., "One Model for All Tasks: Leveraging Efficient World Models in Multi-Task
Planning" (ScaleZero), 2025, arXiv 2509.07945; official code in opendilab/LightZero
(`unizero_world_models/moe.py`, CurriculumLoRALinear).

* `MoEFeedForward`: top-k gate (softmax over the selected top-k logits; paper: 8 experts, top-1)
  plus one shared expert applied to every token, and the Switch-Transformer load-balancing loss
  N * sum_i f_i P_i (f_i = share of tokens routed to expert i, P_i = mean gate probability), which
  equals 1 under perfectly uniform routing. The official MoE has no auxiliary loss; we expose it as
  an option because the multi-task learner here is tiny (documented in BUILD_NOTES.md).
* `StagedLoRALinear` (DPS): W_eff x = a_0 W_0 x + sum_{j<=s} a_j (B_j A_j x) (lora_alpha / r), with
  bounded learnable scales a = init + 0.2 tanh(logit). Stage 0 trains W_0; stage s >= 1 freezes W_0
  and earlier adapters and trains adapter s, a_0 and a_{j<s} (a_s itself frozen). B is zero-
  initialised, so switching stage leaves the outputs unchanged. `dps_trainable_mask` returns the
  per-stage gradient mask; `dps_should_advance` is the stage-switch rule.
"""

import math

import flax.nnx as nnx
import jax
import jax.numpy as jnp

Array = jax.Array


class _Expert(nnx.Module):
  """Linear D -> hidden, GELU, hidden -> D."""

  def __init__(self, dim: int, hidden: int, *, rngs: nnx.Rngs):
    self.up = nnx.Linear(dim, hidden, rngs=rngs)
    self.down = nnx.Linear(hidden, dim, rngs=rngs)

  def __call__(self, x: Array) -> Array:
    return self.down(jax.nn.gelu(self.up(x)))


class MoEFeedForward(nnx.Module):
  """Top-k routed experts plus a shared expert. Returns (output, aux) with the balance loss."""

  def __init__(self, dim: int, *, num_experts: int = 8, top_k: int = 1, hidden_mult: int = 4,
               shared_expert: bool = True, rngs: nnx.Rngs):
    if not 1 <= top_k <= num_experts:
      raise ValueError(f"need 1 <= top_k <= num_experts; got top_k={top_k}, "
                       f"num_experts={num_experts}")
    self.num_experts, self.top_k = num_experts, top_k
    self.gate = nnx.Linear(dim, num_experts, use_bias=False, rngs=rngs)
    keys = jax.random.split(rngs.params(), num_experts)
    # Experts are stacked (vmapped construction) so all run in one batched matmul.
    self.experts = nnx.vmap(lambda k: _Expert(dim, hidden_mult * dim, rngs=nnx.Rngs(k)))(keys)
    self.shared = _Expert(dim, hidden_mult * dim, rngs=rngs) if shared_expert else None

  def __call__(self, x: Array) -> tuple[Array, dict[str, Array]]:
    tokens = x.reshape(-1, x.shape[-1])
    logits = self.gate(tokens)
    top_vals, top_idx = jax.lax.top_k(logits, self.top_k)
    weights = jax.nn.softmax(top_vals, axis=-1)  # softmax over the selected logits only
    dense_w = jnp.zeros_like(logits).at[jnp.arange(tokens.shape[0])[:, None], top_idx].set(weights)
    # Plain jax.vmap over the split expert state (nnx.vmap here fails when the whole module is
    # itself traced by an outer jax.vmap, e.g. over seeds).
    graphdef, state = nnx.split(self.experts)
    all_out = jax.vmap(lambda s, t: nnx.merge(graphdef, s)(t), in_axes=(0, None))(
        state, tokens)  # [E, N, D]
    out = jnp.einsum("ne,end->nd", dense_w, all_out)
    if self.shared is not None:
      out = out + self.shared(tokens)
    probs = jax.nn.softmax(logits, axis=-1)
    routed = jnp.mean(jax.nn.one_hot(top_idx[:, 0], self.num_experts), axis=0)
    balance = self.num_experts * jnp.sum(routed * jnp.mean(probs, axis=0))
    return out.reshape(x.shape), {"load_balance_loss": balance, "expert_share": routed}


class StagedLoRALinear(nnx.Module):
  """A linear layer with `num_stages` LoRA adapters enabled in stages (DPS)."""

  def __init__(self, in_features: int, out_features: int, *, num_stages: int = 5, rank: int = 64,
               lora_alpha: float = 32.0, scale_init: float = 1.0, scale_range: float = 0.2,
               rngs: nnx.Rngs):
    self.base = nnx.Linear(in_features, out_features, rngs=rngs)
    self.num_adapters = num_stages - 1
    self.rank, self.factor, self.scale_range = rank, lora_alpha / rank, scale_range
    self.scale_init = scale_init
    init_a = jax.nn.initializers.normal(1.0 / math.sqrt(in_features))
    self.lora_a = nnx.Param(init_a(rngs.params(), (self.num_adapters, in_features, rank)))
    self.lora_b = nnx.Param(jnp.zeros((self.num_adapters, rank, out_features)))
    self.scale_logits = nnx.Param(jnp.zeros(num_stages))  # a_0 (base) and a_1.. (adapters)
    self.stage = nnx.Variable(jnp.int32(0))

  def scales(self) -> Array:
    """a = init + range * tanh(logit), bounded in [init - range, init + range]."""
    return self.scale_init + self.scale_range * jnp.tanh(self.scale_logits.value)

  def __call__(self, x: Array) -> Array:
    a = self.scales()
    y = a[0] * self.base(x)
    active = jnp.arange(self.num_adapters) < self.stage.value  # adapters 1..s are on at stage s
    lora = jnp.einsum("...i,jir,jro->j...o", x, self.lora_a.value, self.lora_b.value)
    w = jnp.where(active, a[1:], 0.0) * self.factor
    return y + jnp.einsum("j,j...o->...o", w, lora)


def dps_stage_mask(stage: Array | int, num_stages: int) -> dict[str, Array]:
  """Per-stage trainability (1 = train, 0 = frozen) of a `StagedLoRALinear`'s parameters.

  Stage 0: base W_0 only. Stage s >= 1: adapter s (its A and B), a_0 and a_{j<s}; W_0 and earlier
  adapters are frozen, and a_s itself stays frozen. Shapes: base `[]`, lora_a / lora_b
  `[num_stages - 1]` (one entry per adapter), scale_logits `[num_stages]`.
  """
  s = jnp.asarray(stage)
  num_adapters = num_stages - 1
  adapters = jnp.arange(num_adapters) + 1  # adapter index j = 1..num_adapters
  adapter_on = (adapters == s).astype(jnp.float32)
  scale_idx = jnp.arange(num_adapters + 1)
  scale_on = jnp.where(s == 0, 0.0, ((scale_idx == 0) | ((scale_idx >= 1) & (scale_idx < s)))
                       .astype(jnp.float32))
  base_on = (s == 0).astype(jnp.float32)
  return {"base": base_on, "lora_a": adapter_on, "lora_b": adapter_on, "scale_logits": scale_on}


def dps_trainable_mask(layer: StagedLoRALinear) -> dict[str, Array]:
  """`dps_stage_mask` at the layer's current stage."""
  return dps_stage_mask(layer.stage.value, layer.num_adapters + 1)


def dps_should_advance(*, stage: int, num_stages: int, iters_in_stage: int, newly_solved: int,
                       unsolved: int, min_stage0_iters: int = 50_000,
                       max_stage_iters: int = 20_000) -> bool:
  """DPS stage switch: after the stage-0 minimum, advance when the newly solved tasks reach
  ceil(unsolved / remaining adapters), or after `max_stage_iters` (paper/official defaults)."""
  if stage >= num_stages - 1:
    return False
  if stage == 0 and iters_in_stage < min_stage0_iters:
    return False
  remaining = num_stages - 1 - stage
  needed = math.ceil(unsolved / max(remaining, 1))
  return newly_solved >= needed or iters_in_stage >= max_stage_iters
