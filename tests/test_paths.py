"""Files written whole or not at all (``fineprune.paths.atomic_path``), and the writers built on it."""
from __future__ import annotations

import os
import stat

import numpy as np
import pytest
import torch

from fineprune.engine.bundle import load_bundle, save_bundle
from fineprune.paths import atomic_path


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing_beside_it(tmp_path):
    target = tmp_path / "cache.pt"
    target.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as partial:
            partial.write_bytes(b"half a fi")
            raise KeyboardInterrupt
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["cache.pt"]


def test_two_writers_of_the_same_file_at_once_both_succeed(tmp_path):
    target = tmp_path / "sub" / "cache.pt"  # the folder is made on demand
    with atomic_path(target) as first:
        first.write_bytes(b"first")
        with atomic_path(target) as second:  # the other worker writes and renames in between
            assert second != first
            second.write_bytes(b"second")
    assert target.read_bytes() == b"first"
    assert [p.name for p in target.parent.iterdir()] == ["cache.pt"]


def test_the_file_gets_the_usual_permissions_and_numpy_keeps_the_name(tmp_path):
    target = tmp_path / "crops.npz"
    with atomic_path(target, suffix=".partial.npz") as partial:
        np.savez_compressed(partial, x=np.arange(3))  # np.savez appends .npz to a name without it
    with np.load(target) as data:
        assert data["x"].tolist() == [0, 1, 2]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["crops.npz"]


def test_an_interrupted_model_save_leaves_the_shipped_model_loadable(tmp_path, monkeypatch, tiny_vgg):
    model, config = tiny_vgg
    path = tmp_path / "model.pt"
    save_bundle(path, model, config, {"note": "first"})
    real_save = torch.save

    def save_half_then_stop(obj, name):
        real_save(obj, name)
        with open(name, "r+b") as handle:
            handle.truncate(10)
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", save_half_then_stop)
    with pytest.raises(KeyboardInterrupt):
        save_bundle(path, model, config, {"note": "second"})
    monkeypatch.setattr(torch, "save", real_save)
    assert load_bundle(path).card["note"] == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]
