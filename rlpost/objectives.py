"""Objective registry: named presets that compose core parts into one objective.

A preset is an `ObjectiveConfig` naming five orthogonal parts:

  advantage    an entry of ADVANTAGES   (rewards [P, G] -> token advantages [B, T])
  surrogate    an entry of SURROGATES   (per-token loss with its hyperparameters)
  agg_mode     an aggregation mode of `rlpost.core.aggregate_loss`
  KL           estimator, coefficient and placement ("loss", "reward" or None)
  selectors    names from SELECTORS (group filters at rollout time, token masks at loss time)

`objective(name, **overrides)` returns an `Objective` with the two pure steps a trainer needs:
`compute_advantages(...)` and `loss(batch) -> (scalar, metrics)` (plus `loss_parts` for
micro-batches). Adding a paper is one core function plus one `register_*` call and one preset; no
trainer changes.

This module imports only `rlpost.core`.
"""

import dataclasses
import difflib
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from rlpost import core

Array = jax.Array
Batch = Mapping[str, Array]

# --------------------------------------------------------------------------------------------------
# Part registries.


@dataclasses.dataclass(frozen=True)
class AdvantageSpec:
  """An advantage estimator.

  `fn(rewards[P, G], mask[B, T], *, state, prompt_ids, batch, **kwargs) -> (adv[B, T], state)`.
  `token_level` estimators take per-token rewards (so KL may be placed in the reward).
  """

  fn: Callable[..., tuple[Array, Any]]
  defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  init_state: Callable[..., Any] | None = None
  token_level: bool = False
  # Accepts variable group sizes: a padded [P, G_max] rewards grid with batch["group_mask"].
  group_mask: bool = False


@dataclasses.dataclass(frozen=True)
class SurrogateSpec:
  """A per-token surrogate `fn(logp, old_logp, advantages, mask, **kwargs) -> (loss, aux)`."""

  fn: Callable[..., tuple[Array, dict[str, Array]]]
  defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  # Extra batch entries passed to `fn` as keyword arguments when present (e.g. "entropy", "rng").
  batch_keys: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class SelectorSpec:
  """A selector. stage "groups": `fn(rewards[P, G], **kw) -> keep[P]`;
  stage "tokens": `fn(batch, **kw) -> mask[B, T]` multiplied into the loss mask."""

  fn: Callable[..., Array]
  stage: str
  defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)


ADVANTAGES: dict[str, AdvantageSpec] = {}
SURROGATES: dict[str, SurrogateSpec] = {}
SELECTORS: dict[str, SelectorSpec] = {}
PRESETS: dict[str, "ObjectiveConfig"] = {}


def _unknown(kind: str, name: str, valid) -> ValueError:
  valid = sorted(valid)
  close = difflib.get_close_matches(name, valid, n=1)
  hint = f" (did you mean {close[0]!r}?)" if close else ""
  return ValueError(f"unknown {kind} {name!r}{hint}; valid: {', '.join(valid)}")


def register_advantage(name: str, spec: AdvantageSpec) -> None:
  ADVANTAGES[name] = spec


def register_surrogate(name: str, spec: SurrogateSpec) -> None:
  SURROGATES[name] = spec


def register_selector(name: str, spec: SelectorSpec) -> None:
  if spec.stage not in ("groups", "tokens"):
    raise ValueError(f"selector stage must be 'groups' or 'tokens'; got {spec.stage!r}")
  SELECTORS[name] = spec


def _stateless(fn):
  def wrapped(rewards, mask, *, state=None, prompt_ids=None, batch=None, **kwargs):
    del prompt_ids, batch
    return fn(rewards, mask, **kwargs), state
  return wrapped


def _group_relative(estimator):
  """Registry wrapper of a group-relative estimator that honours batch["group_mask"]."""
  def wrapped(rewards, mask, *, state=None, prompt_ids=None, batch=None, **kwargs):
    del prompt_ids
    valid = None if batch is None else batch.get("group_mask")
    return core.broadcast_to_tokens(estimator(rewards, valid=valid, **kwargs), mask), state
  return wrapped


register_advantage("grpo", AdvantageSpec(
    _group_relative(core.grpo_advantages), defaults={"eps": 1e-6, "scale_by_std": True},
    group_mask=True))
register_advantage("rloo", AdvantageSpec(_group_relative(core.rloo_advantages), group_mask=True))
register_advantage("reinforce_pp_baseline", AdvantageSpec(
    _stateless(lambda r, m, *, eps: core.reinforce_pp_baseline_advantages(r, m, eps=eps)),
    defaults={"eps": 1e-8}))
register_advantage("reinforce_pp", AdvantageSpec(
    _stateless(lambda tr, m, *, gamma, eps: core.reinforce_pp_advantages(tr, m, gamma=gamma,
                                                                          eps=eps)),
    defaults={"gamma": 1.0, "eps": 1e-8}, token_level=True))


def _gae_advantage(token_rewards, mask, *, state=None, prompt_ids=None, batch=None, gamma, lambda_,
                   whiten):
  del prompt_ids
  if batch is None or "values" not in batch:
    raise ValueError("the 'gae' advantage needs batch['values'] ([B, T] critic values)")
  adv, _ = core.token_gae_advantages(token_rewards, batch["values"], mask, gamma=gamma,
                                     lambda_=lambda_, whiten=whiten)
  return adv, state


register_advantage("gae", AdvantageSpec(
    _gae_advantage, defaults={"gamma": 1.0, "lambda_": 1.0, "whiten": True}, token_level=True))

register_surrogate("ppo_clip", SurrogateSpec(
    core.ppo_clip_loss_per_token, defaults={"clip_low": 0.2, "clip_high": 0.2, "dual_clip": None}))
