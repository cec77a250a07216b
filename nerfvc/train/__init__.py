"""Training the receiver NeRF: dataset loading, ray sampling, losses, checkpoints, MODEL export."""
