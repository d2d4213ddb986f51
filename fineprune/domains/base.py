"""What every input domain is: bytes of one file -> model inputs, with one decoder shared by the
command line and the Studio.

A domain implements ``decode_bytes`` (one file's bytes -> one or more ``Decoded`` inputs, or a
specific ``InputDataError``). ``load_files`` is a loop over it: the CLI, the benchmarks and the
Studio all decode a file the same way, whether it came from a folder, an upload or a microphone.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Sequence

import torch

from fineprune.errors import FinePruneError, InputDataError

MAX_FILE_BYTES = 64 * 2**20  # a file larger than this is refused before it is read (memory bound)


@dataclass
class Decoded:
    """One model input decoded from bytes. Domains subclass it to keep what the Studio shows
    (a waveform, a face crop, a photo); the engine only ever reads ``features``."""

    features: torch.Tensor  # one model input (the card's input shape, no batch dimension)
    notes: list[str] = field(default_factory=list)  # things worth telling the user (e.g. "2 faces, used the largest")


@dataclass
class LoadedInputs:
    """Inputs decoded from files; files that could not be used are listed with the reason."""

    x: torch.Tensor
    paths: list[Path]
    skipped: list[tuple[Path, str]]


def label_from_name(name: str, classes: Sequence[str], aliases: dict[str, str] | None = None) -> str | None:
    """The one file-name label rule: the name up to the first ``_`` (or the whole stem when there
    is none), matched case-insensitively against ``classes`` or against ``aliases`` (other names
    of a class, e.g. an ImageNet synset id -> its class name).

    ``7_take2.wav`` -> ``"7"``, ``Surprise_01.jpg`` -> ``"surprise"``; ``None`` when nothing matches.
    """
    stem = PurePosixPath(name).name
    head = (stem.split("_", 1)[0] if "_" in stem else PurePosixPath(stem).stem).lower()
    lookup = {c.lower(): c for c in classes}
    if head in lookup:
        return lookup[head]
    return {a.lower(): c for a, c in (aliases or {}).items()}.get(head)


def named(message: str, name: str) -> str:
    """Put the file's name into a decoder's message ("the audio is empty" -> "7_a.wav is empty")."""
    generic = ("the audio", "the clip", "the recording", "the image", "the photo", "the file")
    if name in generic or name in message:
        return message
    for g in generic:
        if message.startswith(g):
            return name + message[len(g):]
    return f"{name}: {message}"


class Domain:
    """One modality. Subclasses set ``name``, ``title``, ``suffixes`` and implement ``decode_bytes``
    and ``input_shape``; ``trainer`` names the module whose ``train_main`` trains its general model."""

    name: str = ""
    title: str = ""  # what the Studio calls it ("Voice")
    suffixes: tuple[str, ...] = ()  # file suffixes it reads, lower case, with the dot
    trainer: str | None = None  # "package.module" with ``train_main(argv)``, for ``python -m fineprune train NAME``
    splits_takes: bool = False  # whether ``decode_bytes(split=True)`` can cut one file into several inputs
    max_file_bytes: int = MAX_FILE_BYTES

    def decode_bytes(self, data: bytes, card: dict, *, name: str = "the file", split: bool = False) -> list[Decoded]:
        """Bytes of one file -> its inputs (one, or several for a split take). Raises ``InputDataError``."""
        raise NotImplementedError

    def input_shape(self, card: dict) -> tuple[int, ...]:
        """The shape of one model input (no batch dimension)."""
        raise NotImplementedError

    def read(self, path: Path) -> bytes:
        """A file's bytes, refusing unreadable and oversized files before reading them (an empty file
        reaches ``decode_bytes``, which names the domain's own error)."""
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise InputDataError(f"{path.name} cannot be read ({exc.strerror})") from None
        if size > self.max_file_bytes:
            raise InputDataError(f"{path.name} is {size / 2**20:.0f} MB; at most {self.max_file_bytes // 2**20} MB is accepted")
        return path.read_bytes()

    def load_files(self, paths: Sequence[Path], card: dict) -> LoadedInputs:
        """Decode files into one batch; an unusable file goes to ``skipped`` with the reason (never raises for one file)."""
        rows, used, skipped = [], [], []
        for path in map(Path, paths):
            try:
                rows.append(self.decode_bytes(self.read(path), card, name=path.name)[0].features)
                used.append(path)
            except FinePruneError as exc:
                skipped.append((path, str(exc)))
        x = torch.stack(rows).float() if rows else torch.empty((0, *self.input_shape(card)))
        return LoadedInputs(x, used, skipped)
