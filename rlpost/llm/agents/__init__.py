"""LLM agents built on rlpost's Flax policies (imported explicitly; nothing heavy here).

Modules:
  common                 text SFT of small solvers, cached solvers, greedy solving, artefacts
  promptpg               PromptPG in-context example selection (Lu et al., ICLR 2023, 2209.14610)
  promptpg_experiment    the experiment behind experiments/promptpg.py
  retroformer            Retroformer retrospective model (Yao et al., ICLR 2024, 2308.02151)
  retroformer_experiment the experiment behind experiments/retroformer.py
  dmlr, dr_rl (+ _experiment)  DMLR latent think tokens and DR-RL dynamic-rank attention
  partial_credit         instrumentation (milestone) reward of the ML-engineering agents paper
                         (arXiv 2509.01684)
"""
