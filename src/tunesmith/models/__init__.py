"""Models: find or build the base checkpoint, load it, and put adapters on it."""

# Submodules are imported directly (tunesmith.models.<module>): re-exporting them here would make
# every light import of this package pull in torch and friends.
