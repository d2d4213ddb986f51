"""Structured export of inverted-residual networks (EfficientNet-Lite, ``objects``).

``export.export_structured`` dispatches here for an EfficientNet-Lite (PyPI
``efficientnet-lite-pytorch``) or an already exported ``"mbconv"`` network (``models.MBConvNet``).
BatchNorms are folded into the convs first (eval statistics; exact to float rounding), then, per
block, a *hidden* (expanded) channel ``c`` is removed -- from the expand conv's outputs, the
depthwise conv (its groups shrink) and the project conv's inputs -- when any of its three parts
is empty:

* its expand row (for block 0: its stem row) is all zero: the channel emits the constant
  ``a = ReLU6(bias)``. If ``a == 0`` the depthwise conv sees zeros and emits its own bias, a
  constant that folds into the project bias. If ``a != 0`` the zero-padded depthwise conv of a
  constant plane is constant inside and different at the borders: that exact contribution is
  carried by the block's *border fold* (``fold_*`` buffers, a map computed once per input size);
* its depthwise filter is all zero: the channel emits ``ReLU6(depthwise bias)``, folded into the
  project bias;
* its project column is all zero: nobody reads it.

Residual streams stay dense (a block's outputs are added to its input), except where nothing
but one unpadded 1x1 conv reads a block's output (a non-residual block followed by a
non-residual block, or the last block before the head): there an output channel whose project
row is empty is a constant, folded into that conv's bias. Head channels with an empty head-conv
row are constants after ReLU6 and average pooling, folded into the classifier bias. Classifier
rows that are all zero -- the classes a person does not use, silenced by ``drop_unused_classes``
-- emit their bias: only the live rows are computed and the export writes the constant logits of
the others (``classes_kept``), so a two-class person's model carries 2 of the 1000 rows. The
stem's input is never touched.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import torch
from torch import nn

from fineprune.engine.models import MBCONV_ARCH, MBConvBlock, MBConvNet, build_model
from fineprune.errors import ExportError


@dataclass
class StructuredExport:
    """A physically smaller model equivalent to a pruned one."""

    model: nn.Module
    config: dict
    widths: dict[str, tuple[int, int]]  # layer -> (units before, units after)
    folded: list[str] = field(default_factory=list)  # layers that absorbed the constants of removed inputs

    @property
    def summary(self) -> dict:
        return {"format": "structured", "widths": {k: list(v) for k, v in self.widths.items()}, "folded": list(self.folded)}


def is_mbconv(model: nn.Module) -> bool:
    """An EfficientNet-Lite style network (stem, ``_blocks``, head, ``_fc``) or its export."""
    return isinstance(model, MBConvNet) or all(hasattr(model, a) for a in ("_conv_stem", "_blocks", "_conv_head", "_fc"))


def block_shape(block: nn.Module) -> tuple[bool, bool]:
    """(has an expand conv, adds its input back) for a package block or an exported ``MBConvBlock``."""
    if isinstance(block, MBConvBlock):
        return bool(block.expand), bool(block.residual)
    args = block._block_args
    return args.expand_ratio != 1, bool(args.id_skip and args.stride == 1 and args.input_filters == args.output_filters)


# ----------------------------------------------------------------------------- reading the network
@dataclass
class Unit:
    """One conv with its BatchNorm folded in: ``weight`` (out, in/groups, k, k), ``bias`` (out,)."""

    name: str
    weight: torch.Tensor
    bias: torch.Tensor
    stride: int
    pad: tuple[int, int, int, int]


def _pad_of(conv: nn.Conv2d) -> tuple[int, int, int, int]:
    if getattr(conv, "tf_pad", None) is not None:
        return tuple(conv.tf_pad)
    if isinstance(conv.padding, str) or conv.padding_mode != "zeros" or conv.dilation != (1, 1):
        raise ExportError("only zero-padded, undilated convolutions can be exported in the structured format")
    ph, pw = conv.padding
    extra = (0, 0, 0, 0)
    static = getattr(conv, "static_padding", None)
    if static is not None and not isinstance(static, (nn.Identity,)) and type(static).__name__ != "Identity":
        if not isinstance(static, nn.ZeroPad2d):
            raise ExportError(f"unsupported padding layer {type(static).__name__}")
        extra = tuple(int(p) for p in static.padding)
    elif static is None and type(conv).__name__ == "Conv2dDynamicSamePadding":
        raise ExportError("an EfficientNet built without a fixed image size (dynamic padding) cannot be exported")
    return (extra[0] + pw, extra[1] + pw, extra[2] + ph, extra[3] + ph)


def _unit(name: str, conv: nn.Conv2d, bn: nn.Module | None) -> Unit:
    if conv.stride[0] != conv.stride[1] or conv.kernel_size[0] != conv.kernel_size[1]:
        raise ExportError(f"{name}: only square kernels and strides can be exported")
    weight = conv.weight.detach().clone()
    bias = conv.bias.detach().clone() if conv.bias is not None else torch.zeros(weight.shape[0])
    if bn is not None:
        if not isinstance(bn, nn.BatchNorm2d) or bn.running_mean is None:
            raise ExportError(f"{name}: BatchNorm without running statistics cannot be exported")
        scale = (bn.running_var + bn.eps).rsqrt()
        if bn.affine:
            scale = scale * bn.weight.detach()
        shift = (bn.bias.detach() if bn.affine else 0.0) - bn.running_mean * scale
        weight = weight * scale.reshape(-1, 1, 1, 1)
        bias = bias * scale + shift
    return Unit(name, weight, bias, int(conv.stride[0]), _pad_of(conv))


def read_network(model: nn.Module) -> tuple[Unit, list[dict], Unit, nn.Linear]:
    """(stem, blocks, head, classifier) with BatchNorms folded; each block a dict of units."""
    exported = isinstance(model, MBConvNet)
    if not exported and getattr(model._global_params, "relu_fn", "relu6") != "relu6":
        raise ExportError("only ReLU6 EfficientNets (EfficientNet-Lite) can be exported in the structured format")
    stem = _unit("_conv_stem", model._conv_stem, None if exported else model._bn0)
    blocks = []
    for i, block in enumerate(model._blocks):
        prefix = f"_blocks.{i}."
        expand, residual = block_shape(block)
        if exported:
            bns = (None, None, None)
            if block.border:
                raise ExportError("re-exporting a structured export that carries border folds is not supported")
            if hasattr(model, "_class_index"):
                raise ExportError("this structured export keeps only some classes; export the full personalized model instead")
        else:
            if block.has_se:
                raise ExportError(f"{prefix[:-1]}: squeeze-excite blocks cannot be exported")
            bns = (getattr(block, "_bn0", None), block._bn1, block._bn2)
        units = {
            "expand": _unit(prefix + "_expand_conv", block._expand_conv, bns[0]) if expand else None,
            "dw": _unit(prefix + "_depthwise_conv", block._depthwise_conv, bns[1]),
            "project": _unit(prefix + "_project_conv", block._project_conv, bns[2]),
        }
        dw = block._depthwise_conv
        if dw.groups != dw.in_channels or dw.in_channels != dw.out_channels:
            raise ExportError(f"{prefix}_depthwise_conv is not a depthwise convolution")
        blocks.append({**units, "residual": residual})
    head = _unit("_conv_head", model._conv_head, None if exported else model._bn1)
    return stem, blocks, head, model._fc


def _relu6(x: torch.Tensor) -> torch.Tensor:
    return x.clamp(0.0, 6.0)


def _rows_zero(w: torch.Tensor) -> torch.Tensor:
    return w.reshape(w.shape[0], -1).eq(0).all(1)


def _keep_one(remove: torch.Tensor) -> torch.Tensor:
    if bool(remove.all()):
        remove = remove.clone()
        remove[0] = False
    return remove


def _fold_constant_inputs(consumer: Unit, constants: torch.Tensor, which: torch.Tensor) -> None:
    """Inputs ``which`` of an unpadded 1x1 ``consumer`` are the constants ``constants``: into its bias."""
    if consumer.weight.shape[2:] != (1, 1) or any(consumer.pad):
        raise ExportError(f"{consumer.name}: constants can only be folded into an unpadded 1x1 conv")
    values = torch.where(which, constants, torch.zeros_like(constants))
    consumer.bias = consumer.bias + consumer.weight[:, :, 0, 0] @ values


# ----------------------------------------------------------------------------- export
@torch.no_grad()
def export_mbconv(model: nn.Module, config: dict | None = None) -> StructuredExport:
    """Structured export of a pruned EfficientNet-Lite (masks already folded in: ``make_permanent``)."""
    stem, blocks, head, fc = read_network(model)
    widths: dict[str, tuple[int, int]] = {}
    folded: list[str] = []
    specs = []
    fc_weight, fc_bias = fc.weight.detach().clone(), fc.bias.detach().clone() if fc.bias is not None else torch.zeros(fc.out_features)
    stem_out = stem.weight.shape[0]
    # stem outputs feed only block 0's depthwise conv when block 0 has no expand conv and no skip
    stem_is_producer = blocks[0]["expand"] is None and not blocks[0]["residual"]
    for i, b in enumerate(blocks):
        dw, proj = b["dw"], b["project"]
        producer = b["expand"] if b["expand"] is not None else (stem if i == 0 and stem_is_producer else None)
        hidden = dw.weight.shape[0]
        dead_producer = _rows_zero(producer.weight) if producer is not None else torch.zeros(hidden, dtype=torch.bool)
        a = _relu6(producer.bias) if producer is not None else torch.zeros(hidden)
        dead_dw = _rows_zero(dw.weight)
        unused = proj.weight[:, :, 0, 0].eq(0).all(0)
        remove = dead_producer | dead_dw | unused
        if producer is None:  # the hidden channels are the residual stream: keep them all
            remove = torch.zeros(hidden, dtype=torch.bool)
        remove = _keep_one(remove)
        # constants that reach the project conv: depthwise output of a zero plane, or a dead depthwise
        plain = remove & ~unused & (dead_dw | (dead_producer & a.eq(0)))
        border = remove & ~unused & ~plain  # dead producer, nonzero constant, live depthwise filter
        _fold_constant_inputs(proj, _relu6(dw.bias), plain)
        keep = torch.nonzero(~remove).flatten()
        border_idx = torch.nonzero(border).flatten()
        fold = None
        if len(border_idx):
            fold = {
                "fold_kernel": dw.weight[border_idx] * a[border_idx].reshape(-1, 1, 1, 1),
                "fold_shift": dw.bias[border_idx].clone(),
                "fold_weight": proj.weight[:, border_idx].clone(),
            }
            folded.append(proj.name)
        if producer is not None:
            widths[producer.name] = (producer.weight.shape[0], len(keep))
            producer.weight, producer.bias = producer.weight[keep], producer.bias[keep]
            if producer is stem:
                stem_out = len(keep)
        widths[dw.name] = (hidden, len(keep))
        dw.weight, dw.bias = dw.weight[keep], dw.bias[keep]
        proj.weight = proj.weight[:, keep]
        # a block output that only one unpadded 1x1 conv reads: drop its constant channels
        nxt = blocks[i + 1] if i + 1 < len(blocks) else None
        consumer = head if nxt is None else (nxt["expand"] if not nxt["residual"] else None)
        n_out = proj.weight.shape[0]
        out_keep = torch.arange(n_out)
        if not b["residual"] and consumer is not None:
            constant = _rows_zero(proj.weight)
            if fold is not None:
                constant &= _rows_zero(fold["fold_weight"])
            gone = _keep_one(constant | consumer.weight[:, :, 0, 0].eq(0).all(0))
            _fold_constant_inputs(consumer, proj.bias, gone & constant)
            out_keep = torch.nonzero(~gone).flatten()
            consumer.weight = consumer.weight[:, out_keep]
            proj.weight, proj.bias = proj.weight[out_keep], proj.bias[out_keep]
            if fold is not None:
                fold["fold_weight"] = fold["fold_weight"][out_keep]
        widths[proj.name] = (n_out, len(out_keep))
        b["fold"] = fold
        specs.append({
            "in": int(b["expand"].weight.shape[1]) if b["expand"] is not None else len(keep),
            "hidden": len(keep), "out": len(out_keep), "k": int(dw.weight.shape[-1]), "s": dw.stride,
            "pad": list(dw.pad), "expand": b["expand"] is not None, "residual": b["residual"], "border": len(border_idx),
        })
    # head channels with an empty row emit ReLU6(bias) everywhere: after pooling, a classifier bias
    n_head = head.weight.shape[0]
    constant = _rows_zero(head.weight)
    gone = _keep_one(constant | fc_weight.eq(0).all(0))
    fc_bias = fc_bias + fc_weight @ torch.where(gone & constant, _relu6(head.bias), torch.zeros(n_head))
    head_keep = torch.nonzero(~gone).flatten()
    head.weight, head.bias, fc_weight = head.weight[head_keep], head.bias[head_keep], fc_weight[:, head_keep]
    widths[head.name] = (n_head, len(head_keep))
    # classifier rows that read nothing emit their bias (folds included): written in as constants
    silent = fc_weight.eq(0).all(1)
    classes_kept = None
    class_constant = fc_bias.clone()
    if bool(silent.any()) and not bool(silent.all()):
        kept = torch.nonzero(~silent).flatten()
        classes_kept = [int(c) for c in kept]
        fc_weight, fc_bias = fc_weight[kept], fc_bias[kept]
    widths["_fc"] = (fc.out_features, fc_weight.shape[0])

    state: dict[str, torch.Tensor] = {}
    for unit in [stem, *[u for b in blocks for u in (b["expand"], b["dw"], b["project"]) if u is not None], head]:
        state[f"{unit.name}.weight"] = unit.weight.contiguous()
        state[f"{unit.name}.bias"] = unit.bias.contiguous()
    for i, b in enumerate(blocks):
        for key, tensor in (b["fold"] or {}).items():
            state[f"_blocks.{i}.{key}"] = tensor.contiguous()
    state["_fc.weight"], state["_fc.bias"] = fc_weight.contiguous(), fc_bias.contiguous()
    if classes_kept is not None:
        state["_class_index"] = torch.tensor(classes_kept, dtype=torch.long)
        state["_class_constant"] = class_constant.contiguous()
    config_out = {
        "arch": MBCONV_ARCH,
        "stem": {"in": int(stem.weight.shape[1]), "out": stem_out, "k": int(stem.weight.shape[-1]), "s": stem.stride, "pad": list(stem.pad)},
        "blocks": specs,
        "head": {"in": int(head.weight.shape[1]), "out": len(head_keep)},
        "n_classes": int(fc.out_features),
        **({"classes_kept": classes_kept} if classes_kept is not None else {}),
    }
    if config:  # descriptive fields other code reads
        config_out.update({k: config[k] for k in ("image_size",) if k in config})
    config_out = json.loads(json.dumps(config_out))
    exported = build_model(config_out)
    exported.load_state_dict(state)
    exported.eval()
    return StructuredExport(exported, config_out, widths, folded)
