"""The Objects page (views/objects.py) in AppTest: choose the kinds of things you will show, take
photos with the camera or upload them, and fine-prune the 1000-class model on them. A tiny random
stand-in of the objects model keeps it fast (tests/domains/test_objects.py tests the real one)."""
from __future__ import annotations

import io
import zipfile

import pytest

import app_fixtures as fx

from studio_driver import open_app, state, studio_environment, wait_for_job


@pytest.fixture(scope="module")
def objects_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("objects")
    fx.make_objects_bundle(root / "objects.pt")
    with studio_environment(f"objects={root / 'objects.pt'}", root / "no-demos"):
        yield root


def objects_page():
    return open_app("objects")


def assert_clean(at):
    assert not at.exception and not at.error, [e.value for e in [*at.exception, *at.error]]


def test_camera_prompts_cycle_over_the_chosen_kinds(objects_env):
    at = objects_page()
    assert_clean(at)
    assert any("Choose the kinds" in i.value for i in at.info)  # no prompt before kinds are chosen
    at.multiselect[0].set_value(["coffee mug", "remote control"]).run()
    prompt = state(at).prompts["objects"][0]
    assert prompt in ("coffee mug", "remote control")
    at.camera_input[0].upload("photo.jpg", fx.object_photo(0, 1)).run()
    assert_clean(at)
    (clip,) = state(at).recordings["objects"].clips
    assert clip.label == prompt and clip.features.shape == (3, 32, 32)
    assert clip.decoded.crop.shape == (32, 32, 3) and clip.decoded.preview.shape[2] == 3
    at.switch_page("views/home.py").run()
    at.switch_page("views/objects.py").run()
    assert at.multiselect[0].value == ["coffee mug", "remote control"]  # the kinds survive a visit elsewhere


def test_uploads_are_labelled_by_class_name_or_synset_and_bad_files_are_reported(objects_env):
    at = objects_page()
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("me/coffee-mug_1.jpg", fx.object_photo(0, 2))
        z.writestr("me/n04074963_1.png", fx.object_photo(1, 3, "PNG"))  # remote control's synset
        z.writestr("me/holiday.jpg", fx.object_photo(2, 4))  # no label: fine for adaptation
        z.writestr("me/broken.jpg", b"not a photo")
    at.file_uploader[0].upload("things.zip", archive.getvalue(), "application/zip").run()
    assert_clean(at)
    labels = sorted(str(c.label) for c in state(at).recordings["objects"].clips)
    assert labels == ["None", "coffee mug", "remote control"]
    assert any("broken.jpg" in w.value for w in at.warning)


def test_fine_prune_my_things(objects_env):
    at = objects_page()
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        for k in range(8):
            z.writestr(f"coffee-mug_{k}.jpg", fx.object_photo(0, 10 + k))
            z.writestr(f"remote-control_{k}.jpg", fx.object_photo(1, 30 + k))
    at.file_uploader[0].upload("things.zip", archive.getvalue(), "application/zip").run()
    assert len(state(at).recordings["objects"]) == 16
    at = at.switch_page("views/fine_prune.py").run()
    assert at.radio(key="individual_objects").value == "My recordings"
    at.button(key="fp_run").click().run()
    wait_for_job(at)
    assert_clean(at)
    run = state(at).run
    assert run.model_name == "objects" and len(run.classes) == 1000
    assert len(run.person.check_ids) == 2 and len(run.person.adapt_ids) == 14  # one check photo per kind
    assert run.result.report["sparsity"] > 0.3
    from studio.figures import confusion_figure

    shown = list(confusion_figure(run.before.confusion, run.classes, "before").data[0].x)
    said = {run.classes[int(y)] for y in run.person.check_y}
    assert said <= set(shown) and len(shown) <= 4  # the kinds shown and the answers given, not 1000 classes
