"""Which output channels of different layers are one channel, for structured criteria.

In a VGG-style stack each layer's output channels are its own, and ``channel`` ranks them layer
by layer. In an inverted-residual network (EfficientNet-Lite, ``objects``) a *hidden* channel
runs through two layers: the conv that makes it (the block's expand conv; for a block without
one, the stem) and the depthwise conv that filters it. Ranked apart, the two layers would each
lose a different half, and the export (which removes a hidden channel when any part of it is
empty) would remove three quarters. So a structured criterion gives the layers of one group a
single score per channel -- the geometric mean of each layer's score over its layer mean -- and
with it the same mask.

A project conv's outputs join the residual stream, which no single layer can remove, so
structured criteria leave those project convs dense. Where a block's output is read by one 1x1
conv only (a non-residual block followed by a non-residual block, or the last block before the
head), it is ranked like any layer's. "50% channels" in such a network is half of every block's
hidden channels, of those block outputs and of the head's channels.
"""
from __future__ import annotations

import torch
from torch import nn

from fineprune.engine.export_blocks import block_shape, is_mbconv


def channel_groups(model: nn.Module) -> tuple[list[list[str]], set[str]]:
    """(groups of layer names sharing output channels, layers whose outputs cannot be removed).

    Empty for networks whose layers own their channels (VGG-style stacks)."""
    if not is_mbconv(model):
        return [], set()
    groups, fixed = [], set()
    shapes = [block_shape(b) for b in model._blocks]  # (expands, residual) per block
    for i, (expands, residual) in enumerate(shapes):
        prefix = f"_blocks.{i}."
        if expands:
            producer = prefix + "_expand_conv"
        elif i == 0 and not residual:
            producer = "_conv_stem"  # the stem's outputs are block 0's hidden channels
        else:
            producer = None
        groups.append([n for n in (producer, prefix + "_depthwise_conv") if n])
        # a block output that only one 1x1 conv reads (the next block's expand conv, or the head)
        # is that block's own: the export removes it with the reader's input column
        following = shapes[i + 1] if i + 1 < len(shapes) else None
        own_output = not residual and (following is None or (following[0] and not following[1]))
        if not own_output:
            fixed.add(prefix + "_project_conv")
    return groups, fixed


def couple_channel_scores(model: nn.Module, scores: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-channel scores of a structured criterion with every group sharing one score; layers
    whose outputs cannot be removed are left out (they stay dense)."""
    groups, fixed = channel_groups(model)
    out = {n: s for n, s in scores.items() if n not in fixed}
    for group in groups:
        members = [n for n in group if n in out]
        if len(members) < 2:
            continue
        logs = [torch.log(out[n].float().clamp_min(1e-12) / out[n].float().mean().clamp_min(1e-12)) for n in members]
        shared = torch.stack(logs).mean(0).exp()
        for n in members:
            out[n] = shared.clone()
    return out
