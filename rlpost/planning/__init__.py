"""Planning and model-based RL.

Modules (import them directly):
  iwocs       IWOCS (robust MDPs) and its tabular pieces (`tabular`)
  coplanner   Gaussian MLP ensemble, disagreement, COPlanner's uncertainty-aware MPC
  mbpo        Dyna/MBPO loop on a JAX env with and without COPlanner
  scalezero   ScaleZero's MoE feed-forward and Dynamic Parameter Scaling (staged LoRA)
  multitask   a multi-task PPO learner over gymnax tasks using the ScaleZero pieces
  experiment  the runner behind experiments/model_based.py
"""
