"""DR-RL: per-layer low-rank attention projections with the rank chosen by a small RL policy.

Paper: Erden et al., "Dynamic Rank Reinforcement Learning for Adaptive Low-Rank Multi-Head
Self-Attention" (DR-RL), 2025, arXiv:2512.15973 (llm_hybrids_and_agents.md §13); official code
canererden/DR_RL_Project.

Factorisation (functional; the Flax decoder is untouched): each attention head's slice of a
projection kernel, W_h = U S V^T (q/k/v: [hidden, head_dim]; o: [head_dim, hidden]), is replaced
by its rank-r truncation W_h^(r) = U_r S_r V_r^T, with one rank r per layer and sequence. At full
rank the original kernel is used bit-for-bit.

Per layer l of one sequence (state -> action -> reward, REINFORCE):
  state  s_l = [mean-pooled RMS-normalised layer input (H), mean/var/Frobenius norm of the layer's
               Wq, Wk, Wv (9), one-hot layer id (L), one-hot previous action (A + 1)]
  policy pi(a | s_l) = softmax(MLP(s_l) masked to safe actions), epsilon-greedy when sampling;
         actions a -> ranks r in {r_min, r_min + r_step, ..., head_dim}
  reward R_l = alpha * fid_l - beta * F(r)/F(full) - gamma * dA(r)          (paper: alpha 1,
         beta 0.05, gamma 0.1)
    fid_l  = mean over valid tokens of cos(Attn_full(x_l), Attn_r(x_l)), both on the *same real
             activations* x_l: the layer input of the low-rank model on task text;
    F(r)   = attention FLOPs of the layer with factorised projections (counted analytically);
    dA(r)  = sqrt(sum_{k > r} sigma_k^2) / sqrt(sum_k sigma_k^2) over the factorised head
             matrices, the relative Frobenius error ||W - W^(r)||_F / ||W||_F (Eckart-Young),
             i.e. the paper's perturbation bound between rank r and full rank.
  safety: actions with dA(r) > safety_threshold are masked (logit -1e9); full rank is always safe.
  loss   L_RL = -sum_l mean_batch[ log pi(a_l | s_l) * (R_l - b_l) ]  (b_l = 0 in the paper).

Deviations (documented, with reasons):
  * The official training script computes fidelity from random dummy tensors with a constant
    perturbation norm; here fidelity is ALWAYS computed on real activations of the shipped policy
    on synthetic TabMWP text (the layer input of the low-rank model, so upstream truncation
    errors propagate as they would at inference).
  * The paper truncates the activations Q, K per (batch, head); we truncate the projection
    weights per head (an activation SVD per forward costs more than it saves). `matrices` chooses
    which of q/k/v/o are factorised; the paper factorises Q and K, the default here.
  * FLOPs: RoPE rotates queries and keys per position, so the L^2 score term cannot use the rank
    (the paper's 2 B H L r d_h count assumes it can); only the projections get cheaper:
    a head matrix [m, n] costs 2 n_tok r (m + n) factorised vs 2 n_tok m n dense, and the cheaper
    form is counted. The reward uses F(r)/F(full) and the relative tail energy (the paper divides
    FLOPs by 1e9 and uses an absolute norm), so beta and gamma are scale-free at this model size.
  * The LM is frozen (the paper trains L_LM + 0.1 L_RL jointly); only the rank policy learns.
  * The 2-norm bound uses the exact sigma_{r+1} instead of 3 power iterations. The policy is an
    MLP over the state (the paper uses a 2-layer Transformer encoder over the same features).
  * Optional per-layer batch-mean baseline b_l (off by default; the paper has none).
  * Our forward multiplies the rebuilt dense weights, so wall time does not drop; the FLOPs are
    those of the factorised form.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from rlpost.core import masked_mean
from rlpost.llm.model import Decoder
from rlpost.llm.model import causal_mask
from rlpost.llm.model import positions_from_mask
from rlpost.llm.model import rope_cos_sin

MATRICES = ("q", "k", "v", "o")


# --- SVD pieces (pure) ---------------------------------------------------------------------------


def truncate(u: jax.Array, s: jax.Array, vt: jax.Array, rank: jax.Array | int) -> jax.Array:
  """U diag(s * 1[k < rank]) V^T over the last two axes (rank may be traced)."""
  keep = (jnp.arange(s.shape[-1]) < rank).astype(s.dtype)
  return jnp.einsum("...ik,...k,...kj->...ij", u, s * keep, vt)


def tail_energy(s: jax.Array, rank: jax.Array | int) -> jax.Array:
  """sqrt(sum_{k >= rank} s_k^2) over the last axis: ||W - W^(rank)||_F for sorted s."""
  keep = jnp.arange(s.shape[-1]) >= rank
  return jnp.sqrt(jnp.sum(jnp.where(keep, s * s, 0.0), axis=-1))


def perturbation_bound(s: jax.Array, rank_a: jax.Array | int,
                       rank_b: jax.Array | int) -> jax.Array:
  """||dA||_F = sqrt(sum_{k=min(r,r')+1}^{max(r,r')} s_k^2) (1-based k) between two truncations."""
  lo, hi = jnp.minimum(rank_a, rank_b), jnp.maximum(rank_a, rank_b)
  k = jnp.arange(s.shape[-1])
  return jnp.sqrt(jnp.sum(jnp.where((k >= lo) & (k < hi), s * s, 0.0), axis=-1))


def energy_ratio(s: jax.Array, rank: jax.Array | int) -> jax.Array:
  """NER = sum_{k < rank} s_k^2 / sum_k s_k^2 (1 at full rank; 1 for an all-zero matrix)."""
  total = jnp.sum(s * s, axis=-1)
  kept = jnp.sum(jnp.where(jnp.arange(s.shape[-1]) < rank, s * s, 0.0), axis=-1)
  return jnp.where(total > 0, kept / jnp.where(total > 0, total, 1.0), 1.0)


def cosine_fidelity(full: jax.Array, approx: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean over valid tokens of cos(full_t, approx_t); full [..., T, H], mask [..., T].

  Two zero vectors count as identical (cos = 1); one zero vector gives 0.
  """
  full, approx = full.astype(jnp.float32), approx.astype(jnp.float32)
  nf, na = jnp.linalg.norm(full, axis=-1), jnp.linalg.norm(approx, axis=-1)
  dot = jnp.sum(full * approx, axis=-1)
  both_zero = (nf == 0) & (na == 0)
  cos = jnp.where(both_zero, 1.0, dot / jnp.maximum(nf * na, 1e-20))
  return masked_mean(cos, mask.astype(jnp.float32))


