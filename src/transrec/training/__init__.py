"""Training: sequence batches, objectives, the trainer loop, checkpoints and transfer."""
