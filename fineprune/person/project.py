"""Saved projects: a person's session as one file they download and open again later (as Teachable
Machine's projects), built and read in memory -- nothing is written on the server.

The file is a zip of plain data, never a pickle:

- ``project.json``: ``format``/``version``, the time it was saved, per model its ``domain``,
  ``classes``, the adaptation/check ``split`` choice and its clips (``label``, ``use``, ``source``,
  the ``.npy`` member holding the decoded input), the pruning ``settings`` per model, and the last
  run's ``results`` summary (numbers only);
- ``clips/<model>/<n>.npy``: each clip's decoded model input (float32), read back with
  ``numpy.load(allow_pickle=False)``.

``load_project`` checks everything before anything is used (a zip, the manifest, its format and
version, sizes, every array's dtype, shape and values, labels against the classes, settings against
``PruneSettings``) and refuses a bad file with a ``ProjectError`` that says what is wrong.
"""
from __future__ import annotations

import io
import json
import math
import re
import time
import zipfile
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from fineprune.domains import Decoded
from fineprune.engine.pipeline import settings_for
from fineprune.errors import FinePruneError, InputDataError
from fineprune.person.recordings import MAX_CLIPS, USES, Recordings

FORMAT = "fineprune-studio-project"
VERSION = 1
MANIFEST = "project.json"
MAX_PROJECT_BYTES = 300 * 2**20  # uncompressed, all members together (an objects session: 300 x 0.6 MB)
MAX_MEMBER_BYTES = 8 * 2**20  # one clip's array
MAX_MANIFEST_BYTES = 4 * 2**20
MAX_MODELS = 16
_NAME = re.compile(r"^[A-Za-z0-9_.:+-]{1,80}$")


class ProjectError(InputDataError):
    """A project file cannot be opened (not a project, damaged, from another version, or its clips
    do not fit this installation's models)."""


@dataclass
class ModelPart:
    """One model's share of a project: its clips and how they are split."""

    name: str
    domain: str
    classes: list[str]
    recordings: Recordings
    split: dict = field(default_factory=lambda: {"check_per_label": 1, "max_adapt_per_label": 20})


@dataclass
class Project:
    parts: dict[str, ModelPart]
    settings: dict[str, dict] = field(default_factory=dict)  # model name -> PruneSettings.to_dict()
    results: dict | None = None  # the last run's summary (plain JSON)
    saved_at: str = ""