register_surrogate("gspo", SurrogateSpec(
    core.gspo_loss_per_token, defaults={"clip_low": 3e-4, "clip_high": 4e-4}))
register_surrogate("cispo", SurrogateSpec(
    core.cispo_loss_per_token, defaults={"is_clip_low": None, "is_clip_high": 4.0}))
register_surrogate("pg", SurrogateSpec(
    lambda logp, old_logp, adv, mask: core.pg_loss_per_token(logp, adv, mask)))

register_selector("dynamic_sampling", SelectorSpec(
    lambda rewards: core.dynamic_sampling_mask(rewards), stage="groups"))

# --------------------------------------------------------------------------------------------------
# Configs and presets.


@dataclasses.dataclass(frozen=True)
class ObjectiveConfig:
  """One objective: five parts plus their hyperparameters, validated on construction.

  `advantage_kwargs` / `surrogate_kwargs` / `selector_kwargs` hold the parts' hyperparameters;
  `objective(name, clip_high=0.28)` routes a flat override to the part that owns the key.
  """

  name: str
  advantage: str
  surrogate: str
  agg_mode: str
  kl_estimator: str = "k3"
  kl_coef: float = 0.0
  kl_placement: str | None = None  # "loss", "reward" or None (no KL)
  selectors: tuple[str, ...] = ()
  loss_scale_factor: float | None = None
  advantage_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  surrogate_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  selector_kwargs: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
  tis_cap: float | None = None  # truncated-IS cap for sampler/trainer mismatch; None = off
  min_group_size: int = 2
  overlong_buffer: int | None = None  # DAPO soft overlong punishment (tokens); None = off
  overlong_factor: float = 1.0
  paper: str = ""

  def __post_init__(self):
    if self.advantage not in ADVANTAGES:
      raise _unknown("advantage estimator", self.advantage, ADVANTAGES)
    if self.surrogate not in SURROGATES:
      raise _unknown("surrogate", self.surrogate, SURROGATES)
    if self.agg_mode not in core.AGG_MODES:
      raise _unknown("agg_mode", self.agg_mode, core.AGG_MODES)
    if self.kl_estimator not in core.KL_ESTIMATORS:
      raise _unknown("kl_estimator", self.kl_estimator, core.KL_ESTIMATORS)
    if self.kl_placement not in (None, "loss", "reward"):
      raise ValueError(f"kl_placement must be 'loss', 'reward' or None; got {self.kl_placement!r}")
    if self.kl_coef < 0:
      raise ValueError(f"kl_coef must be >= 0; got kl_coef={self.kl_coef}")
    if self.kl_placement == "reward" and not ADVANTAGES[self.advantage].token_level:
      raise ValueError(
          f"kl_placement='reward' needs a token-level advantage estimator (reinforce_pp, gae); "
          f"{self.advantage!r} uses outcome rewards only")
    for s in self.selectors:
      if s not in SELECTORS:
        raise _unknown("selector", s, SELECTORS)
    _check_kwargs("advantage", self.advantage, self.advantage_kwargs, ADVANTAGES[self.advantage])
    _check_kwargs("surrogate", self.surrogate, self.surrogate_kwargs, SURROGATES[self.surrogate])
    skw = dict(self.surrogate_kwargs)
    for low_key, high_key in (("clip_low", "clip_high"), ("is_clip_low", "is_clip_high")):
      low, high = skw.get(low_key), skw.get(high_key)
      if low is not None and not 0.0 <= low < 1.0:
        raise ValueError(f"{low_key} must be in [0, 1); got {low_key}={low}")
      if high is not None and high < 0.0:
        raise ValueError(f"{high_key} must be >= 0; got {high_key}={high}")
    if skw.get("dual_clip") is not None and skw["dual_clip"] <= 1.0:
      raise ValueError(f"dual_clip must be > 1 or None; got dual_clip={skw['dual_clip']}")
    if self.loss_scale_factor is not None and self.loss_scale_factor <= 0:
      raise ValueError(f"loss_scale_factor must be > 0; got {self.loss_scale_factor}")
    if self.tis_cap is not None and self.tis_cap <= 0:
      raise ValueError(f"tis_cap must be > 0 or None; got tis_cap={self.tis_cap}")
    if self.min_group_size < 1:
      raise ValueError(f"min_group_size must be >= 1; got {self.min_group_size}")
    if self.overlong_buffer is not None and self.overlong_buffer <= 0:
      raise ValueError(f"overlong_buffer must be > 0 tokens or None; got {self.overlong_buffer}")


def _check_kwargs(kind, name, kwargs, spec) -> None:
  for k in kwargs:
    if k not in spec.defaults:
      raise ValueError(f"{kind} {name!r} has no hyperparameter {k!r}; valid: "
                       f"{', '.join(sorted(spec.defaults)) or '(none)'}")


def register_preset(config: ObjectiveConfig) -> ObjectiveConfig:
  PRESETS[config.name] = _with_part_defaults(config)
  return PRESETS[config.name]


def _with_part_defaults(config: ObjectiveConfig) -> ObjectiveConfig:
  """Pins every part default explicitly into the config (so each preset states all its values)."""
  adv = {**ADVANTAGES[config.advantage].defaults, **config.advantage_kwargs}
  sur = {**SURROGATES[config.surrogate].defaults, **config.surrogate_kwargs}
  sel = {s: {**SELECTORS[s].defaults, **config.selector_kwargs.get(s, {})} for s in config.selectors}
  return dataclasses.replace(config, advantage_kwargs=adv, surrogate_kwargs=sur, selector_kwargs=sel)