# --- per-head factorisation of a Decoder ---------------------------------------------------------


def rank_actions(head_dim: int, *, r_min: int = 16, r_step: int = 8) -> tuple[int, ...]:
  """{r_min, r_min + r_step, ..., head_dim} (head_dim always included). Paper: 16..64 step 8."""
  if not 1 <= r_min <= head_dim or r_step < 1:
    raise ValueError(f"need 1 <= r_min <= head_dim ({head_dim}) and r_step >= 1, got r_min="
                     f"{r_min}, r_step={r_step}")
  ranks = list(range(r_min, head_dim + 1, r_step))
  if ranks[-1] != head_dim:
    ranks.append(head_dim)
  return tuple(ranks)


def _head_matrices(kernel: jax.Array, name: str, head_dim: int) -> jax.Array:
  """[heads, m, n] per-head slices of a Dense kernel (q/k/v: [H, heads*d]; o: [heads*d, H])."""
  if name == "o":
    return kernel.reshape(-1, head_dim, kernel.shape[1])
  return kernel.reshape(kernel.shape[0], -1, head_dim).transpose(1, 0, 2)


def _from_heads(heads: jax.Array, name: str) -> jax.Array:
  if name == "o":
    return heads.reshape(-1, heads.shape[-1])
  return heads.transpose(1, 0, 2).reshape(heads.shape[1], -1)


