import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from transrec.data.image_store import ImageStore, ImageStoreWriter


class StoreDataset(Dataset):
    def __init__(self, store: ImageStore) -> None:
        self.store = store

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.from_numpy(self.store[index])


def write_store(directory, image_format):
    ramp = np.linspace(0, 255, 16)
    smooth = [
        np.stack(np.broadcast_arrays(ramp[:, None], ramp[None, :] * k / 5, 128.0), -1) for k in range(5)
    ]
    images = [None] + [image.astype(np.uint8) for image in smooth] + [None]
    writer = ImageStoreWriter(directory, len(images), image_format, 16, jpeg_quality=100)
    for image in images:
        writer.add(image)
    writer.close()
    return images


@pytest.mark.parametrize("image_format", ["jpeg", "raw"])
def test_store_opens_lazily_and_each_worker_reopens(tmp_path, image_format):
    images = write_store(tmp_path, image_format)
    store = ImageStore(tmp_path, image_format, 16)
    assert store._offsets is None and store._raw is None  # nothing opened before the first access
    expected = torch.stack([torch.from_numpy(store[i]) for i in range(len(images))])
    # A pickled store carries no open handles: DataLoader workers open their own memory maps.
    state = pickle.dumps(store)
    assert len(state) < 1000
    loader = DataLoader(StoreDataset(store), batch_size=3, num_workers=2)
    assert torch.equal(torch.cat(list(loader)), expected)
    assert not store.has_image(0) and store.has_image(1) and not store.has_image(6)
    if image_format == "raw":
        assert np.array_equal(store[3], images[3])
    else:
        assert (
            np.abs(store[3].astype(int) - images[3]).max() <= 8
        )  # JPEG at quality 100 is near-lossless on smooth images


def test_writer_checks_the_row_count(tmp_path):
    writer = ImageStoreWriter(tmp_path, 2, "jpeg", 8)
    writer.add(None)
    with pytest.raises(ValueError, match="got 1 rows, expected 2"):
        writer.close()
