"""Evaluation: batched generation, task metrics, and the comparison of baseline and tuned models."""

# Submodules are imported directly (tunesmith.evaluate.<module>): re-exporting them here would make
# every light import of this package pull in torch and friends.
