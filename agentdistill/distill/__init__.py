"""Trajectories to SFT students, the CoT baseline and GRPO on the rollout loop (to come: issues 6 and 7)."""