register_preset(ObjectiveConfig(
    name="ppo", advantage="gae", surrogate="ppo_clip", agg_mode="token_mean",
    advantage_kwargs={"gamma": 1.0, "lambda_": 1.0, "whiten": True},
    surrogate_kwargs={"clip_low": 0.2, "clip_high": 0.2, "dual_clip": 3.0},
    kl_estimator="k1", kl_coef=0.001, kl_placement="reward",
    paper="PPO (arXiv 1707.06347) with GAE (arXiv 1506.02438); verl defaults"))
register_preset(ObjectiveConfig(
    name="grpo", advantage="grpo", surrogate="ppo_clip", agg_mode="seq_mean_token_mean",
    advantage_kwargs={"eps": 1e-6, "scale_by_std": True},
    surrogate_kwargs={"clip_low": 0.2, "clip_high": 0.2, "dual_clip": None},
    kl_estimator="k3", kl_coef=0.04, kl_placement="loss",
    paper="DeepSeekMath GRPO (arXiv 2402.03300): beta 0.04, eps 0.2, seq-mean-token-mean"))
register_preset(ObjectiveConfig(
    name="dr_grpo", advantage="grpo", surrogate="ppo_clip", agg_mode="seq_mean_token_sum_norm",
    advantage_kwargs={"eps": 1e-6, "scale_by_std": False},
    surrogate_kwargs={"clip_low": 0.2, "clip_high": 0.2, "dual_clip": None},
    kl_coef=0.0, kl_placement=None,
    paper="Dr.GRPO (arXiv 2503.20783): no std, constant normaliser (pass loss_scale_factor), no KL"))
register_preset(ObjectiveConfig(
    name="dapo", advantage="grpo", surrogate="ppo_clip", agg_mode="token_mean",
    advantage_kwargs={"eps": 1e-6, "scale_by_std": True},
    surrogate_kwargs={"clip_low": 0.2, "clip_high": 0.28, "dual_clip": None},
    kl_coef=0.0, kl_placement=None, selectors=("dynamic_sampling",),
    overlong_buffer=4096, overlong_factor=1.0,
    paper="DAPO (arXiv 2503.14476): clip-higher 0.2/0.28, dynamic sampling, token-mean, overlong "
          "buffer 4096 of 20480 tokens, factor 1, no KL"))
register_preset(ObjectiveConfig(
    name="gspo", advantage="grpo", surrogate="gspo", agg_mode="seq_mean_token_mean",
    advantage_kwargs={"eps": 1e-6, "scale_by_std": True},
    surrogate_kwargs={"clip_low": 3e-4, "clip_high": 4e-4},
    kl_coef=0.0, kl_placement=None,
    paper="GSPO (arXiv 2507.18071): sequence ratio, clip 3e-4/4e-4, no KL"))
register_preset(ObjectiveConfig(
    name="cispo", advantage="grpo", surrogate="cispo", agg_mode="token_mean",
    advantage_kwargs={"eps": 1e-6, "scale_by_std": True},
    surrogate_kwargs={"is_clip_low": None, "is_clip_high": 4.0},
    kl_coef=0.0, kl_placement=None,
    paper="CISPO / MiniMax-M1 (arXiv 2506.13585): sg(clipped IS weight), upper cap only, no KL"))
register_preset(ObjectiveConfig(
    name="rloo", advantage="rloo", surrogate="ppo_clip", agg_mode="token_mean",
    surrogate_kwargs={"clip_low": 0.2, "clip_high": 0.2, "dual_clip": None},
    kl_coef=0.0, kl_placement=None,
    paper="RLOO (Kool et al. 2019; arXiv 2402.14740), leave-one-out baseline in the PPO surrogate"))
register_preset(ObjectiveConfig(
    name="reinforce_pp", advantage="reinforce_pp_baseline", surrogate="ppo_clip",
    agg_mode="token_mean", advantage_kwargs={"eps": 1e-8},
    surrogate_kwargs={"clip_low": 0.2, "clip_high": 0.2, "dual_clip": None},
    kl_estimator="k3", kl_coef=0.001, kl_placement="loss",
    paper="REINFORCE++-baseline (arXiv 2501.03262): group mean then batch whitening; k3 KL in loss"))

_FIELDS = {f.name for f in dataclasses.fields(ObjectiveConfig)} - {
    "name", "advantage_kwargs", "surrogate_kwargs", "selector_kwargs"}


def make_config(name: str, **overrides) -> ObjectiveConfig:
  """The preset `name` with flat overrides routed to the config or to the part that owns the key.

  Raises ValueError naming the bad preset or key and listing the valid ones.
  """
  if name not in PRESETS:
    raise _unknown("objective", name, PRESETS)
  base = PRESETS[name]
  top, adv, sur = {}, dict(base.advantage_kwargs), dict(base.surrogate_kwargs)
  # Selector hyperparameters (e.g. d3s's schedule=True, n_init, ...) route to the one selector of
  # the preset that owns the key; a key owned by two selectors is ambiguous and rejected below.
  sel = {s: {**SELECTORS[s].defaults, **base.selector_kwargs.get(s, {})} for s in base.selectors}
  # Swapping a part resets that part's hyperparameters to the new part's defaults.
  if "advantage" in overrides and overrides["advantage"] != base.advantage:
    adv = dict(ADVANTAGES[overrides["advantage"]].defaults) if overrides["advantage"] in ADVANTAGES else {}
  if "surrogate" in overrides and overrides["surrogate"] != base.surrogate:
    sur = dict(SURROGATES[overrides["surrogate"]].defaults) if overrides["surrogate"] in SURROGATES else {}
  for key, value in overrides.items():
    if key in _FIELDS:
      top[key] = tuple(value) if key == "selectors" else value
    elif key in adv:
      adv[key] = value
    elif key in sur:
      sur[key] = value
    elif "selectors" not in overrides and sum(key in kw for kw in sel.values()) == 1:
      next(kw for kw in sel.values() if key in kw)[key] = value
    else:
      valid = sorted(_FIELDS | set(adv) | set(sur)
                     | (set() if "selectors" in overrides else {k for kw in sel.values() for k in kw}))
      close = difflib.get_close_matches(key, valid, n=1)
      hint = f" (did you mean {close[0]!r}?)" if close else ""
      raise ValueError(f"objective {name!r} has no option {key!r}{hint}; valid: {', '.join(valid)}")
  if "selectors" not in overrides and "selector_kwargs" not in overrides:
    top["selector_kwargs"] = sel
  cfg = dataclasses.replace(base, advantage_kwargs=adv, surrogate_kwargs=sur, **top)
  return _with_part_defaults(cfg)


