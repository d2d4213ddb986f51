"""One person's session in the Studio, without any UI: recordings in memory, the split into an
adaptation set and a check set, and the background work (personalize, compare criteria,
baselines) the app runs as ``fineprune.person.jobs.Job``.

Privacy: everything here lives in memory. Clips are decoded from bytes (``io.BytesIO``); no
recording, crop or feature is ever written to disk -- only an explicit export does that.

The adaptation set is what fine-pruning sees: inputs only, its labels are never passed to the
pruner (only the "backprop" baseline, which is labelled as using labels, reads them). The check
set is disjoint and its labels are used only to score before/after accuracy.
"""
from __future__ import annotations

import copy
import io
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from fineprune.paths import DEMO_ROOT
from fineprune.engine.energy import EnergyRecord, record_energy
from fineprune.errors import ConfigError, FinePruneError, InputDataError, JobCancelled, RecordingLimitError
from fineprune.engine.evaluation import Evaluation, evaluate
from fineprune.engine.models import prunable_layers
from fineprune.engine.pipeline import PruneResult, PruneSettings, PruningSweep

Progress = Callable[[float, str], None]

MAX_CLIPS = 300  # per model per session: bounds memory (a voice clip is ~50 kB, a face ~25 kB)
MAX_UPLOAD_FILES = 400  # files (or zip members) taken from one upload
MAX_ZIP_BYTES = 200 * 2**20  # uncompressed bytes read from one zip (zip bombs)
MAX_MEMBER_BYTES = 64 * 2**20  # one file inside a zip
PHOTO_PREVIEW_SIDE = 320  # the photo kept for display is downscaled to this
USES = ("auto", "adapt", "check", "skip")  # where a clip goes; "auto" = decided by ``split``
UNLABELED = -1



# --------------------------------------------------------------------------- decoding
@dataclass
class Decoded:
    """One model input decoded from bytes, plus what the app shows of it."""

    features: torch.Tensor  # one model input (the card's input shape, no batch dim)
    waveform: np.ndarray | None = None  # voice: trimmed mono float32 samples
    sample_rate: int | None = None
    crop: np.ndarray | None = None  # face: the 48x48 uint8 crop the model sees
    photo: np.ndarray | None = None  # face: the upright gray photo, downscaled for display
    box: tuple[int, int, int, int] | None = None  # face box in ``photo`` coordinates
    notes: list[str] = field(default_factory=list)


def _voice_settings(card: dict):
    from fineprune.domains.audio import VOICE_DOMAIN

    return VOICE_DOMAIN.settings(card)


def decode_voice(data: bytes, card: dict, *, split: bool = False, name: str = "the recording") -> list[Decoded]:
    """WAV bytes -> one clip (trimmed) or, with ``split``, one clip per spoken digit of a long take."""
    from fineprune.domains.audio import decode_wav_bytes, log_mel_features, split_digits, trim_silence

    settings = _voice_settings(card)
    try:
        samples = decode_wav_bytes(data)
        if split:
            pieces = split_digits(samples, settings.sample_rate, trim_db=settings.trim_db, name=name)
        else:
            pieces = [trim_silence(samples, settings.sample_rate, trim_db=settings.trim_db, name=name)]
    except FinePruneError as exc:
        raise type(exc)(_named(str(exc), name)) from None
    return [Decoded(log_mel_features(p, settings), waveform=p, sample_rate=settings.sample_rate) for p in pieces]


def _named(message: str, name: str) -> str:
    generic = ("the audio", "the clip", "the recording", "the image")
    if name in generic or name in message:
        return message
    for g in generic:
        if message.startswith(g):
            return name + message[len(g):]
    return f"{name}: {message}"


