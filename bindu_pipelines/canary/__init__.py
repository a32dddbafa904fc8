"""Canary rollout: decide from live feedback whether a candidate prompt is promoted or rolled back."""
