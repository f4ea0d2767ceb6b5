"""Tests of the user encoders; ``left_padded`` and ``repad`` build the batches they share."""

from __future__ import annotations

import torch


def left_padded(lengths: list[int], length: int, d_model: int = 16, seed: int = 0):
    """Random item vectors ``[B, length, d]`` (random garbage at padded slots too) and ``valid [B, length]``
    marking the last ``lengths[b]`` slots of row b."""
    generator = torch.Generator().manual_seed(seed)
    vectors = torch.randn(len(lengths), length, d_model, generator=generator)
    valid = torch.arange(length) >= length - torch.tensor(lengths).unsqueeze(1)
    return vectors, valid


def repad(vectors: torch.Tensor, valid: torch.Tensor, length: int, seed: int = 1):
    """The same sequences left padded to ``length`` >= the current length, with fresh garbage as padding."""
    generator = torch.Generator().manual_seed(seed)
    batch, old_length, d_model = vectors.shape
    new_vectors = torch.randn(batch, length, d_model, generator=generator) * 100
    new_valid = torch.zeros(batch, length, dtype=torch.bool)
    new_valid[:, length - old_length :] = valid
    new_vectors[new_valid] = vectors[valid]
    return new_vectors, new_valid
