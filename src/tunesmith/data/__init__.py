"""Data: read rows in the formats people have, turn them into examples, split them."""

# Submodules are imported directly (tunesmith.data.<module>): re-exporting them here would make
# every light import of this package pull in torch and friends.
