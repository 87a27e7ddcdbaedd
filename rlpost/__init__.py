"""rlpost: policy-gradient methods for LLM post-training and control on one functional JAX core.

Subpackages:
  core        pure, jit-able losses, advantages, KL, aggregation, selection, DP (arrays in, arrays out)
  objectives  named presets composing core parts (advantage x surrogate x aggregation x KL x selectors)
  llm         Flax NNX decoder policies, KV-cache sampler, HF bridge, tasks, SFT and RL loops
  control     JAX environments, HDPO, NDP/LPN policies, PureJaxRL-style PPO
  offline     offline and hybrid RL (PRDC, CDSA, policy-guided diffusion, HNPG)
  planning    model-based RL and robust planning (COPlanner, IWOCS, ScaleZero pieces)
  meta        discovered objectives (LPO / TA-LPO / TA-LPG) and their ES meta-training
"""

__version__ = "0.1.0"
