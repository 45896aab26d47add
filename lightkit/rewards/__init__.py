"""Rewards for PPO and GRPO: scoring.py turns what a config names (callables, a reward model) into
one scorer; text.py holds ready-made text rewards (`reward_fn: [lightkit.rewards.text:rouge_l]`)."""
