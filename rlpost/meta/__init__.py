"""rlpost.meta: discovered RL objectives and their evolution-strategies meta-training.

  drift     LPO / TA-LPO learned drift nets (ReLU-positivity construction) and the closed-form
            DPO drift (Lu et al. 2022, arXiv 2210.05639; Jackson et al. 2024, arXiv 2402.05828)
  lpg       TA-LPG: the reverse-GRU learned policy gradient with n/N and log N inputs
  lpg_train TA-LPG inner loop (agents trained by the LPG on gymnax, vmapped) and its Open_ES run
  es        evosax 0.3 Open_ES meta-training over vmapped inner PPO lifetimes
  evaluate  the generalisation table (objectives x lifetimes x seeds in one program)

The inner loop is `rlpost.control.ppo.make_train(config, drift_fn=...)`.
"""

from rlpost.meta.drift import DRIFT_SHIFT
from rlpost.meta.drift import dpo_drift
from rlpost.meta.drift import init_lpo_params
from rlpost.meta.drift import lpo_drift
from rlpost.meta.drift import lpo_features
from rlpost.meta.drift import ppo_drift
from rlpost.meta.drift import switch_drift
from rlpost.meta.drift import ta_lpo_drift
from rlpost.meta.drift import ta_lpo_features
from rlpost.meta.es import ESConfig
from rlpost.meta.es import MetaTrainResult
from rlpost.meta.es import make_open_es
from rlpost.meta.es import make_population_fitness
from rlpost.meta.es import meta_train
from rlpost.meta.es import sample_antithetic_tasks
from rlpost.meta.es import sample_lifetimes
from rlpost.meta.evaluate import evaluate_objectives
from rlpost.meta.lpg import init_lpg_params
from rlpost.meta.lpg import lpg_agent_loss_per_step
from rlpost.meta.lpg import lpg_targets
from rlpost.meta.lpg import progress_features
from rlpost.meta.lpg_train import LPGAgentConfig
from rlpost.meta.lpg_train import evaluate_lpg
from rlpost.meta.lpg_train import make_lpg_train
from rlpost.meta.lpg_train import meta_train_lpg
from rlpost.meta.lpg_train import reinforce_targets
