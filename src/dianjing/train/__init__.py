"""Training: the loss, the one loop, checkpoints."""
