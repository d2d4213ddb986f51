"""BatchNorm recalibration that does not mistake *which classes* a person uses for *how they sound*.

Re-estimating BatchNorm statistics on a person's clips measures two shifts at once: the capture
(a room, a microphone: what recalibration is for) and the person's class mix. Someone who says
only 2, 4 and 9 gives statistics of those three digits, and normalising with them subtracts part
of what tells the three apart: the voice dev set's speakers who say three digits in a reverberant
room lose clips to recalibration (docs/results/voice_label_shift.md).

The correction removes the class mix's part. From the general model's training data it keeps,
per BatchNorm layer, each class's mean input and mean squared input (``class_moments``). For a
person whose class shares are estimated as ``shares`` (label-free: a listener's mean predicted
probabilities over their clips -- the general model's, or the model recalibrated on the clips,
in its first layers only for the voice card), the general model's statistics under that class mix
differ from its statistics under all classes equally by an offset in the mean and a ratio in the
variance (``shift_correction``); the person's measured statistics are corrected by the same
offset and ratio before use (``energy._Recalibration``). With equal shares the correction is
nothing. The moments describe one model: they travel with it as an attribute (``attach``),
which ``copy.deepcopy`` keeps, and in its bundle file when saved with them (``bundle.save_bundle``).

No listener tells a digit the person never says from a digit it mishears, so the voice card
corrects only a *narrow* mix (``effective_classes`` at most 7): someone who says a few digits,
not a misheard voice that says all ten (docs/results/voice_label_shift_narrow.md).
"""
from __future__ import annotations

import torch
from torch import nn

from fineprune.engine.energy import batchnorm_layers
from fineprune.errors import ConfigError, InputDataError

ATTRIBUTE = "_fineprune_class_moments"
# the variance ratio is kept within these bounds: a class mix estimated from few clips must not
# blow a channel's scale up or down by more than this
RATIO_BOUNDS = (0.25, 4.0)


@torch.no_grad()
def class_moments(model: nn.Module, x: torch.Tensor, y: torch.Tensor, classes: int, *,
                  batch_size: int = 256) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per BatchNorm layer (module order): (E[input | class], E[input^2 | class]), each
    (classes, channels), over labelled general data, the model in eval mode (its own statistics)."""
    norms = batchnorm_layers(model)
    current: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def recorder(index: int):
        def hook(module, args):
            a = args[0].float()
            dims = list(range(2, a.dim()))  # per example and channel: average over positions
            current[index] = (a.mean(dim=dims) if dims else a, (a * a).mean(dim=dims) if dims else a * a)
        return hook

    handles = [m.register_forward_pre_hook(recorder(i)) for i, m in enumerate(norms)]
    sums = [[torch.zeros(classes, m.num_features), torch.zeros(classes, m.num_features)] for m in norms]
    counts = torch.zeros(classes)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(x), batch_size):
            onehot = nn.functional.one_hot(y[start:start + batch_size], classes).float()
            model(x[start:start + batch_size])
            for i in range(len(norms)):
                sums[i][0] += onehot.T @ current[i][0]
                sums[i][1] += onehot.T @ current[i][1]
            counts += onehot.sum(0)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if (counts == 0).any():
        raise InputDataError(f"class moments need examples of every class; there are none of {torch.nonzero(counts == 0).flatten().tolist()}")
    return [(s1 / counts[:, None], s2 / counts[:, None]) for s1, s2 in sums]


def shift_correction(moments: list[tuple[torch.Tensor, torch.Tensor]], shares: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per BatchNorm layer: (offset, ratio) such that ``(mean - offset, var * ratio)`` turns
    statistics measured under the class mix ``shares`` into statistics under all classes equally
    (as the general model sees them through its moments). Equal shares: offset 0, ratio 1."""
    shares = shares.float() / shares.sum()
    equal = torch.full_like(shares, 1.0 / len(shares))
    out = []
    for first, second in moments:
        mean_mix, mean_all = shares @ first, equal @ first
        var_mix = (shares @ second - mean_mix * mean_mix).clamp_min(1e-8)
        var_all = (equal @ second - mean_all * mean_all).clamp_min(1e-8)
        out.append((mean_mix - mean_all, (var_all / var_mix).clamp(*RATIO_BOUNDS)))
    return out


