"""Training: batching, the completion-only loss, and the optimisation loop."""

# Submodules are imported directly (tunesmith.train.<module>): re-exporting them here would make
# every light import of this package pull in torch and friends.
