"""Training a Gaussian avatar: the loop, losses, masks, per-frame refinement, checkpoints."""