def layer_svds(model: Decoder, *, matrices: Sequence[str] = ("q", "k")) -> list[dict[str, Any]]:
  """Per layer: {name: (U [heads, m, d], s [heads, d], Vt [heads, d, n])} for the factorised
  matrices (d = head_dim = the full rank of every head slice)."""
  for m in matrices:
    if m not in MATRICES:
      raise ValueError(f"matrices must be drawn from {MATRICES}, got {m!r}")
  d = model.config.resolved_head_dim
  out = []
  for layer in model.layers:
    entry = {}
    for m in matrices:
      kernel = getattr(layer.self_attn, f"{m}_proj").kernel[...].astype(jnp.float32)
      entry[m] = jnp.linalg.svd(_head_matrices(kernel, m, d), full_matrices=False)
    out.append(entry)
  return out


def set_attention_rank(attn, svds: dict[str, Any], rank: jax.Array | int, head_dim: int) -> None:
  """Replaces an Attention module's factorised kernels (in place) by their rank-`rank`
  truncations; at rank >= head_dim the original kernels are kept exactly."""
  for m, (u, s, vt) in svds.items():
    var = getattr(attn, f"{m}_proj").kernel
    original = var[...]
    low = _from_heads(truncate(u, s, vt, rank), m).astype(original.dtype)
    var[...] = jnp.where(rank >= head_dim, original, low)


def relative_tail(svds: dict[str, Any], rank: jax.Array | int) -> jax.Array:
  """dA(r) = ||W - W^(r)||_F / ||W||_F over all factorised head matrices of one layer."""
  if not svds:
    return jnp.zeros(())
  tail = sum(jnp.sum(tail_energy(s, rank) ** 2) for _, s, _ in svds.values())
  total = sum(jnp.sum(s * s) for _, s, _ in svds.values())
  return jnp.sqrt(tail / jnp.maximum(total, 1e-30))


def attention_flops(config, num_tokens: jax.Array | int, rank: jax.Array | int, *,
                    matrices: Sequence[str] = ("q", "k")) -> jax.Array:
  """Forward FLOPs of one attention layer on `num_tokens` tokens with rank-`rank` factorised
  `matrices` (projections: the cheaper of dense 2 n m k and factorised 2 n r (m + k) per head;
  scores and weighted sum 4 n^2 heads d, unaffected by the rank under RoPE)."""
  h, d = config.hidden_size, config.resolved_head_dim
  n = jnp.asarray(num_tokens, jnp.float32)
  r = jnp.asarray(rank, jnp.float32)
  heads = {"q": config.num_attention_heads, "k": config.num_key_value_heads,
           "v": config.num_key_value_heads, "o": config.num_attention_heads}
  total = 4.0 * n * n * config.num_attention_heads * d
  for m, count in heads.items():
    dense = 2.0 * n * h * d
    cost = jnp.minimum(dense, 2.0 * n * r * (h + d)) if m in matrices else dense
    total = total + count * cost
  return total


def model_flops(config, num_tokens: jax.Array | int, ranks: Sequence[Any] | jax.Array, *,
                matrices: Sequence[str] = ("q", "k")) -> jax.Array:
  """Forward FLOPs of the whole decoder (attention per layer + SwiGLU MLP + LM head)."""
  n = jnp.asarray(num_tokens, jnp.float32)
  mlp = 2.0 * n * 3 * config.hidden_size * config.intermediate_size
  head = 2.0 * n * config.hidden_size * config.vocab_size
  attn = sum(attention_flops(config, n, ranks[l], matrices=matrices)
             for l in range(config.num_hidden_layers))
  return attn + config.num_hidden_layers * mlp + head


