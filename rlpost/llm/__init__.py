"""LLM policies and post-training.

Modules (imported explicitly, so that `rlpost.llm.tasks` stays light):
  config      ModelConfig mirroring HF Qwen2/Llama configs
  model       the NNX decoder, log-probs/entropy, SFT cross-entropy
  sampler     jitted prefill + while-loop decode over a donated KV cache
  hf          safetensors checkpoint bridge to and from transformers
  lora        LoRA adapters (train alone, merge)
  tasks       TabMWP schema, synthetic generator, loader, prompts, answers, rewards, tokenizer
  sft, rl, train, checkpoint   the SFT and RL loops, train state and orbax checkpoints
"""
