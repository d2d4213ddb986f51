"""What changed for this person, clip by clip: the check clips the general model got wrong and the
personalized model gets right (and any that went the other way), and -- when a run shows no gain --
why, in words."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from fineprune.engine.evaluation import predict_logits


@dataclass
class Changes:
    run_id: int
    fixed: list[dict]  # {"clip", "said", "before", "after"}: wrong before, right after
    broken: list[dict]  # right before, wrong after
    still_wrong: int


def clip_changes(run, general_model: torch.nn.Module) -> Changes:
    """Compare the general and the personalized model on the run's check clips (no labels reach the pruner;
    these are the scoring clips)."""
    x, y = run.person.check_x, run.person.check_y
    if not len(x):
        return Changes(id(run), [], [], 0)
    with torch.no_grad():
        before = predict_logits(general_model, x).argmax(1)
        after = predict_logits(run.result.model, x).argmax(1)
    names = run.classes

    def rows(mask):
        return [{"clip": run.person.check_ids[i], "said": names[int(y[i])], "before": names[int(before[i])],
                 "after": names[int(after[i])]} for i in torch.nonzero(mask).flatten().tolist()]

    fixed = rows((before != y) & (after == y))
    broken = rows((before == y) & (after != y))
    return Changes(id(run), fixed, broken, int(((before != y) & (after != y)).sum()))


def no_gain_reason(run, changes: Changes) -> str | None:
    """Why a run shows no gain (None when it shows one, or has no check clips)."""
    if run.before is None or run.after is None:
        return None
    before, after = run.before.accuracy, run.after.accuracy
    points = 100 * (after - before)
    if points >= 0.5:
        return None
    report = run.result.report
    pruned = f"{100 * report['sparsity']:.0f}%"
    if points <= -0.5:
        return (f"It got worse: {len(changes.broken)} check clip(s) the general model got right are now wrong. "
                "The adaptation clips pulled the model away from what the check clips need -- typically when the "
                "adaptation clips are few or differ from the check clips, or when re-measuring every BatchNorm layer "
                "on a few classes washes out the class signal. Try a lower sparsity, re-measuring BatchNorm in fewer "
                "layers, or turning off “Drop classes you hardly use” (More settings).")
    if before >= 0.95:
        return (f"No gain because there was nothing to fix: the general model already gets {100 * before:.0f}% of "
                f"these clips right. Fine-pruning still removed {pruned} of the weights without losing accuracy. "
                "To see a gain, pick an individual the general model finds hard (a demo recorded in a noisy room).")
    if changes.fixed and len(changes.fixed) == len(changes.broken):
        return (f"Fine-pruning fixed {len(changes.fixed)} clip(s) and broke as many, so the accuracy did not move.")
    dropped = report.get("dropped_classes")
    same = report.get("same_capture")
    parts = [f"No gain: the {changes.still_wrong} clip(s) the general model gets wrong stay wrong."]
    if dropped is not None and not dropped:
        parts.append("This person uses every class, so no class could be dropped from the output.")
    elif dropped:
        parts.append("Dropping the classes this person hardly uses did not remove their mistakes: "
                     "the wrong answers are classes they also say.")
    if same:
        parts.append("Their recordings look like the training data, so re-measuring BatchNorm changed little.")
    parts.append("Fine-pruning removes what a person does not use; it cannot teach the model a sound or a face it "
                 "never learned.")
    return " ".join(parts)