# --- the rank policy -----------------------------------------------------------------------------


def init_policy(key: jax.Array, num_features: int, num_actions: int, *,
                hidden: int = 64) -> dict[str, jax.Array]:
  """Two-hidden-layer MLP (tanh); the last layer starts at zero, so pi starts uniform."""
  k1, k2 = jax.random.split(key)
  init = jax.nn.initializers.lecun_normal()
  return {"w1": init(k1, (num_features, hidden)), "b1": jnp.zeros((hidden,)),
          "w2": init(k2, (hidden, hidden)), "b2": jnp.zeros((hidden,)),
          "w3": jnp.zeros((hidden, num_actions)), "b3": jnp.zeros((num_actions,))}


def policy_logits(policy: dict[str, jax.Array], features: jax.Array,
                  safe: Optional[jax.Array] = None) -> jax.Array:
  """Masked action logits [..., A]; unsafe actions get -1e9 (paper's safety mask)."""
  h = jnp.tanh(features @ policy["w1"] + policy["b1"])
  h = jnp.tanh(h @ policy["w2"] + policy["b2"])
  logits = h @ policy["w3"] + policy["b3"]
  return logits if safe is None else jnp.where(safe, logits, -1e9)


def reinforce_loss(policy: dict[str, jax.Array], features: jax.Array, safe: jax.Array,
                   actions: jax.Array, rewards: jax.Array, *, baseline: bool = False) -> jax.Array:
  """L_RL = -sum_l mean_b[ log pi(a_bl | s_bl) (R_bl - b_l) ]; inputs [B, L, ...].

  b_l = mean_b R_bl when `baseline` (opt-in; the paper uses none).
  """
  logp = jax.nn.log_softmax(policy_logits(policy, features, safe), axis=-1)
  logp_a = jnp.take_along_axis(logp, actions[..., None], axis=-1)[..., 0]
  adv = rewards - jnp.mean(rewards, axis=0, keepdims=True) if baseline else rewards
  return -jnp.sum(jnp.mean(logp_a * jax.lax.stop_gradient(adv), axis=0))


@dataclasses.dataclass(frozen=True)
class RewardWeights:
  alpha: float = 1.0
  beta: float = 0.05
  gamma: float = 0.1


def num_features(config, num_actions: int) -> int:
  return config.hidden_size + 9 + config.num_hidden_layers + num_actions + 1


def _weight_stats(layer) -> jax.Array:
  out = []
  for m in ("q", "k", "v"):
    w = getattr(layer.self_attn, f"{m}_proj").kernel[...].astype(jnp.float32)
    out += [jnp.mean(w), jnp.var(w), jnp.linalg.norm(w)]
  return jnp.stack(out)