def save_project(parts: Sequence[ModelPart], *, settings: dict[str, dict] | None = None,
                 results: dict | None = None) -> bytes:
    """The project file's bytes (a zip built in memory)."""
    manifest = {"format": FORMAT, "version": VERSION, "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "models": {}, "settings": dict(settings or {}), "results": results}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for part in parts:
            clips = []
            for n, clip in enumerate(part.recordings.clips):
                member = f"clips/{part.name}/{n}.npy"
                array = io.BytesIO()
                np.save(array, clip.features.detach().cpu().float().numpy(), allow_pickle=False)
                archive.writestr(member, array.getvalue())
                clips.append({"label": clip.label, "use": clip.use, "source": clip.source, "array": member})
            manifest["models"][part.name] = {"domain": part.domain, "classes": list(part.classes),
                                             "split": dict(part.split), "clips": clips}
        archive.writestr(MANIFEST, json.dumps(manifest, indent=1, allow_nan=True))
    return buffer.getvalue()


def load_project(data: bytes) -> Project:
    """Read and check a project file. Raises ``ProjectError`` with a clear message on a bad file."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = {info.filename: info for info in archive.infolist()}
    except Exception:
        raise ProjectError("this is not a Fine-Pruning Studio project file (not a zip archive)") from None
    if MANIFEST not in infos:
        raise ProjectError(f"this is not a Fine-Pruning Studio project file ({MANIFEST} is missing)")
    if sum(i.file_size for i in infos.values()) > MAX_PROJECT_BYTES:
        raise ProjectError(f"the project is too large (more than {MAX_PROJECT_BYTES // 2**20} MB unpacked)")
    if infos[MANIFEST].file_size > MAX_MANIFEST_BYTES:
        raise ProjectError("the project's description is too large")
    manifest = _read_json(archive, infos[MANIFEST])
    if manifest.get("format") != FORMAT:
        raise ProjectError("this is not a Fine-Pruning Studio project file (unknown format)")
    version = manifest.get("version")
    if not isinstance(version, int) or version > VERSION or version < 1:
        raise ProjectError(f"the project was saved by another version of the Studio (file version {version!r}, "
                           f"this Studio reads version {VERSION})")
    models = manifest.get("models")
    if not isinstance(models, dict) or len(models) > MAX_MODELS:
        raise ProjectError("the project's list of models is damaged")
    parts = {name: _read_part(archive, infos, name, entry) for name, entry in models.items()}
    settings = manifest.get("settings") or {}
    if not isinstance(settings, dict):
        raise ProjectError("the project's settings are damaged")
    checked = {}
    for name, values in settings.items():
        try:
            if not isinstance(values, dict):
                raise TypeError
            checked[str(name)] = settings_for(None, **values).to_dict()
        except (FinePruneError, TypeError, ValueError) as exc:
            raise ProjectError(f"the project's pruning settings for {name!r} cannot be used ({exc})") from None
    results = manifest.get("results")
    if results is not None and not isinstance(results, dict):
        raise ProjectError("the project's results are damaged")
    return Project(parts, checked, results, str(manifest.get("saved_at", "")))


def _read_json(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> dict:
    try:
        value = json.loads(archive.read(info).decode("utf-8"))
    except Exception:
        raise ProjectError(f"the project file is damaged ({info.filename} cannot be read)") from None
    if not isinstance(value, dict):
        raise ProjectError(f"the project file is damaged ({info.filename} is not a description)")
    return value


def _read_part(archive: zipfile.ZipFile, infos: dict, name, entry) -> ModelPart:
    if not isinstance(name, str) or not _NAME.match(name) or not isinstance(entry, dict):
        raise ProjectError("the project's list of models is damaged")
    domain, classes, clips = entry.get("domain"), entry.get("classes"), entry.get("clips")
    if not isinstance(domain, str) or not isinstance(classes, list) or not all(isinstance(c, str) for c in classes) \
            or not classes or not isinstance(clips, list):
        raise ProjectError(f"the project's entry for the {name} model is damaged")
    if len(clips) > MAX_CLIPS:
        raise ProjectError(f"the project holds {len(clips)} clips for the {name} model; a session keeps at most {MAX_CLIPS}")
    split = entry.get("split") or {}
    try:
        split = {"check_per_label": int(split.get("check_per_label", 1)),
                 "max_adapt_per_label": int(split.get("max_adapt_per_label", 20))}
    except (TypeError, ValueError, AttributeError):
        raise ProjectError(f"the project's split for the {name} model is damaged") from None
    if not 0 <= split["check_per_label"] <= 200 or not 1 <= split["max_adapt_per_label"] <= 1000:
        raise ProjectError(f"the project's split for the {name} model is out of range")
    recordings = Recordings(classes)
    shape = None
    for n, clip in enumerate(clips, 1):
        if not isinstance(clip, dict):
            raise ProjectError(f"clip {n} of the {name} model is damaged")
        member = clip.get("array")
        info = infos.get(member) if isinstance(member, str) else None
        if info is None:
            raise ProjectError(f"clip {n} of the {name} model is missing from the file")
        if info.file_size > MAX_MEMBER_BYTES:
            raise ProjectError(f"clip {n} of the {name} model is too large")
        try:
            array = np.load(io.BytesIO(archive.read(info)), allow_pickle=False)
        except Exception:
            raise ProjectError(f"clip {n} of the {name} model is not a plain array (damaged, or not saved by the Studio)") from None
        if array.dtype.kind != "f" or not 1 <= array.ndim <= 4 or array.size == 0 or not np.isfinite(array).all():
            raise ProjectError(f"clip {n} of the {name} model does not hold a model input")
        if shape is None:
            shape = array.shape
        elif array.shape != shape:
            raise ProjectError(f"the clips of the {name} model have different shapes ({shape} and {array.shape})")
        label, use, source = clip.get("label"), clip.get("use", "auto"), clip.get("source", "project")
        if label is not None and label not in classes:
            raise ProjectError(f"clip {n} of the {name} model is labelled {label!r}, which is not one of its classes")
        if use not in USES or not isinstance(source, str):
            raise ProjectError(f"clip {n} of the {name} model is damaged")
        recordings.add(Decoded(torch.from_numpy(array.astype(np.float32))), label=label,
                       source=source[:120] + ("" if "(project)" in source else " (project)"), use=use)
    return ModelPart(name, domain, list(classes), recordings, split)


def results_line(results: dict | None) -> str:
    """One sentence on a saved run's summary, for the page that opens the project."""
    if not results:
        return ""
    def pct(v):
        return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * float(v):.0f}%"
    return (f"Saved result: the {results.get('model', '?')} model for {results.get('individual', '?')}, "
            f"accuracy {pct(results.get('accuracy_before'))} → {pct(results.get('accuracy_after'))} at "
            f"{pct(results.get('sparsity'))} of the weights pruned.")
