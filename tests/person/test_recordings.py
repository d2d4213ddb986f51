"""A person's recordings (fineprune.person.recordings): clips, labels, the adaptation/check split,
the clip cap, file-name labels, uploads (zips opened in memory) and ``ingest_files``, which turns
uploads into clips through the domain's decoder. No UI; the generic domain (.npy arrays) stands in
for audio and photos."""
from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
import torch

from fineprune.domains import Decoded, label_from_name
from fineprune.errors import ConfigError, RecordingLimitError
from fineprune.person.recordings import UNLABELED, Recordings, ingest_files
from fineprune.person.uploads import expand_uploads

ARRAY_CARD = {"domain": "generic", "classes": ["a", "b"], "input": {"shape": [1, 4, 4]}}


def decoded(value: float = 0.0) -> Decoded:
    return Decoded(torch.full((1, 4, 4), value))


def npy(value: float, shape=(1, 4, 4)) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.full(shape, value, np.float32))
    return buffer.getvalue()


def zip_of(members: dict[str, bytes]) -> bytes:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return archive.getvalue()


def test_split_respects_use_labels_and_caps():
    rec = Recordings(["a", "b"])
    clips = [rec.add(decoded(i), label=lab) for i, lab in enumerate(["a", "a", "a", "b", "b", None])]
    split = rec.split(check_per_label=1)
    assert split.check == [clips[0].id, clips[3].id]
    assert split.adapt == [clips[1].id, clips[2].id, clips[4].id, clips[5].id]
    assert set(split.adapt).isdisjoint(split.check)
    assert rec.split(check_per_label=1, max_adapt_per_label=1).adapt == [clips[1].id, clips[4].id, clips[5].id]
    rec.set_use(clips[2].id, "check")
    rec.set_use(clips[5].id, "skip")
    split = rec.split(check_per_label=0)
    assert split.check == [clips[2].id] and clips[5].id not in split.adapt
    rec.set_use(clips[2].id, "auto")
    data = rec.person_data(rec.split(check_per_label=1))
    assert data.adapt_x.shape == (len(data.adapt_ids), 1, 4, 4)
    assert data.adapt_x[:, 0, 0, 0].tolist() == [1.0, 2.0, 4.0]  # the clips' own features, in recording order
    assert data.check_y.tolist() == [0, 1]
    assert data.adapt_y.tolist() == [0, 0, 1]
    lone = rec.add(decoded(), label="b")
    rec.delete(clips[4].id)
    rec.delete(clips[3].id)  # "b" now has a single clip: it adapts, even with check_per_label=5
    assert lone.id in rec.split(check_per_label=5).adapt
    with pytest.raises(ConfigError):
        rec.relabel(clips[0].id, "zebra")
    with pytest.raises(ConfigError):
        rec.split(check_per_label=-1)


def test_unlabeled_clips_only_adapt_and_carry_no_label():
    rec = Recordings(["a"])
    rec.add_many([decoded(1), decoded(2)])
    rec.set_use(rec.clips[0].id, "check")  # no label to score with: it adapts all the same
    split = rec.split(check_per_label=1)
    assert split.check == [] and split.adapt == [c.id for c in rec.clips]
    assert rec.person_data(split).adapt_y.tolist() == [UNLABELED, UNLABELED]
    rec.set_use(rec.clips[1].id, "skip")
    split = rec.split(check_per_label=1)
    assert rec.person_data(split).adapt_y.tolist() == [UNLABELED]
    assert rec.counts() == {"a": 0, "?": 2}


def test_recordings_cap_and_all_or_nothing_takes():
    rec = Recordings(["a"], max_clips=3)
    rec.add(decoded(), label="a")
    with pytest.raises(RecordingLimitError, match="room for 2"):
        rec.add_many([decoded()] * 3)
    assert len(rec) == 1  # nothing half-added
    rec.add_many([decoded()] * 2)
    with pytest.raises(RecordingLimitError):
        rec.add(decoded())


def test_label_from_name_and_zip_expansion_in_memory():
    classes = ["0", "7", "happy"]
    assert label_from_name("7_take.wav", classes) == "7"
    assert label_from_name("dir/HAPPY_01.jpg", classes) == "happy"
    assert label_from_name("happy.jpg", classes) == "happy"
    assert label_from_name("take.wav", classes) is None
    archive = zip_of({"a/b/c/7_x.wav": b"1", "__MACOSX/._7_x.wav": b"junk", "readme.md": b"x"})
    files, skipped = expand_uploads([("in.zip", archive), ("0_y.WAV", b"2"), ("z.zip", b"not a zip")], (".wav",))
    assert files == [("in.zip/a/b/c/7_x.wav", b"1"), ("0_y.WAV", b"2")]
    assert {n for n, _ in skipped} == {"in.zip/readme.md", "z.zip"}


def test_zip_members_over_the_size_cap_are_skipped(monkeypatch):
    monkeypatch.setattr("fineprune.person.uploads.MAX_MEMBER_BYTES", 10)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("big.wav", b"\0" * 1000)  # compresses to a few bytes: the cap reads the declared size
    files, skipped = expand_uploads([("a.zip", archive.getvalue())], (".wav",))
    assert files == [] and "too large" in skipped[0][1]


def test_ingest_labels_by_name_keeps_the_good_files_and_reports_the_rest():
    rec = Recordings(ARRAY_CARD["classes"])
    files = [("a_1.npy", npy(1.0)), ("take.npy", npy(2.0)), ("wrong_shape.npy", npy(3.0, (2, 2))),
             ("notes.txt", b"hello"), ("more.zip", zip_of({"x/b_2.npy": npy(4.0), "x/broken.npy": b"garbage"}))]
    added, problems = ingest_files(rec, "generic", ARRAY_CARD, files, label="b", source="upload")
    assert [(c.label, c.source, float(c.features.flatten()[0])) for c in added] == [
        ("a", "upload: a_1.npy", 1.0), ("b", "upload: take.npy", 2.0), ("b", "upload: b_2.npy", 4.0)]  # no name label: "b" given
    assert rec.clips == added
    reasons = dict(problems)
    assert set(reasons) == {"notes.txt", "wrong_shape.npy", "more.zip/x/broken.npy"}
    assert "shape" in reasons["wrong_shape.npy"] and "not a .npy array" in reasons["more.zip/x/broken.npy"]


def test_ingest_into_a_full_session_reports_every_file_left_out():
    rec = Recordings(["a", "b"], max_clips=1)
    added, problems = ingest_files(rec, "generic", ARRAY_CARD, [("a_1.npy", npy(1.0)), ("b_2.npy", npy(2.0))])
    assert [c.label for c in added] == ["a"] and len(rec) == 1
    assert [name for name, _ in problems] == ["b_2.npy"] and "at most 1 clips" in problems[0][1]
