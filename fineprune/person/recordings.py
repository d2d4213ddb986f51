"""A person's recordings for one model, in memory: clips, labels, and the split into an
adaptation set (inputs only: the pruner never gets their labels) and a check set (labels used
only to score). Files become clips through their domain's one decoder (``Domain.decode_bytes``).

Privacy: everything here lives in memory; no recording, crop or feature is written to disk.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Sequence

import torch

from fineprune.domains import Decoded, get_domain, label_from_name
from fineprune.errors import ConfigError, FinePruneError, RecordingLimitError
from fineprune.person.uploads import expand_uploads

MAX_CLIPS = 300  # per model per session: bounds memory (a voice clip is ~50 kB, a face ~25 kB)
USES = ("auto", "adapt", "check", "skip")  # where a clip goes; "auto" = decided by ``split``
UNLABELED = -1


def decode_input(domain: str, data: bytes, card: dict, *, split: bool = False, name: str = "the file") -> list[Decoded]:
    """Bytes of one file of ``domain`` -> decoded inputs. Raises a ``FinePruneError`` subclass."""
    return get_domain(domain).decode_bytes(data, card, split=split, name=name)


@dataclass
class Clip:
    id: int
    features: torch.Tensor
    label: str | None  # None: not known (e.g. a piece of a long take); fine for adaptation
    source: str  # "microphone", "upload: name.wav", "long take", "camera", "demo", ...
    use: str = "auto"
    decoded: Decoded | None = field(default=None, repr=False)
    created: float = field(default_factory=time.time)


@dataclass
class SetSplit:
    adapt: list[int]  # clip ids, in recording order
    check: list[int]


@dataclass
class PersonData:
    """Tensors for the engine. ``adapt_y`` is kept only for the labelled baseline and the report."""

    adapt_x: torch.Tensor
    adapt_y: torch.Tensor  # UNLABELED (-1) where unknown; never given to the pruner
    check_x: torch.Tensor
    check_y: torch.Tensor
    adapt_ids: list[int]
    check_ids: list[int]


class Recordings:
    """A person's clips for one model, in memory, capped at ``max_clips``."""

    def __init__(self, classes: Sequence[str], *, max_clips: int = MAX_CLIPS):
        self.classes = list(classes)
        self.max_clips = max_clips
        self.clips: list[Clip] = []
        self._next_id = 1

    def __len__(self) -> int:
        return len(self.clips)

    @property
    def room(self) -> int:
        return self.max_clips - len(self.clips)

    def _check_label(self, label: str | None) -> str | None:
        if label is None or label == "":
            return None
        if label not in self.classes:
            raise ConfigError(f"{label!r} is not a class of this model ({', '.join(self.classes)})")
        return label

    def add(self, decoded: Decoded, *, label: str | None = None, source: str = "", use: str = "auto") -> Clip:
        if self.room <= 0:
            raise RecordingLimitError(
                f"this session already holds {self.max_clips} clips, the most it keeps; delete some to add more"
            )
        if use not in USES:
            raise ConfigError(f"use must be one of {USES}")
        clip = Clip(self._next_id, decoded.features, self._check_label(label), source, use, decoded)
        self._next_id += 1
        self.clips.append(clip)
        return clip

    def add_many(self, decoded: Sequence[Decoded], *, labels: Sequence[str | None] | None = None, source: str = "") -> list[Clip]:
        """Add all or nothing: a take that does not fit is refused whole (nothing half-added)."""
        if len(decoded) > self.room:
            raise RecordingLimitError(
                f"{len(decoded)} clips do not fit: this session keeps at most {self.max_clips} clips "
                f"and has room for {max(0, self.room)} more"
            )
        labels = list(labels) if labels is not None else [None] * len(decoded)
        for label in labels:
            self._check_label(label)
        return [self.add(d, label=lab, source=source) for d, lab in zip(decoded, labels)]

    def get(self, clip_id: int) -> Clip:
        for clip in self.clips:
            if clip.id == clip_id:
                return clip
        raise KeyError(clip_id)

    def delete(self, clip_id: int) -> None:
        self.clips = [c for c in self.clips if c.id != clip_id]

    def clear(self) -> None:
        self.clips = []

    def relabel(self, clip_id: int, label: str | None) -> None:
        self.get(clip_id).label = self._check_label(label)

    def set_use(self, clip_id: int, use: str) -> None:
        if use not in USES:
            raise ConfigError(f"use must be one of {USES}")
        self.get(clip_id).use = use

    def replace(self, clip_id: int, decoded: Decoded, *, source: str | None = None) -> None:
        """Re-record: new content, same id, label and place."""
        clip = self.get(clip_id)
        clip.features, clip.decoded, clip.created = decoded.features, decoded, time.time()
        if source is not None:
            clip.source = source

    def counts(self) -> dict[str, int]:
        """Clips per label (``"?"`` for unlabeled), classes in model order."""
        out = {c: 0 for c in self.classes}
        for clip in self.clips:
            key = clip.label if clip.label is not None else "?"
            out[key] = out.get(key, 0) + 1
        return out

    def split(self, check_per_label: int = 1, max_adapt_per_label: int | None = None) -> SetSplit:
        """Decide the adaptation set and the check set (disjoint).

        ``use`` of a clip wins ("adapt", "check", "skip"); "auto" clips of each label give their
        first ``check_per_label`` to the check set -- but always leave at least one of the label's
        clips to adaptation -- and the rest to adaptation, at most ``max_adapt_per_label`` per
        label. Unlabeled clips can only adapt (no label to score).
        """
        if check_per_label < 0 or (max_adapt_per_label is not None and max_adapt_per_label < 0):
            raise ConfigError("clip counts per label cannot be negative")
        auto_counts: dict[str, int] = {}
        for clip in self.clips:
            if clip.use == "auto" and clip.label is not None:
                auto_counts[clip.label] = auto_counts.get(clip.label, 0) + 1
        adapt, check = [], []
        checked: dict[str, int] = {}
        adapted: dict[str, int] = {}
        for clip in self.clips:
            if clip.use == "skip":
                continue
            label = clip.label
            if clip.use == "check" and label is not None:
                check.append(clip.id)
                continue
            if (clip.use == "auto" and label is not None
                    and checked.get(label, 0) < min(check_per_label, auto_counts[label] - 1)):
                checked[label] = checked.get(label, 0) + 1
                check.append(clip.id)
                continue
            key = label if label is not None else "?"
            if clip.use == "auto" and label is not None and max_adapt_per_label is not None and adapted.get(key, 0) >= max_adapt_per_label:
                continue
            adapted[key] = adapted.get(key, 0) + 1
            adapt.append(clip.id)
        return SetSplit(adapt, check)

    def person_data(self, split: SetSplit) -> PersonData:
        def stack(ids):
            if not ids:
                shape = tuple(self.clips[0].features.shape) if self.clips else (0,)
                return torch.empty((0, *shape))
            return torch.stack([self.get(i).features for i in ids]).float()

        def labels(ids):
            return torch.tensor(
                [self.classes.index(self.get(i).label) if self.get(i).label is not None else UNLABELED for i in ids],
                dtype=torch.long,
            )

        return PersonData(stack(split.adapt), labels(split.adapt), stack(split.check), labels(split.check), list(split.adapt), list(split.check))


def ingest_files(
    recordings: "Recordings",
    domain: str,
    card: dict,
    files: Sequence[tuple[str, bytes]],
    *,
    split: bool = False,
    label: str | None = None,
    source: str = "upload",
) -> tuple[list["Clip"], list[tuple[str, str]]]:
    """Decode uploaded files (zips opened in memory) into ``recordings``.

    Labels come from file names (``7_take.wav``) or ``label``. One bad file is reported in
    ``problems`` as ``(name, reason)`` and the rest still go in; once the session is full the
    remaining files are reported, never silently dropped.
    """
    usable, problems = expand_uploads(files, get_domain(domain).suffixes)
    added: list[Clip] = []
    for name, data in usable:
        try:
            decoded = decode_input(domain, data, card, split=split, name=PurePosixPath(name).name)
            named = label_from_name(name, recordings.classes, card.get("class_aliases")) or label
            labels = [named] if len(decoded) == 1 else [None] * len(decoded)  # pieces of a take: unknown
            added.extend(recordings.add_many(decoded, labels=labels, source=f"{source}: {PurePosixPath(name).name}"))
        except FinePruneError as exc:
            problems.append((name, str(exc)))
    return added, problems
