"""The shipped demo individuals (``assets/demo/<domain>/<name>/LABEL_take.ext``): people to try
the Studio with when there is no microphone or camera, and the "general data" of a demo."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import torch

from fineprune.domains import get_domain, label_from_name
from fineprune.errors import FinePruneError, InputDataError
from fineprune.paths import DEMO_ROOT
from fineprune.person.jobs import Progress, check_cancel
from fineprune.person.recordings import MAX_CLIPS, Recordings, SetSplit, decode_input


def demo_individuals(domain: str, root: Path = DEMO_ROOT) -> list[str]:
    """Names of the shipped demo individuals of ``domain`` (folders under assets/demo/<domain>/)."""
    folder = root / domain
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".") and any(p.iterdir()))


def load_demo(
    domain: str,
    name: str,
    card: dict,
    classes: Sequence[str],
    *,
    root: Path = DEMO_ROOT,
    per_label: int | None = None,
    progress: Progress | None = None,
    cancel=None,
) -> Recordings:
    """A shipped demo individual as ``Recordings`` (labels from file names ``LABEL_take.ext``).

    ``per_label`` keeps only the first files of each label (a cheaper sample, e.g. general data).
    """
    folder = root / domain / name
    if not folder.is_dir():
        raise InputDataError(f"no demo individual {name!r} for {domain}")
    suffixes = get_domain(domain).suffixes
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
    if per_label is not None:
        seen: dict[str | None, int] = {}
        kept = []
        for path in sorted(files, key=lambda p: _natural_key(p.name)):
            label = label_from_name(path.name, classes, card.get("class_aliases"))
            if seen.get(label, 0) < per_label:
                seen[label] = seen.get(label, 0) + 1
                kept.append(path)
        files = sorted(kept)
    recordings = Recordings(classes, max_clips=max(MAX_CLIPS, len(files)))
    for i, path in enumerate(files):
        check_cancel(cancel)
        if progress is not None:
            progress(i / max(1, len(files)), f"reading {name}'s clips ({i}/{len(files)})")
        try:
            decoded = decode_input(domain, path.read_bytes(), card, name=path.name)
        except FinePruneError:
            continue  # a shipped file the current model cannot use is simply left out
        recordings.add(decoded[0], label=label_from_name(path.name, classes, card.get("class_aliases")), source=f"demo: {name}")
    if not len(recordings):
        raise InputDataError(f"the demo individual {name!r} has no usable {domain} files")
    return recordings


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def demo_split(recordings: Recordings) -> SetSplit:
    """Half of each label's clips check, half adapt: a demo scores on as many clips as it adapts on."""
    counts = [n for label, n in recordings.counts().items() if label != "?" and n > 0]
    return recordings.split(check_per_label=max(1, min(counts) // 2) if counts else 0)


def pooled_inputs(recordings: Sequence[Recordings]) -> torch.Tensor | None:
    """All inputs of several individuals in one batch (the "general data" of a demo)."""
    rows = [c.features for r in recordings for c in r.clips]
    return torch.stack(rows).float() if rows else None