def rollout(model: Decoder, svds: list[dict[str, Any]], policy: dict[str, jax.Array],
            tokens: jax.Array, attention_mask: jax.Array, key: jax.Array, *,
            ranks: Sequence[int], epsilon: jax.Array | float = 0.0, greedy: bool = False,
            forced_action: Optional[jax.Array] = None, weights: RewardWeights = RewardWeights(),
            safety_threshold: Optional[float] = None,
            matrices: Sequence[str] = ("q", "k")) -> dict[str, jax.Array]:
  """One low-rank forward pass of a batch [B, T], choosing a rank per (sequence, layer).

  Mutates `model`'s attention kernels: call it on a model merged inside the traced function.
  `forced_action` [L] (or [B, L]) overrides the policy (fixed-rank baselines); `greedy` takes the
  argmax; otherwise epsilon-greedy sampling.

  Returns a dict of [B, L] arrays (features [B, L, F], safe [B, L, A]): actions, ranks, rewards,
  fidelity, flops_frac, tail, plus hidden [B, T, H] (final-norm hidden states of the low-rank
  model).
  """
  cfg = model.config
  d = cfg.resolved_head_dim
  rank_table = jnp.asarray(ranks, jnp.int32)
  a_n = len(ranks)
  b = tokens.shape[0]
  mask = attention_mask.astype(jnp.float32)
  n_tok = jnp.sum(mask, axis=-1)
  pos = positions_from_mask(attention_mask)
  cos, sin = rope_cos_sin(pos, d, cfg.rope_theta, cfg.rope_scaling)
  attn_mask = causal_mask(attention_mask)
  x = jnp.take(model.embed_tokens[...], tokens, axis=0).astype(cfg.jnp_dtype)
  prev = jnp.full((b,), a_n, jnp.int32)
  full_flops = attention_flops(cfg, n_tok, d, matrices=matrices)
  keys = jax.random.split(key, cfg.num_hidden_layers)
  rows = {k: [] for k in ("features", "safe", "actions", "ranks", "rewards", "fidelity",
                          "flops_frac", "tail")}
  for l, layer in enumerate(model.layers):
    inp = layer.input_layernorm(x)
    pooled = jnp.sum(inp.astype(jnp.float32) * mask[..., None], 1) / jnp.maximum(n_tok, 1)[:, None]
    feats = jnp.concatenate([
        pooled, jnp.broadcast_to(_weight_stats(layer), (b, 9)),
        jnp.broadcast_to(jax.nn.one_hot(l, cfg.num_hidden_layers), (b, cfg.num_hidden_layers)),
        jax.nn.one_hot(prev, a_n + 1)], axis=-1)
    tails = jnp.stack([relative_tail(svds[l], r) for r in ranks])  # [A]
    safe = jnp.ones((a_n,), bool) if safety_threshold is None else (
        (tails <= safety_threshold) | (rank_table >= d))
    safe = jnp.broadcast_to(safe, (b, a_n))
    logits = policy_logits(policy, feats, safe)
    k_explore, k_uniform, k_sample = jax.random.split(keys[l], 3)
    if forced_action is not None:
      action = jnp.broadcast_to(jnp.asarray(forced_action)[..., l], (b,)).astype(jnp.int32)
    elif greedy:
      action = jnp.argmax(logits, axis=-1)
    else:
      sampled = jax.random.categorical(k_sample, logits, axis=-1)
      uniform = jax.random.categorical(k_uniform, jnp.where(safe, 0.0, -1e9), axis=-1)
      explore = jax.random.uniform(k_explore, (b,)) < epsilon
      action = jnp.where(explore, uniform, sampled)
    rank = rank_table[action]
    full_out, _ = layer.self_attn(inp, cos, sin, attn_mask)

    attn_graph, attn_state = nnx.split(layer.self_attn)

    def low_rank_attention(inp_b, cos_b, sin_b, mask_b, r, state):
      attn = nnx.merge(attn_graph, state)  # a private copy per sequence
      set_attention_rank(attn, svds[l], r, d)
      return attn(inp_b[None], cos_b[None], sin_b[None], mask_b[None])[0][0]

    low_out = jax.vmap(low_rank_attention, in_axes=(0, 0, 0, 0, 0, None))(
        inp, cos, sin, attn_mask, rank, attn_state)
    fid = jax.vmap(cosine_fidelity)(full_out, low_out, mask)
    frac = attention_flops(cfg, n_tok, rank, matrices=matrices) / full_flops
    tail = tails[action]
    reward = weights.alpha * fid - weights.beta * frac - weights.gamma * tail
    x = x + low_out.astype(x.dtype)
    x = x + layer.mlp(layer.post_attention_layernorm(x))
    for k, v in (("features", feats), ("safe", safe), ("actions", action), ("ranks", rank),
                 ("rewards", reward), ("fidelity", fid), ("flops_frac", frac), ("tail", tail)):
      rows[k].append(v)
    prev = action
  out = {k: jnp.stack(v, axis=1) for k, v in rows.items()}
  out["hidden"] = model.norm(x)
  return out
