"""rlpost.core: the functional core. Pure array functions, re-exported flat.

Arrays in, arrays out: no model forward passes, no I/O, no Flax modules. Per-token objectives return
`(per_token_loss [B, T], aux)`; reduction is the explicit `aggregate_loss` step.
"""

from rlpost.core.advantages import broadcast_to_tokens
from rlpost.core.advantages import discounted_returns_to_go
from rlpost.core.advantages import gae_advantages
from rlpost.core.advantages import grpo_advantages
from rlpost.core.advantages import outcome_to_token_rewards
from rlpost.core.advantages import overlong_penalty
from rlpost.core.advantages import reinforce_pp_advantages
from rlpost.core.advantages import reinforce_pp_baseline_advantages
from rlpost.core.advantages import rloo_advantages
from rlpost.core.advantages import token_gae_advantages
from rlpost.core.aggregation import AGG_MODES
from rlpost.core.aggregation import aggregate_loss
from rlpost.core.aggregation import aggregate_parts
from rlpost.core.aggregation import masked_mean
from rlpost.core.aggregation import masked_sum
from rlpost.core.aggregation import masked_var
from rlpost.core.aggregation import masked_whiten
from rlpost.core.aggregation import safe_divide
from rlpost.core.aggregation import WeightedMean
from rlpost.core.kl import adaptive_kl_coef
from rlpost.core.kl import entropy_from_logits
from rlpost.core.kl import KL_ESTIMATORS
from rlpost.core.kl import kl_penalty
from rlpost.core.selection import dynamic_sampling_mask
from rlpost.core.selection import zero_spread_fraction
from rlpost.core.surrogates import cispo_loss
from rlpost.core.surrogates import cispo_loss_per_token
from rlpost.core.surrogates import clipped_ratio_objective
from rlpost.core.surrogates import clipped_value_loss_per_token
from rlpost.core.surrogates import gspo_loss
from rlpost.core.surrogates import gspo_loss_per_token
from rlpost.core.surrogates import pg_loss
from rlpost.core.surrogates import pg_loss_per_token
from rlpost.core.surrogates import ppo_clip_loss
from rlpost.core.surrogates import ppo_clip_loss_per_token
from rlpost.core.surrogates import truncated_is_weights