# --------------------------------------------------------------------------------------------------
# The composed objective.


@dataclasses.dataclass(frozen=True, eq=False)
class Objective:
  """Pure steps of one configured objective (hashed by identity, so usable as a static jit arg).

  Batch keys used by `loss`: `logp`, `old_logp`, `advantages`, `mask` (all `[B, T]`), plus
  `ref_logp` when KL is in the loss and `sampler_logp` when `tis_cap` is set.
  """

  config: ObjectiveConfig

  # -- rollout-time steps ----------------------------------------------------------------------

  def init_state(self, **kwargs) -> Any:
    """Initial objective state (carried in the train state); None for stateless objectives."""
    spec = ADVANTAGES[self.config.advantage]
    return None if spec.init_state is None else spec.init_state(**kwargs)

  def select_groups(self, rewards: Array) -> Array:
    """`[P]` keep mask from every group-stage selector (all True without selectors)."""
    keep = jnp.ones(rewards.shape[:1], bool)
    for s in self.config.selectors:
      spec = SELECTORS[s]
      if spec.stage == "groups":
        keep = keep & spec.fn(rewards, **self.config.selector_kwargs.get(s, {}))
    return keep

  def shape_rewards(self, rewards: Array, lengths: Array, *, max_len: int) -> Array:
    """Adds the DAPO overlong penalty (in tokens) when the preset enables it."""
    if self.config.overlong_buffer is None:
      return rewards
    if self.config.overlong_buffer > max_len:
      raise ValueError(
          f"overlong_buffer={self.config.overlong_buffer} exceeds max_len={max_len}: the penalty "
          f"would start at token 0; set overlong_buffer <= max_len (DAPO: 4096 of 20480)")
    pen = core.overlong_penalty(lengths, max_len=max_len, buffer=self.config.overlong_buffer,
                                factor=self.config.overlong_factor)
    return rewards + pen.reshape(rewards.shape)

  def compute_advantages(
      self,
      rewards: Array,
      mask: Array,
      *,
      state: Any = None,
      prompt_ids: Array | None = None,
      old_logp: Array | None = None,
      ref_logp: Array | None = None,
      values: Array | None = None,
      extra: Mapping[str, Array] | None = None,
      group_mask: Array | None = None,
  ) -> tuple[Array, Any]:
    """The advantage step: `[P, G]` rewards -> `[B, T]` token advantages (and the new state).

    `extra` holds further rollout arrays an estimator reads from its `batch` argument (e.g.
    "entropy", "segment_ids", "old_logp_tempered", "oblr_weights"); `old_logp` is passed too.
    `group_mask` `[P, G_max]` marks the real completions of variable-size groups laid out on a
    padded grid (B = P * G_max rows of `mask`, padded rows all zero); padded slots get advantage 0.
    Only estimators registered with `group_mask=True` accept it (grpo, dr_grpo, rloo).
    """
    cfg = self.config
    if rewards.ndim != 2:
      raise ValueError(f"rewards must be [P, G]; got shape {rewards.shape}")
    spec = ADVANTAGES[cfg.advantage]
    batch = dict(extra or {})
    if group_mask is not None:
      if not spec.group_mask:
        ok = sorted(k for k, v in ADVANTAGES.items() if v.group_mask)
        raise ValueError(f"objective {cfg.name!r}: advantage {cfg.advantage!r} does not support "
                         f"variable group sizes (group_mask); estimators that do: {', '.join(ok)}")
      if group_mask.shape != rewards.shape:
        raise ValueError(f"group_mask shape {group_mask.shape} != rewards shape {rewards.shape}")
      if not isinstance(group_mask, jax.core.Tracer):
        counts = np.asarray(group_mask).sum(axis=1)
        small = counts[(counts > 0) & (counts < cfg.min_group_size)]
        if small.size:
          raise ValueError(f"a group of {int(small.min())} valid completions < min_group_size="
                           f"{cfg.min_group_size} for objective {cfg.name!r}")
      batch["group_mask"] = group_mask
    elif rewards.shape[1] < cfg.min_group_size:
      raise ValueError(f"group size {rewards.shape[1]} < min_group_size={cfg.min_group_size} for "
                       f"objective {cfg.name!r}")
    if values is not None:
      batch["values"] = values
    if old_logp is not None:
      batch.setdefault("old_logp", old_logp)
    if spec.token_level:
      signal = core.outcome_to_token_rewards(rewards, mask)
      if cfg.kl_placement == "reward" and cfg.kl_coef > 0:
        if old_logp is None or ref_logp is None:
          raise ValueError("kl_placement='reward' needs old_logp and ref_logp")
        kl = core.kl_penalty(old_logp, ref_logp, estimator=cfg.kl_estimator)
        signal = signal - cfg.kl_coef * jnp.where(mask.astype(bool), kl, 0.0)
    else:
      signal = rewards
    adv, state = spec.fn(signal, mask, state=state, prompt_ids=prompt_ids, batch=batch,
                         **cfg.advantage_kwargs)
    return jax.lax.stop_gradient(adv), state

  # -- train-time steps ------------------------------------------------------------------------

  def token_mask(self, batch: Batch) -> Array:
    mask = batch["mask"].astype(bool)
    for s in self.config.selectors:
      spec = SELECTORS[s]
      if spec.stage == "tokens":
        mask = mask & spec.fn(batch, **self.config.selector_kwargs.get(s, {})).astype(bool)
    return mask

  def per_token(self, batch: Batch) -> tuple[Array, Array, dict[str, Array]]:
    """(policy per-token loss, KL per-token term or zeros, aux), before aggregation."""
    cfg = self.config
    mask = self.token_mask(batch)
    spec = SURROGATES[cfg.surrogate]
    extra = {k: batch[k] for k in spec.batch_keys if k in batch}
    loss, aux = spec.fn(batch["logp"], batch["old_logp"], batch["advantages"], mask,
                        **cfg.surrogate_kwargs, **extra)
    if cfg.tis_cap is not None:
      if "sampler_logp" not in batch:
        raise ValueError("tis_cap is set but the batch has no 'sampler_logp'")
      w = core.truncated_is_weights(batch["sampler_logp"], batch["old_logp"], mask, cap=cfg.tis_cap)
      loss = loss * w
      aux = {**aux, "tis_weight_mean": core.masked_mean(w, mask)}
    kl = jnp.zeros_like(loss)
    if cfg.kl_placement == "loss" and cfg.kl_coef > 0:
      if "ref_logp" not in batch:
        raise ValueError(f"objective {cfg.name!r} puts KL in the loss; batch needs 'ref_logp'")
      kl = jnp.where(mask, core.kl_penalty(batch["logp"], batch["ref_logp"],
                                           estimator=cfg.kl_estimator), 0.0)
    return loss, kl, {**aux, "loss_mask": mask}

  def loss_parts(self, batch: Batch, *, global_batch_size: int | None = None
                 ) -> tuple[core.WeightedMean, dict[str, Array]]:
    """Numerator/denominator of this micro-batch's loss (KL included) plus metrics.

    Sum the parts over micro-batches (or devices) and take `.value` once for a globally
    normalised step loss.
    """
    cfg = self.config
    loss, kl, aux = self.per_token(batch)
    mask = aux.pop("loss_mask")
    total = loss + cfg.kl_coef * kl if cfg.kl_placement == "loss" else loss
    parts = core.aggregate_parts(total, mask, cfg.agg_mode, loss_scale_factor=cfg.loss_scale_factor,
                                 global_batch_size=global_batch_size)
    metrics = {k: v for k, v in aux.items() if jnp.ndim(v) == 0}
    metrics["kl"] = core.masked_mean(kl, mask) if cfg.kl_placement == "loss" else jnp.zeros(())
    metrics["policy_loss"] = core.aggregate_loss(loss, mask, cfg.agg_mode,
                                                 loss_scale_factor=cfg.loss_scale_factor)
    return parts, metrics

  def loss(self, batch: Batch) -> tuple[Array, dict[str, Array]]:
    """Pure scalar loss of one batch and its scalar metrics."""
    parts, metrics = self.loss_parts(batch)
    value = parts.value
    return value, {**metrics, "loss": value}


