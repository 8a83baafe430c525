"""The one vectorized rollout loop for teacher data, evaluation and RL (to come: issue 5)."""
