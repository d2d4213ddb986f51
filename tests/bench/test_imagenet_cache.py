"""The bench's decoded-photo cache, written by several workers at once on a fresh checkout."""
from __future__ import annotations

import torch

from fineprune.bench import imagenet_data


def test_two_workers_writing_the_same_cache_entry_both_succeed(tmp_path, monkeypatch):
    photos = imagenet_data.PhotoSet(torch.zeros(2, 4, 4, 3, dtype=torch.uint8), torch.tensor([3, 7]), ["a.jpg", "b.jpg"])
    monkeypatch.setattr(imagenet_data, "CACHE_DIR", tmp_path)
    monkeypatch.setattr(imagenet_data, "_decode_all", lambda items: photos)
    real_save, interleaved = torch.save, []

    def save_then_let_the_other_worker_finish(obj, name):
        real_save(obj, name)
        if not interleaved:  # between this worker's save and its rename, the other one writes the same entry
            interleaved.append(True)
            imagenet_data._cached("set_split", lambda: [])

    monkeypatch.setattr(imagenet_data.torch, "save", save_then_let_the_other_worker_finish)
    loaded = imagenet_data._cached("set_split", lambda: [])
    assert interleaved and torch.equal(loaded.crops, photos.crops)
    monkeypatch.setattr(imagenet_data.torch, "save", real_save)
    cached = imagenet_data._cached("set_split", lambda: [])  # read back from the file
    assert cached.files == photos.files and torch.equal(cached.labels, photos.labels)
    assert [p.name for p in tmp_path.iterdir()] == [f"set_split.v{imagenet_data.CACHE_VERSION}.pt"]  # no partial left