def objective(name: str, **overrides) -> Objective:
  """The named preset with overrides, e.g. `objective("dapo", clip_high=0.3)`.

  Presets: see `PRESETS` (ppo, grpo, dr_grpo, dapo, gspo, cispo, rloo, reinforce_pp, ...).
  Unknown names or override keys raise ValueError listing the valid ones.
  """
  return Objective(make_config(name, **overrides))


def list_objectives() -> list[str]:
  return sorted(PRESETS)


# --------------------------------------------------------------------------------------------------
# Seed objectives I (issue 5): DCPO, BNPO, Clip-Cov / KL-Cov, Distribution-centric PO, ADORA, EMPG,
# AEPO, OBLR-PO, CAPO. Parts first, then one preset per paper with its defaults pinned.


def _need(batch, key: str, part: str) -> Array:
  if batch is None or key not in batch:
    raise ValueError(f"the {part!r} objective part needs batch[{key!r}]; pass it to "
                     f"compute_advantages(extra=...) or put it in the loss batch")
  return batch[key]


def _dcpo_advantage(rewards, mask, *, state=None, prompt_ids=None, batch=None, scale_by_std,
                    old_mean_ratio):
  del batch
  if state is None or prompt_ids is None:
    raise ValueError("the 'dcpo' advantage is stateful: pass state=objective.init_state("
                     "num_prompts=N) and prompt_ids ([P] dataset indices)")
  adv, state = core.dcpo_smooth_advantages(rewards, prompt_ids, state, scale_by_std=scale_by_std,
                                           old_mean_ratio=old_mean_ratio)
  return core.broadcast_to_tokens(adv, mask), state


def _adora_advantage(rewards, mask, *, state=None, prompt_ids=None, batch=None, **kw):
  del prompt_ids, batch
  lengths = jnp.sum(mask.astype(jnp.float32), axis=-1).reshape(rewards.shape)
  return core.broadcast_to_tokens(core.adora_advantages(rewards, lengths, **kw), mask), state


