"""Saved projects (fineprune.person.project): a session's clips, labels, split, settings and result
summary as one zip of JSON and .npy files, read back exactly, and bad files refused with a message."""
from __future__ import annotations

import io
import json
import pickle
import zipfile

import numpy as np
import pytest
import torch

from fineprune.domains import Decoded
from fineprune.engine.pipeline import settings_for
from fineprune.person.project import MANIFEST, ModelPart, ProjectError, load_project, results_line, save_project
from fineprune.person.recordings import Recordings

CLASSES = ["a", "b", "c"]


def part(n: int = 5, shape=(1, 8, 6), name: str = "voice") -> ModelPart:
    rec = Recordings(CLASSES)
    torch.manual_seed(0)
    for i in range(n):
        rec.add(Decoded(torch.randn(*shape)), label=[None, "a", "b", "c"][i % 4], source=f"upload: {i}.wav")
    rec.set_use(rec.clips[0].id, "adapt")
    rec.set_use(rec.clips[1].id, "skip")
    return ModelPart(name, "voice", CLASSES, rec, {"check_per_label": 2, "max_adapt_per_label": 7})


def rewrite(data: bytes, change) -> bytes:
    """The same project with its manifest changed by ``change(manifest)`` (members kept)."""
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            if info.filename == MANIFEST:
                manifest = json.loads(src.read(info))
                change(manifest)
                dst.writestr(MANIFEST, json.dumps(manifest))
            else:
                dst.writestr(info.filename, src.read(info))
    return out.getvalue()


def test_round_trip_keeps_clips_labels_uses_split_settings_and_results():
    original = part()
    settings = settings_for(None, sparsity=0.7, criterion="energy").to_dict()
    results = {"model": "voice", "individual": "My recordings", "accuracy_before": 0.5, "accuracy_after": 0.75,
               "sparsity": 0.7}
    data = save_project([original], settings={"voice": settings}, results=results)
    assert data[:2] == b"PK"
    with zipfile.ZipFile(io.BytesIO(data)) as archive:  # plain data only: JSON and .npy, no pickle anywhere
        assert sorted({n.rsplit(".", 1)[-1] for n in archive.namelist()}) == ["json", "npy"]
    project = load_project(data)
    loaded = project.parts["voice"]
    assert loaded.classes == CLASSES and loaded.domain == "voice" and loaded.split == original.split
    assert [c.label for c in loaded.recordings.clips] == [c.label for c in original.recordings.clips]
    assert [c.use for c in loaded.recordings.clips] == [c.use for c in original.recordings.clips]
    for a, b in zip(loaded.recordings.clips, original.recordings.clips):
        assert torch.equal(a.features, b.features) and a.features.dtype == torch.float32
        assert a.source.startswith(b.source) and a.source.endswith("(project)")
    assert loaded.recordings.split(2, 7) == original.recordings.split(2, 7)
    assert project.settings == {"voice": settings} and project.results == results and project.saved_at
    assert "50% → 75%" in results_line(project.results) and results_line(None) == ""
    # saved twice, opened twice: the same
    again = load_project(save_project([loaded], settings=project.settings, results=project.results))
    assert [c.label for c in again.parts["voice"].recordings.clips] == [c.label for c in loaded.recordings.clips]


def test_empty_project_and_several_models():
    project = load_project(save_project([part(2), part(3, shape=(1, 4, 4), name="face")]))
    assert set(project.parts) == {"voice", "face"} and len(project.parts["face"].recordings) == 3
    assert load_project(save_project([])).parts == {}


def bad_projects():
    good = save_project([part()], settings={"voice": settings_for(None).to_dict()})

    def with_member(name, content):
        src = zipfile.ZipFile(io.BytesIO(good))
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as dst:
            for info in src.infolist():
                dst.writestr(info.filename, content if info.filename == name else src.read(info))
        return out.getvalue()

    pickled = io.BytesIO()
    np.save(pickled, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    nan = io.BytesIO()
    np.save(nan, np.full((1, 8, 6), np.nan, np.float32))
    other_shape = io.BytesIO()
    np.save(other_shape, np.zeros((1, 8, 7), np.float32))
    ints = io.BytesIO()
    np.save(ints, np.zeros((1, 8, 6), np.int64))
    return {
        "not a zip": (b"hello, not a project", "not a zip"),
        "a pickle": (pickle.dumps({"clips": []}), "not a zip"),
        "no manifest": (_zip({"other.json": "{}"}), "project.json is missing"),
        "manifest not JSON": (_zip({MANIFEST: "{nope"}), "cannot be read"),
        "another format": (rewrite(good, lambda m: m.update(format="something-else")), "unknown format"),
        "a future version": (rewrite(good, lambda m: m.update(version=99)), "another version"),
        "a label not a class": (rewrite(good, lambda m: m["models"]["voice"]["clips"][1].update(label="zebra")), "zebra"),
        "a bad use": (rewrite(good, lambda m: m["models"]["voice"]["clips"][1].update(use="everything")), "damaged"),
        "a missing array": (rewrite(good, lambda m: m["models"]["voice"]["clips"][1].update(array="clips/x.npy")), "missing"),
        "an object array (pickle)": (with_member("clips/voice/0.npy", pickled.getvalue()), "not a plain array"),
        "NaN values": (with_member("clips/voice/0.npy", nan.getvalue()), "does not hold a model input"),
        "integer values": (with_member("clips/voice/0.npy", ints.getvalue()), "does not hold a model input"),
        "mixed shapes": (with_member("clips/voice/1.npy", other_shape.getvalue()), "different shapes"),
        "bad settings": (rewrite(good, lambda m: m["settings"]["voice"].update(sparsity=3.0)), "settings"),
        "unknown settings": (rewrite(good, lambda m: m["settings"]["voice"].update(warp=1)), "settings"),
        "too many clips": (rewrite(good, lambda m: m["models"]["voice"].update(clips=m["models"]["voice"]["clips"] * 70)),
                           "at most"),
        "no classes": (rewrite(good, lambda m: m["models"]["voice"].update(classes=[])), "damaged"),
        "a strange model name": (rewrite(good, lambda m: m.update(models={"../x": m["models"]["voice"]})), "damaged"),
    }


def _zip(members: dict[str, str]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name, content in members.items():
            z.writestr(name, content)
    return out.getvalue()


@pytest.mark.parametrize("case", list(bad_projects()))
def test_bad_files_are_refused_with_a_clear_message(case):
    data, expected = bad_projects()[case]
    with pytest.raises(ProjectError) as caught:
        load_project(data)
    assert expected in str(caught.value), str(caught.value)
