"""The item-encoder contract: distinct items' content -> vectors of the model size ``d``."""

from __future__ import annotations

import torch
from torch import nn

from transrec.data.item_content import ItemBatch


class ItemEncoder(nn.Module):
    """Maps an ``ItemBatch`` of ``U`` distinct items to ``[U, d]``.

    Subclasses implement ``forward(items: ItemBatch) -> Tensor[U, d]``. They never receive the padding
    index: callers reduce sequences to their unique items first (``encode_sequences``).
    ``modality_parameters`` lists the parameters of the pretrained modality encoders (text/image
    backbones), which the optimizer gives their own learning rate and weight decay; everything else
    (dense "DT" layers, ID tables) trains at the base rate.

    Class attributes:
        needs_text / needs_image: which content the data pipeline must load for this encoder.
        transferable: False for encoders tied to a catalogue's ids (the ``id`` encoder).
    """

    needs_text: bool = False
    needs_image: bool = False
    transferable: bool = True

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.d_model = d_model

    def modality_parameters(self) -> list[nn.Parameter]:
        return []


def encode_sequences(encoder: ItemEncoder, items: ItemBatch, inverse: torch.Tensor) -> torch.Tensor:
    """Vectors ``[*inverse.shape, d]`` for a batch of sequences given as unique items plus an inverse map.

    ``inverse`` holds, per slot, the position of its item in ``items`` (0..U-1), or -1 for padding.
    Each distinct item is encoded once; padded slots get zero vectors and never reach the encoder.
    """
    vectors = encoder(items)
    padded = torch.cat([vectors.new_zeros(1, vectors.shape[-1]), vectors], dim=0)
    return padded[inverse + 1]