def attach(model: nn.Module, moments: list[tuple[torch.Tensor, torch.Tensor]]) -> nn.Module:
    """Give ``model`` its class moments (checked against its BatchNorm layers); returns the model."""
    norms = batchnorm_layers(model)
    if len(moments) != len(norms) or any(m[0].shape[1] != n.num_features for m, n in zip(moments, norms)):
        raise ConfigError("these class moments belong to another model: they do not match this model's BatchNorm layers")
    setattr(model, ATTRIBUTE, moments)
    return model


def moments_of(model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    return getattr(model, ATTRIBUTE, None)


LISTENERS = {"general": "the general model", "recalibrated": "the model recalibrated on your clips"}


def effective_classes(shares: torch.Tensor) -> float:
    """How many classes a mix spreads over: exp of the shares' entropy (all of n equally: n; one: 1)."""
    p = shares.float() / shares.sum()
    return float(torch.exp(-(p * p.clamp_min(1e-12).log()).sum()))


def person_correction(model: nn.Module, logits: torch.Tensor, *, min_confidence: float, listener: str = "general",
                      listener_depth: int | None = None, max_classes: float = 0.0) -> tuple[list[tuple[torch.Tensor, torch.Tensor]] | None, dict]:
    """The correction for a person (None: not applied) and what decided it. ``logits``:
    ``model``'s outputs on the person's clips (the guard's probe clips: the pipeline computes them
    once for both). Their mean predicted probabilities estimate the class mix, trusted only when the
    mean top probability is at least ``min_confidence`` (a capture the model hears as mush piles its
    answers onto a few classes too, and that is not a class mix). ``listener``: whose outputs
    ``logits`` are (``LISTENERS``: the general model's, or those of ``model`` recalibrated on
    the person's clips without the correction, in its first ``listener_depth`` BatchNorm layers
    when given); the report names it. ``max_classes`` (0: no limit):
    applied only when the read mix spreads over at most this many classes (``effective_classes``):
    a misheard voice that says every class reads as a crooked but wide mix, someone who says a few
    classes as a narrow one. Without class moments on ``model``: None."""
    moments = moments_of(model)
    if moments is None:
        return None, {"applied": False, "why": "the model carries no class moments, so the class mix cannot be separated"}
    probabilities = logits.detach().softmax(1)
    shares, confidence = probabilities.mean(0), float(probabilities.max(1).values.mean())
    info = {"shares": [round(float(v), 4) for v in shares], "confidence": round(confidence, 4), "clips": len(probabilities),
            "read_by": listener, "effective_classes": round(effective_classes(shares), 3)}
    who = LISTENERS[listener]
    if listener == "recalibrated" and listener_depth:
        who += f" in its first {listener_depth} BatchNorm layers"
        info["listener_depth"] = listener_depth
    if confidence < min_confidence:
        return None, {**info, "applied": False,
                      "why": (f"{who} is not sure enough of your clips (mean confidence {confidence:.0%}, "
                              f"{min_confidence:.0%} needed) for its answers to tell which classes you use")}
    if max_classes > 0 and info["effective_classes"] > max_classes:
        return None, {**info, "applied": False,
                      "why": (f"as {who} hears them, your clips spread over about {info['effective_classes']:.1f} classes "
                              f"(at most {max_classes:g} needed to correct for the classes you use): a wide mix that "
                              "reads uneven is more likely classes the model mishears than classes you do not say")}
    main = [str(c) for c in range(len(shares)) if shares[c] >= 0.5 / len(shares)]  # classes at least half as common as with all equally
    return shift_correction(moments, shares), {
        **info, "applied": True,
        "why": (f"the BatchNorm statistics measured on your clips were corrected for the classes you use (mostly classes "
                f"{', '.join(main)}, as {who} hears them), so recalibration adapts to how you sound, "
                "not to which classes you say")}
