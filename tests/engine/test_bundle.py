"""Bundles: masks round-trip, file formats stay readable, and loading needs no exporter."""
import io
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.nn.utils import prune

from fineprune import fine_prune, load_bundle, make_permanent, save_bundle
from fineprune.engine.bundle import BUNDLE_FORMAT
from fineprune.engine.sequential import SEQUENTIAL_ARCH
from fineprune.engine.sparse import SPARSE_FORMAT


def test_masks_survive_save_and_load_and_removal(tiny_vgg):
    model, config = tiny_vgg
    x = torch.randn(20, 1, 16, 20)
    pruned = fine_prune(model, x, sparsity=0.6).model
    buffer = io.BytesIO()
    save_bundle(buffer, pruned, config, {"domain": "generic"})
    buffer.seek(0)
    loaded = load_bundle(buffer).model
    assert "features.conv2.weight_mask" in loaded.state_dict()
    torch.testing.assert_close(loaded(x), pruned(x))
    torch.testing.assert_close(loaded.features.conv2.weight_mask, pruned.features.conv2.weight_mask)
    make_permanent(loaded)
    assert not prune.is_pruned(loaded)
    torch.testing.assert_close(loaded(x), pruned(x))
    assert (loaded.features.conv2.weight == 0).float().mean() == pytest.approx(0.6, abs=0.01)


def test_format_names_users_files_carry_are_unchanged():
    """These strings are written into every exported file; changing one orphans those files."""
    assert (BUNDLE_FORMAT, SPARSE_FORMAT, SEQUENTIAL_ARCH) == ("fineprune-bundle/1", "fineprune-sparse/1", "sequential")


LOAD_WITHOUT_EXPORTER = """
import io, sys, torch
from fineprune.engine.bundle import load_bundle
assert "fineprune.engine.export" not in sys.modules
model = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(12, 2))
layers = [{"name": "0", "type": "FoldedConv2d", "kwargs": {"in_channels": 1, "out_channels": 3, "kernel_size": [3, 3], "padding": [1, 1]}},
          {"name": "1", "type": "ReLU", "kwargs": {}}, {"name": "2", "type": "Flatten", "kwargs": {}},
          {"name": "3", "type": "Linear", "kwargs": {"in_features": 12, "out_features": 2}}]
state = {**model.state_dict(), "0.folded_kernel": torch.zeros(3, 1, 3, 3)}
buffer = io.BytesIO()
torch.save({"format": "fineprune-bundle/1", "config": {"arch": "sequential", "layers": layers}, "card": {}, "state_dict": state}, buffer)
loaded = load_bundle(buffer.getvalue()).model
x = torch.randn(2, 1, 2, 2)
assert torch.equal(loaded(x), model(x)), "a zero fold is a plain conv"
assert "fineprune.engine.export" not in sys.modules, "loading must not need the exporter"
"""


def test_structured_files_load_without_importing_the_exporter():
    # a fresh interpreter, where no other test has imported the exporter yet
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", LOAD_WITHOUT_EXPORTER], cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