def _empg_advantage(rewards, mask, *, state=None, prompt_ids=None, batch=None, eps, scale_by_std,
                    max_steps, k, k_future, zeta):
  del prompt_ids
  entropy = _need(batch, "entropy", "empg")
  seg = batch.get("segment_ids", jnp.zeros(mask.shape, jnp.int32))
  seq = core.grpo_advantages(rewards, eps=eps, scale_by_std=scale_by_std)
  return core.empg_advantages(seq, entropy, seg, mask, max_steps=max_steps, k=k,
                              k_future=k_future, zeta=zeta), state


def _oblr_advantage(rewards, mask, *, state=None, prompt_ids=None, batch=None):
  del prompt_ids
  w = _need(batch, "oblr_weights", "oblr")
  return core.broadcast_to_tokens(core.oblr_baseline_advantages(rewards, w), mask), state


def _init_dist_po_state() -> dict[str, Array]:
  return {"entropy": jnp.zeros((), jnp.float32)}


def _dist_po_advantage(rewards, mask, *, state=None, prompt_ids=None, batch=None, entropy_target,
                       correct_threshold, alpha_cap, eps):
  """State = the previous step's sampled-token entropy; the next state is this batch's estimate."""
  del prompt_ids
  state = _init_dist_po_state() if state is None else state
  old_logp = _need(batch, "old_logp", "dist_po")
  tempered = _need(batch, "old_logp_tempered", "dist_po")
  adv, _ = core.dist_po_advantages(rewards, old_logp, tempered, mask, prev_entropy=state["entropy"],
                                   entropy_target=entropy_target, alpha_cap=alpha_cap, eps=eps,
                                   correct_threshold=correct_threshold)
  return adv, {"entropy": -core.masked_mean(old_logp, mask)}


register_advantage("dcpo", AdvantageSpec(
    _dcpo_advantage, defaults={"scale_by_std": True, "old_mean_ratio": 1.0},
    init_state=core.init_dcpo_stats))
register_advantage("bnpo", AdvantageSpec(
    _stateless(lambda r, m, *, min_value, max_value, shrink: core.broadcast_to_tokens(
        core.bnpo_advantages(r, min_value=min_value, max_value=max_value, shrink=shrink), m)),
    defaults={"min_value": 0.0, "max_value": 1.0, "shrink": 3.0}))
register_advantage("adora", AdvantageSpec(
    _adora_advantage, defaults={"correct_score": 0.5, "length_threshold": 4054.0,
                                "attenuation": 0.1, "variant": "llm", "eps": 1e-6}))
register_advantage("empg", AdvantageSpec(
    _empg_advantage, defaults={"eps": 1e-6, "scale_by_std": True, "max_steps": 16, "k": 1.0,
                               "k_future": 1.0, "zeta": 0.05}))
register_advantage("oblr", AdvantageSpec(_oblr_advantage))
register_advantage("dist_po", AdvantageSpec(
    _dist_po_advantage, defaults={"entropy_target": 0.5, "correct_threshold": 0.05,
                                  "alpha_cap": 0.1, "eps": 1e-6},
    init_state=_init_dist_po_state))


def _clip_cov_surrogate(logp, old_logp, adv, mask, *, rng=None, **kw):
  if rng is None:
    raise ValueError("the 'clip_cov' surrogate draws its tokens at random: put a PRNG key in "
                     "batch['rng']")
  return core.clip_cov_loss_per_token(logp, old_logp, adv, mask, key=rng, **kw)


register_surrogate("dcpo", SurrogateSpec(
    core.dcpo_loss_per_token,
    defaults={"eps_low": 0.16, "eps_high": 0.2, "dual_clip": 10.0, "max_ratio": 10.0}))
register_surrogate("clip_cov", SurrogateSpec(
    _clip_cov_surrogate, defaults={"clip_ratio": 2e-4, "cov_lb": 1.0, "cov_ub": 5.0,
                                   "ppo_clip_low": 1.0, "ppo_clip_high": 1.0},
    batch_keys=("rng",)))
register_surrogate("kl_cov", SurrogateSpec(
    core.kl_cov_loss_per_token, defaults={"k_ratio": 2e-3, "kl_coef": 1.0}))
register_surrogate("aepo", SurrogateSpec(
    core.aepo_loss_per_token,
    defaults={"clip_low": 0.2, "clip_high": 0.2, "dual_clip": 3.0, "balanced_clipping": True,
              "balanced_advantage": True, "entropy_weight": 0.2},
    batch_keys=("entropy",)))


def _capo_selector(batch, *, tau_fisher, tau_hessian, symmetric):
  m_h = _need(batch, "capo_m_hessian", "capo")
  m_f = _need(batch, "capo_m_fisher", "capo")
  return core.capo_mask(m_h, m_f, batch["mask"], tau_fisher=tau_fisher, tau_hessian=tau_hessian,
                        symmetric=symmetric)


register_selector("capo", SelectorSpec(
    _capo_selector, stage="tokens",
    defaults={"tau_fisher": 1e-4, "tau_hessian": 0.01, "symmetric": True}))

_NO_DUAL = {"clip_low": 0.2, "clip_high": 0.2, "dual_clip": None}

register_preset(ObjectiveConfig(
    name="dcpo", advantage="dcpo", surrogate="dcpo", agg_mode="token_mean",
    surrogate_kwargs={"eps_low": 0.16, "eps_high": 0.2, "dual_clip": 10.0, "max_ratio": 10.0},
    paper="DCPO (arXiv 2509.02333): dynamic clip eps 0.16/0.2 (paper), dual clip 10, smooth "
          "advantage standardization (stateful), only-token-mean = token_mean (code after its "
          "Dec-2025 fix), no KL"))
register_preset(ObjectiveConfig(
    name="dcpo_script", advantage="dcpo", surrogate="dcpo", agg_mode="token_mean",
    surrogate_kwargs={"eps_low": 0.2, "eps_high": 0.28, "dual_clip": 10.0, "max_ratio": 10.0},
    paper="DCPO shipped script recipe/dcpo/run_dcpo.sh: eps 0.2/0.28"))
