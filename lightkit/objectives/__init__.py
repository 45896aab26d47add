"""The maths of the objectives on plain tensors, free of Lightning so each formula is tested on
hand-computed values: chunked LM loss, knowledge distillation, RLHF (PPO, DPO, GRPO), and the word
tags of token classification (first-subword reading, constrained Viterbi)."""
