"""Face pipeline: decoding (formats, EXIF, bit depths, bombs), Haar detection on faces the tests
draw themselves, cropping, the train/camera normalisation, the Domain, and the shipped model."""
from __future__ import annotations

import io
import json
import math
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from fineprune.errors import (
    ImageError,
    ImageTooLargeError,
    ImageTooSmallError,
    NoFaceError,
    UnreadableImageError,
)
from fineprune.domains.face import DOMAIN as FACE_DOMAIN
from fineprune.domains.face import (
    FACE_INPUT,
    crop_face,
    crops_to_tensor,
    decode_image,
    detect_faces,
    extract_face,
    normalise_crops,
    prepare_crops,
)

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data" / "fer2013"
HAS_FER = (DATA / "fer2013_48.npz").exists()


def draw_face(size: int = 240, face: float = 1.0, centre: tuple[int, int] | None = None, canvas=None) -> np.ndarray:
    """A blurred cartoon face (light oval, dark eyes/brows/mouth) that OpenCV's Haar cascade
    detects. ``face`` scales it relative to a 240 px reference; drawn onto ``canvas`` if given."""
    img = np.full((size, size), 90, np.uint8) if canvas is None else canvas
    cx, cy = centre or (img.shape[1] // 2, img.shape[0] // 2)
    s = face * size / 240 if canvas is None else face

    def p(x, y):
        return int(cx + x * s), int(cy + y * s)

    def a(u, v):
        return max(1, int(u * s)), max(1, int(v * s))

    layer = img.copy()
    cv2.ellipse(layer, p(0, 0), a(70, 92), 0, 0, 360, 200, -1)
    for side in (-1, 1):
        cv2.ellipse(layer, p(side * 28, -22), a(16, 8), 0, 0, 360, 40, -1)
        cv2.ellipse(layer, p(side * 28, -42), a(20, 5), 0, 0, 360, 70, -1)
    cv2.ellipse(layer, p(0, 10), a(8, 16), 0, 0, 360, 170, -1)
    cv2.ellipse(layer, p(0, 45), a(26, 8), 0, 0, 360, 60, -1)
    blurred = cv2.GaussianBlur(layer, (0, 0), max(0.8, 3 * s))
    # only blur around the drawn face so other faces on the canvas stay sharp
    x0, y0 = p(-110, -130)
    x1, y1 = p(110, 130)
    x0, y0 = max(0, x0), max(0, y0)
    img[y0:y1, x0:x1] = blurred[y0:y1, x0:x1]
    return img


def encode(arr: np.ndarray, fmt: str, mode: str | None = None, **kw) -> bytes:
    buf = io.BytesIO()
    img = Image.fromarray(arr) if mode is None else Image.fromarray(arr).convert(mode)
    img.save(buf, fmt, **kw)
    return buf.getvalue()


FACE = draw_face(240)


def test_synthetic_face_is_detected_and_cropped():
    result = extract_face(encode(FACE, "PNG"))
    assert result.n_faces == 1
    assert result.crop.shape == (48, 48) and result.crop.dtype == np.uint8
    x, y, w, h = result.box
    # the drawn oval is centred at (120, 120) and ~140 px wide
    assert abs(x + w / 2 - 120) < 15 and abs(y + h / 2 - 120) < 20 and 90 < w < 220
    assert result.image_size == (240, 240)
    t = result.tensor()
    assert t.shape == (1, 1, 48, 48) and t.dtype == torch.float32


@pytest.mark.parametrize(
    "fmt,mode,kw",
    [
        ("JPEG", "RGB", {"quality": 85}),
        ("JPEG", "L", {}),
        ("WEBP", "RGB", {"quality": 80}),
        ("PNG", "RGBA", {}),
        ("PNG", "P", {}),
        ("PNG", "LA", {}),
        ("BMP", "RGB", {}),
    ],
)
def test_formats_and_modes_decode_to_the_same_face(fmt, mode, kw):
    result = extract_face(encode(FACE, fmt, mode, **kw))
    assert result.n_faces == 1
    reference = extract_face(encode(FACE, "PNG"))
    # lossy formats shift the box by a few pixels at most
    assert np.allclose(result.box, reference.box, atol=12)


def test_16bit_png_is_scaled_not_clipped():
    face16 = FACE.astype(np.uint16) * 257
    buf = io.BytesIO()
    Image.fromarray(face16).save(buf, "PNG")  # mode I;16
    gray = decode_image(buf.getvalue())
    assert gray.dtype == np.uint8
    assert np.abs(gray.astype(int) - FACE.astype(int)).max() <= 1
    assert extract_face(buf.getvalue()).n_faces == 1


def test_transparent_background_goes_white_not_black():
    rgba = np.zeros((240, 240, 4), np.uint8)
    rgba[..., :3] = FACE[..., None]
    rgba[..., 3] = 255
    rgba[:20, :20, 3] = 0  # fully transparent corner, black RGB underneath
    gray = decode_image(encode(rgba, "PNG"))
    assert gray[5, 5] == 255 and gray[120, 120] == FACE[120, 120]


def test_exif_orientation_is_applied():
    # the camera stored the picture sideways and says so in EXIF (orientation 6: rotate 90 CW)
    upright = np.full((240, 320), 90, np.uint8)
    draw_face(canvas=upright, face=1.0, centre=(160, 120))
    stored = np.ascontiguousarray(np.rot90(upright, 1))  # 320 tall, 240 wide, face sideways
    assert detect_faces(stored) == []  # sideways, the cascade does not see it
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    Image.fromarray(stored).save(buf, "JPEG", exif=exif, quality=92)
    result = extract_face(buf.getvalue())
    assert result.n_faces == 1
    assert result.image_size == (320, 240)
    x, y, w, h = result.box
    assert abs(x + w / 2 - 160) < 15


def test_path_and_file_object_inputs(tmp_path):
    path = tmp_path / "me.png"
    path.write_bytes(encode(FACE, "PNG"))
    assert extract_face(path).n_faces == 1
    assert extract_face(str(path)).n_faces == 1
    with open(path, "rb") as fh:
        assert extract_face(fh).n_faces == 1
    assert extract_face(np.stack([FACE] * 3, -1)).n_faces == 1  # decoded RGB array


@pytest.mark.parametrize("payload", [b"", b"hello, not an image", b"\x89PNG\r\n\x1a\n" + b"\0" * 40])
def test_unreadable_bytes(payload):
    with pytest.raises(UnreadableImageError):
        extract_face(payload)


def test_truncated_jpeg_is_unreadable():
    data = encode(FACE, "JPEG")
    with pytest.raises(UnreadableImageError):
        extract_face(data[: len(data) // 3])


def test_missing_file_is_unreadable(tmp_path):
    with pytest.raises(UnreadableImageError, match="does not exist"):
        extract_face(tmp_path / "nope.jpg")


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height but holds almost no data (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [9000, 30000, 100000])
def test_huge_images_are_refused_before_decoding(side):
    with pytest.raises(ImageTooLargeError, match="megapixels|decompression"):
        extract_face(png_header_only(side, side))


def test_tiny_image_is_too_small():
    with pytest.raises(ImageTooSmallError, match="at least"):
        extract_face(encode(np.full((16, 40), 128, np.uint8), "PNG"))


@pytest.mark.parametrize(
    "image",
    [np.full((200, 300), 128, np.uint8), np.random.default_rng(0).integers(0, 256, (240, 320), dtype=np.uint8)],
    ids=["flat", "noise"],
)
def test_no_face_has_a_helpful_hint(image):
    with pytest.raises(NoFaceError) as info:
        extract_face(encode(image, "PNG"))
    message = str(info.value)
    assert "lit" in message and "arm's length" in message and "facing the camera" in message


def test_several_faces_use_the_largest():
    canvas = np.full((400, 640), 90, np.uint8)
    draw_face(canvas=canvas, face=1.2, centre=(170, 200))
    draw_face(canvas=canvas, face=0.7, centre=(480, 200))
    result = extract_face(encode(canvas, "PNG"))
    assert result.n_faces == 2
    x, y, w, h = result.box
    assert abs(x + w / 2 - 170) < 20
    assert any("largest" in note for note in result.notes)


def test_big_photo_with_a_small_face_is_downscaled_and_found():
    canvas = np.full((3000, 4000), 90, np.uint8)
    draw_face(canvas=canvas, face=2.5, centre=(2600, 1100))  # ~350 px face in a 12 MP photo
    data = encode(canvas, "JPEG", quality=90)
    result = extract_face(data)
    x, y, w, h = result.box
    assert result.n_faces == 1
    assert abs(x + w / 2 - 2600) < 60 and abs(y + h / 2 - 1100) < 80
    assert result.image_size == (4000, 3000)


def test_small_image_is_upscaled_for_detection():
    small = cv2.resize(FACE, (64, 64), interpolation=cv2.INTER_AREA)
    assert extract_face(encode(small, "PNG")).n_faces == 1


def test_crop_margin_and_border_padding():
    gray = np.arange(100 * 100, dtype=np.int64).reshape(100, 100) % 251
    gray = gray.astype(np.uint8)
    # a box touching the corner: the crop is padded by repeating the border, never fails
    crop = crop_face(gray, (0, 0, 30, 30), margin=0.5)
    assert crop.shape == (48, 48)
    # margin 0 on a 48 px box is the box itself
    assert np.array_equal(crop_face(gray, (10, 20, 48, 48), margin=0.0), gray[20:68, 10:58])


def test_training_and_camera_normalisation_are_one_function():
    rng = np.random.default_rng(1)
    crops = rng.integers(20, 120, (5, 48, 48), dtype=np.uint8)  # dim, low-contrast faces
    x = normalise_crops(crops)
    assert x.shape == (5, 1, 48, 48)
    assert torch.equal(x, crops_to_tensor(prepare_crops(crops)))
    # equalisation spreads every crop over the full range: ~zero mean, ~unit std
    assert abs(float(x.mean())) < 0.1 and 0.9 < float(x.std()) < 1.1
    # nothing is blurred (the FER2013 train split is sharp): a checkerboard stays a checkerboard
    sharp = np.tile((np.indices((48, 48)).sum(0) % 2 * 255).astype(np.uint8), (2, 1, 1))
    assert "blur_sigma" not in FACE_INPUT
    assert prepare_crops(sharp).std() > 100
    assert np.array_equal(prepare_crops(sharp, {**FACE_INPUT, "equalize_hist": False}), sharp)
    # the camera path = detect, crop, then the very same normalisation
    result = extract_face(encode(FACE, "PNG"))
    gray = decode_image(encode(FACE, "PNG"))
    raw = crop_face(gray, result.box, FACE_INPUT["face_margin"])
    assert torch.equal(result.tensor(), normalise_crops(raw[None]))


def test_domain_loads_good_files_and_lists_the_rest(tmp_path):
    (tmp_path / "happy_1.jpg").write_bytes(encode(FACE, "JPEG"))
    (tmp_path / "sad_2.png").write_bytes(encode(np.fliplr(FACE).copy(), "PNG"))
    (tmp_path / "wall.png").write_bytes(encode(np.full((200, 200), 128, np.uint8), "PNG"))
    (tmp_path / "notes.jpg").write_bytes(b"not an image")
    paths = sorted(tmp_path.iterdir())
    loaded = FACE_DOMAIN.load_files(paths, {"domain": "face", "input": FACE_INPUT})
    assert loaded.x.shape == (2, 1, 48, 48)
    assert [p.name for p in loaded.paths] == ["happy_1.jpg", "sad_2.png"]
    reasons = dict((p.name, r) for p, r in loaded.skipped)
    assert set(reasons) == {"wall.png", "notes.jpg"}
    assert "no face" in reasons["wall.png"] and "not an image" in reasons["notes.jpg"]
    assert FACE_DOMAIN.name == "face" and ".jpg" in FACE_DOMAIN.suffixes and ".webp" in FACE_DOMAIN.suffixes


def test_domain_with_no_usable_file_returns_an_empty_batch(tmp_path):
    (tmp_path / "a.png").write_bytes(b"junk")
    loaded = FACE_DOMAIN.load_files([tmp_path / "a.png"], {})
    assert loaded.x.shape == (0, 1, 48, 48) and len(loaded.skipped) == 1


def test_errors_are_image_errors():
    for cls in (UnreadableImageError, ImageTooLargeError, ImageTooSmallError, NoFaceError):
        assert issubclass(cls, ImageError)


# ----------------------------------------------------------------------------- shipped model

SHIPPED = ROOT / "assets" / "face.pt"


@pytest.mark.skipif(not SHIPPED.exists(), reason="assets/face.pt not trained yet")
def test_shipped_model_loads_safely_and_has_a_complete_card():
    from fineprune.engine.bundle import load_bundle

    payload = torch.load(SHIPPED, map_location="cpu", weights_only=True)  # must not need pickle
    assert payload["card"]["domain"] == "face"
    bundle = load_bundle(SHIPPED)
    card = json.loads((ROOT / "assets" / "face.json").read_text())
    assert card == bundle.card
    assert bundle.classes == ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
    for key in ("size", "equalize_hist", "scale", "mean", "std", "face_margin"):
        assert card["input"][key] == FACE_INPUT[key]
    assert "blur_sigma" not in card["input"]  # the train split is sharp: no input is blurred
    assert "python -m fineprune train face" in card["training"]["command"]
    # (the card's accuracy figures are checked against its own confusion matrix below, with or without the weights)
    logits = bundle.model(extract_face(encode(FACE, "PNG")).tensor(card["input"]))
    assert logits.shape == (1, 7)


@pytest.mark.skipif(not SHIPPED.with_suffix(".json").exists(), reason="assets/face.json not written yet")
def test_shipped_card_accuracy_is_what_its_test_confusion_matrix_says():
    """The card's test accuracy and per-class accuracies are the ones its confusion matrix (rows:
    true class) gives over the whole FER2013 test split, rounded as training writes them."""
    card = json.loads(SHIPPED.with_suffix(".json").read_text())
    confusion = np.asarray(card["test_confusion"])
    assert confusion.shape == (7, 7) and confusion.sum() == 7178  # PublicTest + PrivateTest
    assert card["test_accuracy"] == pytest.approx(np.trace(confusion) / confusion.sum(), abs=5e-5)
    per_class = np.diag(confusion) / confusion.sum(1)
    assert list(card["test_per_class"]) == card["classes"]
    assert list(card["test_per_class"].values()) == pytest.approx(per_class.tolist(), abs=5e-5)
    curve = card["training"]["val_accuracy_per_epoch"]
    assert len(curve) == math.ceil(card["training"]["epochs_run"])
    # the kept weights' validation accuracy: the best epoch's, or their average's when that beat it
    # (--epochs 0 re-selects an earlier run's weights: no curve of its own)
    selected = card["training"]["selected_val_accuracy"]
    if curve:
        averaged = card["training"]["selection"].startswith("average")
        assert selected > max(curve) if averaged else selected == max(curve)
    # ... as the shipped network computes it: with mirror averaging only where validation chose it
    mirror = card["training"]["mirror_average"]
    assert mirror["val_single_view"] == selected
    assert mirror["kept"] == (mirror["val_mirror_average"] > mirror["val_single_view"])
    assert card["val_accuracy"] == (mirror["val_mirror_average"] if mirror["kept"] else selected)
    assert f"{100 * card['test_accuracy']:.1f}%" in card["summary"]  # what `fineprune info` shows


@pytest.mark.skipif(not (SHIPPED.exists() and HAS_FER), reason="needs assets/face.pt and ../shared/data/fer2013")
def test_shipped_model_meets_its_stated_test_accuracy():
    from fineprune.engine.bundle import load_bundle
    from fineprune.engine.evaluation import accuracy
    from fineprune.domains.face_training import load_fer2013

    bundle = load_bundle(SHIPPED)
    data = load_fer2013(DATA)
    x = normalise_crops(data["x_test"], bundle.card["input"])
    y = torch.from_numpy(data["y_test"].astype(np.int64))
    measured = accuracy(bundle.model, x, y)
    assert measured == pytest.approx(bundle.card["test_accuracy"], abs=0.002)


@pytest.mark.skipif(not HAS_FER, reason="needs ../shared/data/fer2013")
def test_training_command_is_seeded_and_reproducible(tmp_path):
    from fineprune.engine.bundle import load_bundle
    from fineprune.domains.face_training import train_main

    argv = ["--data", str(DATA), "--epochs", "1", "--limit", "192", "--seed", "3", "--threads", "1"]
    assert train_main(argv + ["--out", str(tmp_path / "a.pt")]) == 0
    assert train_main(argv + ["--out", str(tmp_path / "b.pt")]) == 0
    a, b = load_bundle(tmp_path / "a.pt"), load_bundle(tmp_path / "b.pt")
    for (name, pa), (_, pb) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(pa, pb), name
    card = json.loads((tmp_path / "a.json").read_text())
    assert card["domain"] == "face" and card["training"]["seed"] == 3
    assert card["training"]["epochs_run"] == 1 and card["training"]["steps"] == 3  # 192 crops, batch 64
    assert "blur_sigma" not in card["input"] and card["input"]["face_margin"] == FACE_INPUT["face_margin"]


@pytest.mark.skipif(not HAS_FER, reason="needs ../shared/data/fer2013")
def test_camera_crop_frames_a_face_like_fer2013():
    """A FER2013 crop seen by the camera path (scaled up, set in a plain canvas, detected, cut
    with the shipped margin) comes back framed like the original: the margin is the one the
    cascade's boxes imply, and the re-cut crop correlates with the original better than with a
    10% margin (the value used before the box was measured unclipped)."""
    from fineprune.domains.face import fer_framing
    from fineprune.domains.face_training import load_fer2013

    x = load_fer2013(DATA)["x_test"]
    sample = x[np.random.default_rng(0).choice(len(x), 60, replace=False)]
    framing = fer_framing(sample)
    assert framing["n_detected"] >= 40
    assert abs(framing["implied_margin_per_side"] - FACE_INPUT["face_margin"]) < 0.03
    assert abs(framing["box_centre_x_median"] - 0.5) < 0.03 and abs(framing["box_centre_y_median"] - 0.5) < 0.03
    wider = fer_framing(sample, 0.1)
    assert framing["recrop_correlation_median"] > 0.6 > wider["recrop_correlation_median"]


# ----------------------------------------------------------------------------- benchmark pieces


def test_capture_condition_is_consistent_and_changes_the_image():
    from fineprune.bench.face_people import apply_condition, capture_condition

    crops = np.stack([draw_face(48), np.fliplr(draw_face(48)).copy()])
    cond = capture_condition(np.random.default_rng(0))
    a = apply_condition(crops, cond, np.random.default_rng(1))
    b = apply_condition(crops, cond, np.random.default_rng(1))
    assert a.shape == crops.shape and a.dtype == np.uint8
    assert np.array_equal(a, b)  # seeded
    assert np.abs(a.astype(int) - crops.astype(int)).mean() > 3  # it is a real change of camera


def test_class_subset_individuals_are_disjoint_and_show_k_classes():
    from fineprune.bench.face_people import class_subset_individuals

    y = np.repeat(np.arange(7), 100)
    y[:30] = 1  # a rare class, like "disgust"
    people = class_subset_individuals(y, 2, 10, 20, np.random.default_rng(0))
    assert [p[1] for p in people] == [2, 2, 3, 3, 4, 4]
    for name, k, classes, adapt, test in people:
        assert not set(adapt) & set(test)
        assert set(y[adapt]) == set(classes) == set(y[test]) and len(classes) == k


def test_plot_is_written(tmp_path):
    from fineprune.bench.tables import plot_lines

    pytest.importorskip("matplotlib")
    ok = plot_lines(tmp_path / "p.png", {"a": [(0.5, 0.6), (0.8, 0.55)], "general": [(0.5, 0.5), (0.8, float("nan"))]}, "t", "x", "y")
    assert ok and (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(not HAS_FER, reason="needs ../shared/data/fer2013")
def test_warm_restart_keeps_the_earlier_record_and_averaging_is_judged_on_validation(tmp_path):
    from fineprune.domains.face_training import train_main

    argv = ["--data", str(DATA), "--limit", "192", "--seed", "3", "--threads", "1"]
    assert train_main(argv + ["--epochs", "1", "--out", str(tmp_path / "first.pt")]) == 0
    assert train_main(argv + ["--epochs", "2", "--init", str(tmp_path / "first.pt"), "--lr", "0.0005", "--average-last", "2",
                              "--out", str(tmp_path / "again.pt")]) == 0
    card = json.loads((tmp_path / "again.json").read_text())
    record = card["training"]
    assert record["warm_start"]["from"] == str(tmp_path / "first.pt") and record["warm_start"]["epochs_run"] == 1
    assert "lr 0.0005" in record["optimizer"] and "warm-restarted" in card["summary"]
    assert "averaged_last_val_accuracy" in record
    # the averaged weights are kept only when they beat the best single epoch on the validation split
    best_single = max(record["val_accuracy_per_epoch"])
    assert record["selection"].startswith("average") == (record["averaged_last_val_accuracy"] > best_single)
    from fineprune.errors import ConfigError

    with pytest.raises(ConfigError, match="not a bundle of the shipped face architecture"):
        from fineprune.engine.bundle import save_bundle
        from fineprune.engine.models import build_model

        other = {"arch": "vgg", "conv": [8, "M"], "in_channels": 1, "n_classes": 7, "dims": 2, "fc": [], "batch_norm": True}
        save_bundle(tmp_path / "other.pt", build_model(other), other, {"domain": "face"})
        train_main(argv + ["--epochs", "1", "--init", str(tmp_path / "other.pt"), "--out", str(tmp_path / "x.pt")])