register_preset(ObjectiveConfig(
    name="bnpo", advantage="bnpo", surrogate="ppo_clip", agg_mode="seq_mean_token_sum",
    surrogate_kwargs={"clip_low": 0.2, "clip_high": 0.28, "dual_clip": 10.0},
    paper="BNPO (arXiv 2506.02864): Beta-normalised advantages fitted per batch, clip 0.2/0.28, "
          "dual clip 10, seq-mean-token-sum, no KL (official run.sh)"))
register_preset(ObjectiveConfig(
    name="clip_cov", advantage="grpo", surrogate="clip_cov", agg_mode="token_mean",
    paper="Clip-Cov (arXiv 2505.22617): ratio 2e-4, cov in (1, 5), PPO range [0, 2], GRPO "
          "advantages, token-mean, no KL; needs batch['rng']"))
register_preset(ObjectiveConfig(
    name="kl_cov", advantage="grpo", surrogate="kl_cov", agg_mode="token_mean",
    surrogate_kwargs={"k_ratio": 2e-3, "kl_coef": 1.0},
    paper="KL-Cov (arXiv 2505.22617): top 0.2 percent (fraction 2e-3, 7B script) by covariance, "
          "|log-ratio| coef 1, no PPO clip, token-mean, no KL"))
register_preset(ObjectiveConfig(
    name="kl_cov_verl", advantage="grpo", surrogate="kl_cov", agg_mode="token_mean",
    surrogate_kwargs={"k_ratio": 2e-4, "kl_coef": 0.1},
    paper="KL-Cov with verl PolicyLossConfig defaults (kl_cov_ratio 2e-4, ppo_kl_coef 0.1)"))
register_preset(ObjectiveConfig(
    name="dist_po", advantage="dist_po", surrogate="ppo_clip", agg_mode="token_mean",
    surrogate_kwargs={"clip_low": 0.2, "clip_high": 0.2, "dual_clip": 3.0},
    paper="Distribution-Centric PO (arXiv 2601.12730): tempered double-IS REINFORCE term on "
          "correct answers, H0 0.5 (script), T 1.2/0.8, alpha cap 0.1, dual clip 3, token-mean, "
          "no KL; stateful; needs extra['old_logp_tempered'] at dist_po_temperature(state)"))
register_preset(ObjectiveConfig(
    name="adora", advantage="adora", surrogate="ppo_clip", agg_mode="token_mean",
    surrogate_kwargs=_NO_DUAL, kl_estimator="k3", kl_coef=0.001, kl_placement="loss",
    paper="ADORA (ShadeCloak/ADORA; arXiv 2602.10019): lambda 0.1 on length-disadvantaged groups "
          "(LLM code table), correct_score 0.5 for 0/1 rewards (official 1.01 on the K&K scale), "
          "length threshold 4054, low-var KL 0.001 in the loss"))
register_preset(ObjectiveConfig(
    name="empg", advantage="empg", surrogate="ppo_clip", agg_mode="token_mean",
    surrogate_kwargs=_NO_DUAL,
    paper="EMPG (arXiv 2509.09265) on GRPO: g(H) with batch mean 1, future bonus zeta 0.05, k = "
          "k' = 1 (inferred; not given), zero-mean recentring; needs extra['entropy'] and "
          "optionally extra['segment_ids']"))
register_preset(ObjectiveConfig(
    name="aepo", advantage="grpo", surrogate="aepo", agg_mode="token_mean",
    surrogate_kwargs={"clip_low": 0.2, "clip_high": 0.2, "dual_clip": 3.0},
    paper="AEPO (arXiv 2510.14545): entropy-balanced clipping and advantage (weight 0.2), dual "
          "clip 3, token-mean, no KL; needs batch['entropy'] of the current policy"))
register_preset(ObjectiveConfig(
    name="oblr_po", advantage="oblr", surrogate="ppo_clip", agg_mode="token_mean",
    surrogate_kwargs=_NO_DUAL,
    paper="OBLR-PO (arXiv 2511.23310), inferred form: gradient-weighted optimal baseline (needs "
          "extra['oblr_weights']); chain rlpost.core.optim.oblr_scale into the optimizer"))
register_preset(ObjectiveConfig(
    name="capo", advantage="grpo", surrogate="ppo_clip", agg_mode="seq_mean_token_mean",
    advantage_kwargs={"eps": 1e-4, "scale_by_std": True}, surrogate_kwargs=_NO_DUAL,
    selectors=("capo",),
    selector_kwargs={"capo": {"tau_fisher": 1e-4, "tau_hessian": 0.01, "symmetric": True}},
    paper="CAPO (arXiv 2510.00819): GRPO with the curvature token mask, tau_F 1e-4, tau_H 0.01 "
          "(symmetric), no KL; needs batch['capo_m_hessian'/'capo_m_fisher'] from "
          "core.capo_token_metrics"))
register_preset(ObjectiveConfig(
    name="dr_capo", advantage="grpo", surrogate="ppo_clip", agg_mode="seq_mean_token_sum_norm",
    advantage_kwargs={"eps": 1e-6, "scale_by_std": False}, surrogate_kwargs=_NO_DUAL,
    selectors=("capo",),
    selector_kwargs={"capo": {"tau_fisher": 1e-3, "tau_hessian": 5e-4, "symmetric": True}},
    paper="Dr.CAPO (arXiv 2510.00819): Dr.GRPO with the curvature mask, tau_F 1e-3, tau_H 5e-4; "
          "pass loss_scale_factor = max completion length"))