def decode_face(data: bytes, card: dict, *, name: str = "the photo") -> Decoded:
    """Photo bytes -> the largest face: 48x48 crop (the model input) and the box on the photo."""
    from fineprune.domains.face import FACE_INPUT, decode_image, extract_face

    settings = {**FACE_INPUT, **(card.get("input") or {})}
    try:
        gray = decode_image(data)
        found = extract_face(gray, settings)
    except FinePruneError as exc:
        raise type(exc)(_named(str(exc), name)) from None
    photo, box = _downscale(gray, found.box, PHOTO_PREVIEW_SIDE)
    features = found.tensor(settings)[0]
    return Decoded(features, crop=found.crop, photo=photo, box=box, notes=list(found.notes))


def _downscale(gray: np.ndarray, box, side: int):
    import cv2

    h, w = gray.shape[:2]
    scale = min(1.0, side / max(h, w))
    if scale < 1.0:
        gray = cv2.resize(gray, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return gray, tuple(int(round(v * scale)) for v in box)


def decode_array(data: bytes, card: dict, *, name: str = "the file") -> Decoded:
    """The generic domain: one ``.npy`` array (no pickles) holding one model input."""
    shape = tuple((card.get("input") or {}).get("shape") or ())
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as exc:
        raise InputDataError(f"{name} is not a .npy array ({type(exc).__name__})") from None
    if shape and tuple(arr.shape) != shape:
        raise InputDataError(f"{name} has shape {tuple(arr.shape)} but the model takes {shape}")
    if not np.isfinite(arr).all():
        raise InputDataError(f"{name} contains NaN or infinity")
    return Decoded(torch.from_numpy(np.asarray(arr, dtype=np.float32)))


def decode_input(domain: str, data: bytes, card: dict, *, split: bool = False, name: str = "the file") -> list[Decoded]:
    """Bytes of one file of ``domain`` -> decoded inputs. Raises a ``FinePruneError`` subclass."""
    if domain == "voice":
        return decode_voice(data, card, split=split, name=name)
    if domain == "face":
        return [decode_face(data, card, name=name)]
    if domain == "generic":
        return [decode_array(data, card, name=name)]
    raise ConfigError(f"the Studio cannot record inputs for the {domain!r} domain")


def suffixes_of(domain: str) -> tuple[str, ...]:
    from fineprune.registry import get_domain

    return tuple(get_domain(domain).suffixes)


def label_from_name(name: str, classes: Sequence[str]) -> str | None:
    """``7_take2.wav`` -> ``"7"``, ``surprise_01.jpg`` -> ``"surprise"`` (case-insensitive); else None."""
    stem = PurePosixPath(name).name
    head = stem.split("_", 1)[0] if "_" in stem else PurePosixPath(stem).stem
    lookup = {c.lower(): c for c in classes}
    return lookup.get(head.lower())


def expand_uploads(files: Sequence[tuple[str, bytes]], suffixes: Sequence[str]) -> tuple[list[tuple[str, bytes]], list[tuple[str, str]]]:
    """Uploaded files -> ``(name, bytes)`` of usable files, zips opened in memory (nested folders ok).

    Returns ``(files, skipped)`` where ``skipped`` is ``[(name, reason)]``. Never extracts to disk.
    """
    wanted = tuple(s.lower() for s in suffixes)
    out: list[tuple[str, bytes]] = []
    skipped: list[tuple[str, str]] = []
    for name, data in files:
        if name.lower().endswith(".zip"):
            members, bad = _zip_members(name, data, wanted, MAX_UPLOAD_FILES - len(out))
            out.extend(members)
            skipped.extend(bad)
        elif name.lower().endswith(wanted):
            if len(out) >= MAX_UPLOAD_FILES:
                skipped.append((name, f"more than {MAX_UPLOAD_FILES} files in one upload"))
            else:
                out.append((name, data))
        else:
            skipped.append((name, f"not a {'/'.join(wanted)} file"))
    return out, skipped


def _zip_members(name: str, data: bytes, wanted: tuple[str, ...], room: int):
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except Exception as exc:
        return [], [(name, f"not a readable zip file ({type(exc).__name__})")]
    members, skipped, total = [], [], 0
    for info in infos:
        inner = f"{name}/{info.filename}"
        base = PurePosixPath(info.filename).name
        if info.is_dir() or base.startswith(".") or "__MACOSX" in info.filename:
            continue
        if not base.lower().endswith(wanted):
            skipped.append((inner, f"not a {'/'.join(wanted)} file"))
            continue
        if len(members) >= room:
            skipped.append((inner, f"more than {MAX_UPLOAD_FILES} files in one upload"))
            continue
        if info.file_size > MAX_MEMBER_BYTES or total + info.file_size > MAX_ZIP_BYTES:
            skipped.append((inner, f"too large ({info.file_size / 2**20:.0f} MB uncompressed)"))
            continue
        try:
            content = archive.read(info)
        except Exception as exc:
            skipped.append((inner, f"cannot be read from the zip ({type(exc).__name__})"))
            continue
        total += len(content)
        members.append((inner, content))
    return members, skipped


# --------------------------------------------------------------------------- recordings
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
    usable, problems = expand_uploads(files, suffixes_of(domain))
    added: list[Clip] = []
    for name, data in usable:
        try:
            decoded = decode_input(domain, data, card, split=split, name=PurePosixPath(name).name)
            named = label_from_name(name, recordings.classes) or label
            labels = [named] if len(decoded) == 1 else [None] * len(decoded)  # pieces of a take: unknown
            added.extend(recordings.add_many(decoded, labels=labels, source=f"{source}: {PurePosixPath(name).name}"))
        except FinePruneError as exc:
            problems.append((name, str(exc)))
    return added, problems


# --------------------------------------------------------------------------- demo individuals
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
    suffixes = suffixes_of(domain)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
    if per_label is not None:
        seen: dict[str | None, int] = {}
        kept = []
        for path in sorted(files, key=lambda p: _natural_key(p.name)):
            label = label_from_name(path.name, classes)
            if seen.get(label, 0) < per_label:
                seen[label] = seen.get(label, 0) + 1
                kept.append(path)
        files = sorted(kept)
    recordings = Recordings(classes, max_clips=max(MAX_CLIPS, len(files)))
    for i, path in enumerate(files):
        _check(cancel)
        if progress is not None:
            progress(i / max(1, len(files)), f"reading {name}'s clips ({i}/{len(files)})")
        try:
            decoded = decode_input(domain, path.read_bytes(), card, name=path.name)
        except FinePruneError:
            continue  # a shipped file the current model cannot use is simply left out
        recordings.add(decoded[0], label=label_from_name(path.name, classes), source=f"demo: {name}")
    if not len(recordings):
        raise InputDataError(f"the demo individual {name!r} has no usable {domain} files")
    return recordings


def _natural_key(name: str):
    import re

    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def demo_split(recordings: Recordings) -> SetSplit:
    """Half of each label's clips check, half adapt: a demo scores on as many clips as it adapts on."""
    counts = [n for label, n in recordings.counts().items() if label != "?" and n > 0]
    return recordings.split(check_per_label=max(1, min(counts) // 2) if counts else 0)


def pooled_inputs(recordings: Sequence[Recordings]) -> torch.Tensor | None:
    """All inputs of several individuals in one batch (the "general data" of a demo)."""
    rows = [c.features for r in recordings for c in r.clips]
    return torch.stack(rows).float() if rows else None


# --------------------------------------------------------------------------- job support
class Lease:
    """Keeps a job alive only while its owner keeps renewing it (a page polling its progress).

    When the browser tab closes, nothing polls any more; the job sees its cancel flag set once
    the lease expires and stops -- no zombie threads for sessions that went away.
    """

    def __init__(self, seconds: float):
        self.seconds = seconds
        self._last = time.monotonic()

    def renew(self) -> None:
        self._last = time.monotonic()

    @property
    def expired(self) -> bool:
        return time.monotonic() - self._last > self.seconds


class LeasedCancel:
    """Looks like ``threading.Event`` to the engine: set when cancelled *or* the lease expired."""

    def __init__(self, cancel: threading.Event, lease: Lease | None):
        self._cancel, self._lease = cancel, lease

    def is_set(self) -> bool:
        if self._lease is not None and self._lease.expired:
            self._cancel.set()
        return self._cancel.is_set()

    def set(self) -> None:
        self._cancel.set()


def leased(fn: Callable, lease: Lease | None) -> Callable:
    """Wrap a job function so the engine's cancel flag also trips when ``lease`` expires."""

    def run(*args, progress=None, cancel=None, **kwargs):
        return fn(*args, progress=progress, cancel=LeasedCancel(cancel or threading.Event(), lease), **kwargs)

    return run


def _check(cancel) -> None:
    if cancel is not None and cancel.is_set():
        raise JobCancelled("cancelled")


def scaled_progress(progress: Progress | None, lo: float, hi: float) -> Progress:
    """Map a step's progress 0..1 onto ``lo..hi`` of the whole job."""

    def report(fraction: float, stage: str) -> None:
        if progress is not None:
            progress(lo + (hi - lo) * min(1.0, max(0.0, fraction)), stage)

    return report


def layer_positions(model: nn.Module, example: torch.Tensor) -> dict[str, int]:
    """Output positions (time steps / pixels) per prunable layer for one input: MACs = weights x positions."""
    positions: dict[str, int] = {}
    handles = []
    for name, module in prunable_layers(model).items():
        def hook(mod, args, out, name=name):
            positions[name] = int(out[0, 0].numel()) if isinstance(mod, (nn.Conv1d, nn.Conv2d)) else int(out.shape[:-1].numel() // out.shape[0])
        handles.append(module.register_forward_hook(hook))
    try:
        with torch.inference_mode():
            model.eval()(example[:1])
    finally:
        for h in handles:
            h.remove()
    return positions


def compute_savings(report: dict, positions: dict[str, int]) -> dict:
    """Connections and multiply-add FLOPs (2 per MAC, per input) of the conv/linear layers removed
    by the masks. (Counted from shapes: ``torch.utils.flop_counter`` costs seconds on first use.)"""
    dense = removed = 0.0
    rows = []
    for row in report["layers"]:
        pos = positions.get(row["name"], 1)
        layer_dense = 2.0 * row["weights"] * pos
        layer_removed = 2.0 * row["pruned"] * pos
        dense += layer_dense
        removed += layer_removed
        rows.append({**row, "flops": layer_dense, "flops_removed": layer_removed})
    weights = sum(r["weights"] for r in report["layers"])
    pruned = sum(r["pruned"] for r in report["layers"])
    return {
        "connections": weights,
        "connections_removed": pruned,
        "layer_flops": dense,
        "flops_removed": removed,
        "layers": rows,
    }


def adaptation_notes(report: dict, classes: Sequence[str]) -> list[str]:
    """Plain sentences on what the label-free steps decided for this person (from a pruning report)."""
    notes = []
    if "same_capture" in report:
        limit = report["settings"]["same_capture_shift"]
        if report["same_capture"]:
            notes.append(f"Your data looks captured like the training data (capture shift {report['capture_shift']:.3f} "
                         f"< {limit:g}), so BatchNorm kept its general statistics and unused classes were dropped more readily.")
        else:
            notes.append(f"Your capture differs from the training data's (capture shift {report['capture_shift']:.3f} "
                         f">= {limit:g}), so BatchNorm was re-measured on your data.")
    dropped = report.get("dropped_classes")
    if dropped:
        names = ", ".join(str(classes[i]) if i < len(classes) else str(i) for i in dropped)
        notes.append(f"Classes the model hardly predicted on your clips were removed from its output: {names}.")
    elif dropped is not None:
        notes.append("Every class was predicted often enough on your clips; none was removed from the output.")
    return notes


@dataclass
class Personalization:
    """Everything the results, Explore and Export pages show about one fine-pruning run."""

    model_name: str
    individual: str
    classes: list[str]
    settings: PruneSettings
    result: PruneResult
    sweep: PruningSweep
    person: PersonData
    before: Evaluation | None  # None when the check set is empty
    after: Evaluation | None
    savings: dict
    general_energies: EnergyRecord | None
    seconds: float
    explored: dict[float, dict] = field(default_factory=dict)  # sparsity -> explore point (cache)

    def summary(self) -> dict:
        """Plain-JSON report (no recordings, no features)."""
        return {
            "model": self.model_name,
            "individual": self.individual,
            "classes": self.classes,
            "settings": self.settings.to_dict(),
            "n_adapt": len(self.person.adapt_ids),
            "n_check": len(self.person.check_ids),
            "accuracy_before": None if self.before is None else self.before.accuracy,
            "accuracy_after": None if self.after is None else self.after.accuracy,
            "per_class_before": None if self.before is None else self.before.per_class,
            "per_class_after": None if self.after is None else self.after.per_class,
            "confusion_before": None if self.before is None else self.before.confusion,
            "confusion_after": None if self.after is None else self.after.confusion,
            "sparsity": self.result.report["sparsity"],
            "sparsity_all_params": self.result.report["sparsity_all_params"],
            "parameters": self.result.report["parameters"],
            "parameters_nonzero": self.result.report["parameters_nonzero"],
            "connections": self.savings["connections"],
            "connections_removed": self.savings["connections_removed"],
            "flops_prunable_layers": self.savings["layer_flops"],
            "flops_removed": self.savings["flops_removed"],
            "layers": self.savings["layers"],
            "seconds": self.seconds,
        }


def personalize(
    model: nn.Module,
    person: PersonData,
    settings: PruneSettings,
    *,
    classes: Sequence[str],
    model_name: str = "",
    individual: str = "",
    general_x: torch.Tensor | None = None,
    progress: Progress | None = None,
    cancel=None,
) -> Personalization:
    """The Fine-prune page's job: prune a copy of ``model`` on the adaptation inputs, score the
    check set before and after, and record general-data energies for the comparison heatmap.

    ``model`` is never modified (the sweep deep-copies it, and the before-score runs on a copy,
    so a shared cached model never even has hooks attached).
    """
    start = time.perf_counter()
    if len(person.adapt_x) == 0:
        raise InputDataError("the adaptation set is empty: record or choose some clips first")
    report = scaled_progress(progress, 0.0, 1.0)
    report(0.0, "copying the general model")
    general = copy.deepcopy(model).eval()
    n_classes = len(classes)
    has_check = len(person.check_x) > 0
    before = evaluate(general, person.check_x, person.check_y, n_classes) if has_check else None
    _check(cancel)
    sweep = PruningSweep(general, person.adapt_x, settings, progress=scaled_progress(progress, 0.05, 0.6), cancel=cancel)
    result = sweep.result_at(settings.sparsity, progress=scaled_progress(progress, 0.6, 0.8))
    _check(cancel)
    report(0.82, "measuring accuracy on your check set")
    after = evaluate(result.model, person.check_x, person.check_y, n_classes) if has_check else None
    general_energies = None
    if general_x is not None and len(general_x):
        _check(cancel)
        general_energies = record_energy(
            sweep.base, general_x, batch_size=settings.batch_size, progress=scaled_progress(progress, 0.85, 0.97), cancel=cancel
        )
    report(0.98, "counting the connections and FLOPs removed")
    example = person.adapt_x[:1]
    savings = compute_savings(result.report, layer_positions(copy.deepcopy(general), example))
    _check(cancel)
    sweep.cancel = None  # the sweep outlives the job (Explore page); its lease must not cancel it later
    report(1.0, "done")
    return Personalization(
        model_name, individual, list(classes), settings, result, sweep, person, before, after, savings,
        general_energies, time.perf_counter() - start,
    )


def explore_point(run: Personalization, sparsity: float) -> dict:
    """Accuracy and per-layer sparsity at ``sparsity`` from the run's sweep (cached per sparsity)."""
    key = round(float(sparsity), 4)
    if key not in run.explored:
        result = run.sweep.result_at(key, progress=lambda *_: None)
        acc = evaluate(result.model, run.person.check_x, run.person.check_y, len(run.classes)).accuracy if len(run.person.check_x) else float("nan")
        run.explored[key] = {
            "sparsity_target": key,
            "sparsity": result.report["sparsity"],
            "accuracy": acc,
            "layers": [dict(r) for r in result.report["layers"]],
        }
    return run.explored[key]


def compare_criteria(
    model: nn.Module,
    person: PersonData,
    settings: PruneSettings,
    *,
    criteria: Sequence[str],
    sparsities: Sequence[float],
    general_x: torch.Tensor | None = None,
    progress: Progress | None = None,
    cancel=None,
) -> list[dict]:
    """Accuracy vs sparsity for each criterion (and the general-data control) via the shared harness."""
    from fineprune.bench.harness import Individual, sparsity_curve

    if len(person.check_x) == 0:
        raise InputDataError("the check set is empty: criteria can only be compared on labelled check clips")
    model = copy.deepcopy(model).eval()  # a private copy: a shared model never sees this job's hooks
    individual = Individual("me", person.adapt_x, person.check_x, person.check_y)
    runs: list[tuple[str, tuple[str, ...], torch.Tensor | None]] = [(c, (c,), None) for c in criteria]
    if general_x is not None:
        runs.append(("general_energy", (), general_x))
    rows: list[dict] = []
    for i, (label, chosen, general) in enumerate(runs):
        _check(cancel)
        scaled_progress(progress, 0, 1)(i / len(runs), f"criterion {label}: {len(sparsities)} sparsities")
        rows.extend(sparsity_curve(model, individual, sparsities, criteria=chosen, settings=settings, general_x=general, cancel=cancel))
    scaled_progress(progress, 0, 1)(1.0, "done")
    return rows


BASELINE_METHODS = ("general", "fineprune", "bn_adapt", "prior_em", "svd", "magnitude", "random", "general_energy", "backprop")


def compare_baselines(
    model: nn.Module,
    person: PersonData,
    settings: PruneSettings,
    *,
    methods: Sequence[str] = BASELINE_METHODS,
    general_x: torch.Tensor | None = None,
    backprop_epochs: int = 15,
    progress: Progress | None = None,
    cancel=None,
) -> list[dict]:
    """Every method of ``fineprune.bench.harness.compare_methods`` on this person, one at a time.

    Backprop (the only method that reads labels) trains on the labelled adaptation clips only.
    """
    from fineprune.bench.harness import USES_LABELS, Individual, compare_methods

    if len(person.check_x) == 0:
        raise InputDataError("the check set is empty: methods can only be compared on labelled check clips")
    model = copy.deepcopy(model).eval()  # a private copy: a shared model never sees this job's hooks
    labelled = person.adapt_y != UNLABELED
    individual = Individual("me", person.adapt_x, person.check_x, person.check_y)
    labelled_individual = Individual(
        "me", person.adapt_x[labelled], person.check_x, person.check_y, adapt_y=person.adapt_y[labelled]
    )
    rows: list[dict] = []
    for i, method in enumerate(methods):
        _check(cancel)
        scaled_progress(progress, 0, 1)(i / len(methods), f"running {method}")
        who = labelled_individual if method in USES_LABELS else individual
        if method in USES_LABELS and len(who.adapt_x) < 2:
            continue
        rows.extend(
            compare_methods(
                model, who, settings=settings, general_x=general_x, methods=[method],
                backprop_kwargs={"epochs": backprop_epochs, "cancel": cancel}, cancel=cancel,
            )
        )
    scaled_progress(progress, 0, 1)(1.0, "done")
    return rows
