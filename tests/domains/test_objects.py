"""The ``objects`` domain: photo decoding for the 1000-class ImageNet model, and its card."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from fineprune.domains.base import label_from_name
from fineprune.domains.objects import DOMAIN, OBJECTS_INPUT, ObjectPhoto, load_card, open_rgb
from fineprune.errors import ImageTooLargeError, ImageTooSmallError, UnreadableImageError
from fineprune.paths import SHARED_DATA

CARD = {"input": OBJECTS_INPUT}


def encode(img: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` over a few bytes of data (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def two_colour(width: int = 300, height: int = 200) -> np.ndarray:
    """Left half red, right half blue."""
    arr = np.zeros((height, width, 3), np.uint8)
    arr[:, : width // 2, 0] = 255
    arr[:, width // 2 :, 2] = 255
    return arr


def test_decodes_to_the_model_input():
    photo = DOMAIN.decode_bytes(encode(Image.fromarray(two_colour()), "JPEG", quality=95), CARD)[0]
    assert isinstance(photo, ObjectPhoto)
    assert photo.features.shape == (3, 224, 224) == DOMAIN.input_shape(CARD)
    assert photo.features.dtype == torch.float32
    assert -1.0 <= float(photo.features.min()) and float(photo.features.max()) <= 1.0
    red = photo.features[:, 112, 20]  # left of the centre crop: red
    assert red[0] > 0.9 and red[2] < -0.9
    assert photo.preview.dtype == np.uint8 and photo.preview.shape[2] == 3 and max(photo.preview.shape[:2]) <= 192
    assert photo.crop.shape == (224, 224, 3)
    left, top, right, bottom = photo.crop_box  # short side 200 -> 256: crop spans 224/384 of the width
    assert top == pytest.approx(16 / 256, abs=0.01) and right - left == pytest.approx(224 / 384, abs=0.01)


def test_png_and_webp_give_the_same_input():
    img = Image.fromarray(two_colour())
    png = DOMAIN.decode_bytes(encode(img, "PNG"), CARD)[0].features
    webp = DOMAIN.decode_bytes(encode(img, "WEBP", lossless=True), CARD)[0].features
    assert torch.allclose(png, webp)


def test_exif_rotation_is_applied():
    stored = Image.fromarray(np.ascontiguousarray(np.rot90(two_colour(), 1)))  # stored sideways: 200x300
    exif = stored.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to view"
    img = open_rgb(encode(stored, "JPEG", quality=95, exif=exif.tobytes()))
    assert img.size == (300, 200)
    arr = np.asarray(img)
    assert arr[100, 20, 0] > 200 and arr[100, 280, 2] > 200  # red left, blue right again


def test_transparency_goes_onto_white():
    rgba = np.zeros((100, 100, 4), np.uint8)  # fully transparent black
    arr = np.asarray(open_rgb(encode(Image.fromarray(rgba, "RGBA"))))
    assert arr.shape == (100, 100, 3) and arr.min() == 255


def test_grayscale_becomes_three_equal_channels():
    gray = np.tile(np.arange(100, dtype=np.uint8)[None, :], (80, 1))
    x = DOMAIN.decode_bytes(encode(Image.fromarray(gray, "L")), CARD)[0].features
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])


def test_sixteen_bit_is_scaled_not_clipped():
    arr16 = np.full((64, 64), 32896, np.uint16)  # half of 65535
    img = Image.fromarray(arr16)  # mode I;16
    assert img.mode.startswith("I;16")
    arr = np.asarray(open_rgb(encode(img)))
    assert abs(int(arr[0, 0, 0]) - 128) <= 1


def test_huge_photo_is_refused_before_decoding():
    with pytest.raises(ImageTooLargeError, match="megapixels|decompression"):
        DOMAIN.decode_bytes(png_header_only(20000, 20000), CARD)


def test_tiny_photo_is_too_small():
    with pytest.raises(ImageTooSmallError, match="at least 32x32"):
        DOMAIN.decode_bytes(encode(Image.new("RGB", (20, 200))), CARD, name="tiny.png")


@pytest.mark.parametrize("data", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40])
def test_not_an_image(data):
    with pytest.raises(UnreadableImageError):
        DOMAIN.decode_bytes(data, CARD, name="x.jpg")


def test_truncated_jpeg():
    data = encode(Image.fromarray(two_colour()), "JPEG")
    with pytest.raises(UnreadableImageError, match="x.jpg"):
        DOMAIN.decode_bytes(data[: len(data) // 3], CARD, name="x.jpg")


def test_card_names_1000_classes_and_synsets():
    card = load_card()
    assert card["domain"] == "objects" and len(card["classes"]) == 1000 == len(set(c.lower() for c in card["classes"]))
    aliases = card["class_aliases"]
    assert label_from_name("n02088364_001.jpg", card["classes"], aliases) == "beagle"
    assert label_from_name("golf-ball_3.png", card["classes"], aliases) == "golf ball"
    assert label_from_name("tench_1.jpg", card["classes"], aliases) == "tench"
    assert card["classes"][701] == "parachute"
    assert card["input"]["size"] == 224 and card["license"].startswith("Apache-2.0")


def test_load_model_objects_has_1000_classes():
    from fineprune.registry import load_model

    try:
        bundle = load_model("objects")
    except Exception as exc:  # until the registry names it
        pytest.skip(f"registry has no 'objects' yet ({exc})")
    assert len(bundle.classes) == 1000 and bundle.domain == "objects"
    out = bundle.model(torch.zeros(1, 3, 224, 224))
    assert out.shape == (1, 1000)


@pytest.mark.data
@pytest.mark.skipif(not (SHARED_DATA / "imagenet" / "imagewoof").exists(), reason="needs ../shared/data/imagenet")
def test_a_real_photo_is_recognised():
    from fineprune.domains.objects import load_objects_model

    bundle = load_objects_model()
    folder = SHARED_DATA / "imagenet" / "imagewoof" / "val50" / "n02088364"  # beagle
    x = torch.stack([DOMAIN.decode_bytes(p.read_bytes(), bundle.card)[0].features for p in sorted(folder.iterdir())[:8]])
    with torch.no_grad():
        top5 = bundle.model(x).topk(5, dim=1).indices
    assert (top5 == 162).any(1).float().mean() >= 0.75