# --------------------------------------------------------------------------------------------------
# Seed objectives II (issue 6): D3S dual-level down-sampling as a token-stage selector.


D3S_PROGRESS_KEY = "progress"


def _d3s_selector(batch, *, group_size, sample_keep, token_keep_frac, cross_group,
                  schedule=False, n_init=None, n_final=None, k_init=None, k_final=None):
  """D3S mask: max-Var(A) rollouts (per group of `group_size`, or over the batch with
  `cross_group`), then the top `token_keep_frac` of their tokens by |A| * H.

  The sequence advantage is the masked mean of the token advantages (constant per response for
  outcome estimators). With `schedule=False` (default) `sample_keep` / `token_keep_frac` are a
  fixed point of the D3S curriculum. With `schedule=True` they follow it:
  [N_s(p), K(p)] = (1 - p) [n_init, k_init] + p [n_final, k_final] (`core.d3s_schedule`), where
  p = batch["progress"] is a scalar training progress in [0, 1] (clipped; may be traced, so one
  compiled step serves every p). `RLTrainer` supplies p = step / rl.total_steps. The paper's
  endpoints are unpublished, so all four are required. Paper: "Learning More with Less: A Dynamic
  Dual-Level Down-Sampling Framework for Efficient Policy Optimization", ICLR 2026,
  arXiv 2509.22115.
  """
  adv, mask = batch["advantages"], batch["mask"].astype(bool)
  entropy = jax.lax.stop_gradient(_need(batch, "entropy", "d3s"))
  b = adv.shape[0]
  if b % group_size:
    raise ValueError(f"d3s: batch of {b} responses is not a whole number of groups of "
                     f"group_size={group_size}; set the selector's group_size to rl.group_size")
  if schedule:
    sample_keep, token_keep_frac = _d3s_scheduled_keep(
        batch, group_size=group_size, n_init=n_init, n_final=n_final, k_init=k_init,
        k_final=k_final)
  seq = core.masked_mean(adv, mask, axis=-1)
  if cross_group:
    keep = core.d3s_sample_mask(seq.reshape(1, -1), n_keep=sample_keep * (b // group_size),
                                cross_group=True).reshape(b)
  else:
    keep = core.d3s_sample_mask(seq.reshape(-1, group_size), n_keep=sample_keep).reshape(b)
  sample_mask = mask & keep[:, None]
  return core.d3s_token_mask(adv, entropy, sample_mask, keep_frac=token_keep_frac)


def _d3s_scheduled_keep(batch, *, group_size, n_init, n_final, k_init, k_final):
  """(N_s, K) of the D3S schedule at batch["progress"]; errors name the bad field."""
  ends = {"n_init": n_init, "n_final": n_final, "k_init": k_init, "k_final": k_final}
  missing = [k for k, v in ends.items() if v is None]
  if missing:
    raise ValueError(f"d3s: schedule=True needs the selector's {', '.join(missing)} (the D3S "
                     f"schedule endpoints; the paper does not publish them)")
  for k in ("n_init", "n_final"):
    if isinstance(ends[k], bool) or not 1 <= ends[k] <= group_size:
      raise ValueError(f"d3s: {k} must be in [1, group_size={group_size}]; got {ends[k]!r}")
  for k in ("k_init", "k_final"):
    if isinstance(ends[k], bool) or not 0.0 < ends[k] <= 1.0:
      raise ValueError(f"d3s: {k} must be a token fraction in (0, 1]; got {ends[k]!r}")
  if batch is None or D3S_PROGRESS_KEY not in batch:
    raise ValueError(f"d3s: schedule=True needs batch[{D3S_PROGRESS_KEY!r}] (scalar training "
                     f"progress in [0, 1]); RLTrainer passes step / rl.total_steps when "
                     f"rl.total_steps is set")
  progress = jnp.asarray(batch[D3S_PROGRESS_KEY], jnp.float32)
  if progress.ndim != 0:
    raise ValueError(f"d3s: batch[{D3S_PROGRESS_KEY!r}] must be a scalar; got shape "
                     f"{progress.shape}")
  return core.d3s_schedule(jnp.clip(progress, 0.0, 1.0), n_init=n_init, n_final=n_final,
                           k_init=k_init, k_final=k_final)


def needs_progress(config: "ObjectiveConfig") -> bool:
  """True when a selector of `config` reads batch["progress"] (today: d3s with schedule=True)."""
  return "d3s" in config.selectors and bool(
      config.selector_kwargs.get("d3s", {}).get("schedule", False))


register_selector("d3s", SelectorSpec(
    _d3s_selector, stage="tokens",
    defaults={"group_size": 8, "sample_keep": 4, "token_keep_frac": 0.5, "cross_group": False,
              "schedule": False, "n_init": None, "n_final": None, "k_init": None,
              "k_final": None}))

register_preset(ObjectiveConfig(
    name="d3s", advantage="grpo", surrogate="ppo_clip", agg_mode="token_mean",
    advantage_kwargs={"eps": 1e-6, "scale_by_std": True}, surrogate_kwargs=_NO_DUAL,
    selectors=("d3s",),
    selector_kwargs={"d3s": {"group_size": 8, "sample_keep": 4, "token_keep_frac": 0.5,
                             "cross_group": False}},
    paper="D3S (arXiv 2509.22115): GRPO advantages on the full group, then the max-Var(A) "
          "subset of sample_keep per group and the top token_keep_frac tokens by |A| * H; "
          "schedule endpoints unpublished (placeholders N_s = G/2, K = 0.5); no KL. "
          "selector_kwargs d3s schedule=True with n_init/n_final/k_init/k_final follows the "
          "curriculum on batch['progress'] (RLTrainer: step / rl.total_steps)"))
