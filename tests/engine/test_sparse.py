"""Sparse files: bitmask + surviving values, reloaded into the same masked model."""
import copy
import io

import pytest
import torch

from export_cases import VGG2D, WIDE2D, inputs, make_vgg, outputs, save_to_bytes
from fineprune import PruneSettings, fine_prune, load_bundle, make_permanent, save_bundle
from fineprune.engine.export import file_bytes
from fineprune.engine.sparse import decode_sparse, effective_state, encode_sparse, sparse_payload
from fineprune.errors import ModelFileError


def test_encoding_round_trips_and_keeps_small_or_dense_tensors_dense():
    weights = torch.randn(10, 20)
    weights[weights.abs() < 1.0] = 0  # about 68% zeros
    entry = encode_sparse(weights)
    assert entry is not None and entry["bitmask"].numel() == 200 // 8 and entry["values"].numel() == int(weights.ne(0).sum())
    assert torch.equal(decode_sparse(entry), weights)
    assert encode_sparse(torch.randn(10, 20)) is None  # dense: the bitmask would only add bytes
    assert encode_sparse(torch.zeros(7)) is None  # too small to bother
    assert encode_sparse(torch.zeros(100, dtype=torch.long)) is None  # counters stay as they are


def test_effective_state_folds_masks_without_touching_the_model():
    model, x = make_vgg(VGG2D), inputs(VGG2D)
    pruned = fine_prune(model, x, PruneSettings(sparsity=0.6, drop_unused_classes=0.9)).model
    before = {k: v.clone() for k, v in pruned.state_dict().items()}
    state, masked = effective_state(pruned)
    reference = make_permanent(copy.deepcopy(pruned)).state_dict()
    assert list(state) == list(reference)  # same keys, same order as folding the masks for good
    assert all(torch.equal(state[k], reference[k]) for k in state)
    assert "features.conv2.weight" in masked and not any(k.endswith(("_orig", "_mask")) for k in state)
    assert all(torch.equal(before[k], v) for k, v in pruned.state_dict().items())


def test_sparse_file_keeps_masks_and_is_smaller_at_70_percent():
    model, x = make_vgg(WIDE2D), inputs(WIDE2D)
    pruned = fine_prune(model, x, PruneSettings(sparsity=0.7)).model
    buffer = io.BytesIO()
    save_bundle(buffer, model, WIDE2D)
    dense = len(buffer.getvalue())
    sparse = file_bytes(pruned, WIDE2D, {}, "sparse")
    masked = file_bytes(pruned, WIDE2D, {}, "masked")
    assert dense / sparse > 2.5  # 30% of the values + 1 bit per weight
    assert masked > dense  # torch.prune keeps weight_orig *and* weight_mask
    loaded = load_bundle(io.BytesIO(save_to_bytes(pruned, WIDE2D, "sparse"))).model
    conv, original = dict(loaded.named_modules())["features.conv3"], dict(pruned.named_modules())["features.conv3"]
    assert torch.equal(conv.weight_mask, original.weight_mask) and torch.equal(conv.weight, original.weight)
    assert float((conv.weight == 0).float().mean()) == pytest.approx(0.7, abs=0.01)
    assert torch.equal(outputs(loaded, x), outputs(pruned, x))


def test_corrupt_sparse_file_is_refused_with_a_plain_error():
    model = make_vgg(VGG2D)
    payload = sparse_payload(fine_prune(model, inputs(VGG2D), sparsity=0.7).model, VGG2D)
    key = next(iter(payload["sparse"]))
    payload["sparse"][key]["values"] = payload["sparse"][key]["values"][:-3]
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    with pytest.raises(ModelFileError, match="corrupt"):
        load_bundle(buffer.getvalue())
    del payload["dense"]
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    with pytest.raises(ModelFileError):
        load_bundle(buffer.getvalue())
