"""Photos -> 48x48 face crops for the expression model (the ``face`` domain).

Pipeline for any photo a browser or phone produces (JPEG/PNG/WebP/BMP/GIF, RGB/RGBA/palette/
grayscale/16-bit, tiny to 8000x8000 px):

1. decode with Pillow, refusing anything over ``MAX_PIXELS`` *before* decoding (decompression
   bombs), apply the EXIF orientation, flatten transparency onto white, convert to 8-bit gray
   (16-bit images are scaled, not clipped);
2. detect faces with OpenCV's bundled Haar cascade on a copy scaled to at most
   ``DETECT_MAX_SIDE`` px (small images are scaled up so a small face still spans the cascade's
   24 px window); keep the largest face;
3. crop a square around the face with ``face_margin`` of the box side added on every side,
   padding by edge replication at the image border, resize to 48x48;
4. normalise exactly as at training time: histogram equalisation, then (x/255 - 0.5) / 0.29.

How training and camera time match (``fer_framing``; ``bench face`` writes it to
docs/results/face_crop_calibration.csv): FER2013 crops are already faces. The same Haar cascade
run on FER2013 test crops scaled to 192 px *and set in a plain canvas* (so the detector is free
to return a box as large as the face) finds the box at a median 0.96 of the crop width, centred;
a 2% margin per side therefore reproduces FER2013's framing, and a FER2013 crop put through the
camera path comes back as nearly the same image. (Run on the bare crop, the cascade cannot
return a box larger than the image: it found 0.83 and missed a third of the faces, which is why
a 10% margin -- webcam faces framed ~20% wider than FER2013's -- was used until 2026-12-01.)
Both sides then go through the same ``normalise_crops`` (equalisation + scaling), so contrast
matches too: the training code calls it on the FER2013 arrays, the camera path on the crop.

The FER2013 train split once supplied in ../shared/data was Gaussian-blurred and every sharp
input was blurred to match; the split is sharp now and nothing is blurred.
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import cv2
import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from fineprune.domains.base import Decoded, Domain, named
from fineprune.errors import FinePruneError, ImageError, ImageTooLargeError, ImageTooSmallError, NoFaceError, UnreadableImageError

# How a 48x48 grayscale face crop becomes the model input -- identical at training time
# (FER2013 crops) and at camera time (Haar crop resized to 48x48): histogram equalisation, then
# (x/255 - mean) / std. After equalisation pixels are ~uniform on [0, 255], hence 0.5/0.29.
# ``face_margin``: see ``fer_framing``. A model card's "input" overrides these defaults.
FACE_INPUT: dict[str, Any] = {
    "size": 48,
    "grayscale": True,
    "equalize_hist": True,
    "scale": 1 / 255,
    "mean": 0.5,
    "std": 0.29,
    "detector": "opencv haarcascade_frontalface_default.xml, largest face",
    "face_margin": 0.02,
}

MAX_PIXELS = 8000 * 8000  # refuse larger images before decoding them (decompression bombs)
DECODE_MAX_SIDE = 2000  # JPEGs are decoded at a reduced scale (draft) down to about this size
DETECT_MAX_SIDE = 640  # detection runs on a copy no larger than this
DETECT_MIN_SIDE = 240  # ... and no smaller, so small faces still cover the 24 px cascade window
MIN_IMAGE_SIDE = 24  # below this no face can be found (the cascade's window is 24x24)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")

NO_FACE_HINT = (
    "Try again facing the camera directly, with your face well lit from the front "
    "(no strong backlight), about an arm's length away, and not cut off by the frame."
)


# ----------------------------------------------------------------------------- decoding


def decode_image(source: bytes | str | Path | BinaryIO) -> np.ndarray:
    """Decode a photo into an 8-bit grayscale array (H, W), upright per its EXIF orientation.

    Big JPEGs come back at a reduced scale (at least ``DECODE_MAX_SIDE`` px on the long side).
    Raises ``UnreadableImageError`` (not an image / truncated), ``ImageTooLargeError`` (more than
    ``MAX_PIXELS``), ``ImageTooSmallError`` (a side under ``MIN_IMAGE_SIDE`` px).
    """
    return _decode(source)[0]


def _decode(source: bytes | str | Path | BinaryIO) -> tuple[np.ndarray, tuple[int, int]]:
    """(gray, (width, height) of the full-resolution upright photo)."""
    name = Path(source).name if isinstance(source, (str, Path)) else "the image"  # the CLI adds the folder
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise UnreadableImageError("the image is empty (0 bytes)")
        source = io.BytesIO(bytes(source))
    elif isinstance(source, (str, Path)) and Path(source).is_file() and Path(source).stat().st_size == 0:
        raise UnreadableImageError(f"{name} is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(source)
            width, height = img.size
            if width * height > MAX_PIXELS:
                raise ImageTooLargeError(
                    f"{name} is {width}x{height} px ({width * height / 1e6:.0f} megapixels); the limit is "
                    f"{MAX_PIXELS / 1e6:.0f} megapixels. Please use a smaller photo."
                )
            if img.format == "JPEG":
                # decode at 1/2, 1/4 or 1/8 scale when that still leaves >= DECODE_MAX_SIDE px
                img.draft("RGB", (DECODE_MAX_SIDE, DECODE_MAX_SIDE))
            if img.getexif().get(0x0112) in (5, 6, 7, 8):  # EXIF says: a quarter turn to upright
                width, height = height, width
            img.load()
            img = ImageOps.exif_transpose(img)
            gray = _to_gray8(img)
    except ImageError:
        raise
    except FileNotFoundError:
        raise UnreadableImageError(f"{name} does not exist") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageTooLargeError(f"{name} declares an enormous size (a decompression bomb?) and was refused") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        kind = "truncated or damaged" if isinstance(source, io.BytesIO) or "truncated" in str(exc) else "not readable"
        raise UnreadableImageError(
            f"{name} is not an image we can read ({kind}: JPEG, PNG, WebP, BMP or GIF expected)"
        ) from None
    h, w = gray.shape
    if min(h, w) < MIN_IMAGE_SIDE:
        raise ImageTooSmallError(
            f"{name} is only {w}x{h} px; a face needs at least {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE} px"
        )
    return gray, (width, height)


def _to_gray8(img: Image.Image) -> np.ndarray:
    """Any Pillow mode -> uint8 gray. Transparency goes onto white; 16/32-bit is rescaled."""
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        if img.mode.startswith("I;16"):
            arr = arr / 257.0  # 0..65535 -> 0..255
        else:  # 32-bit int or float: no fixed range, stretch what is there
            lo, hi = float(arr.min()), float(arr.max())
            arr = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        return np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return np.asarray(img.convert("L"), dtype=np.uint8).copy()


# ----------------------------------------------------------------------------- detection

_CASCADE: cv2.CascadeClassifier | None = None


def _cascade() -> cv2.CascadeClassifier:
    global _CASCADE
    if _CASCADE is None:
        path = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
        cascade = cv2.CascadeClassifier(str(path))
        if cascade.empty():
            raise RuntimeError(f"OpenCV's Haar cascade is missing at {path}")
        _CASCADE = cascade
    return _CASCADE


def detect_faces(gray: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Face boxes (x, y, w, h) in ``gray``'s coordinates, largest first."""
    h, w = gray.shape
    scale = min(1.0, DETECT_MAX_SIDE / max(h, w))
    if max(h, w) * scale < DETECT_MIN_SIDE:
        scale = DETECT_MIN_SIDE / max(h, w)
    small = gray if scale == 1.0 else cv2.resize(
        gray, (max(1, round(w * scale)), max(1, round(h * scale))),
        interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
    )
    found = _cascade().detectMultiScale(small, scaleFactor=1.1, minNeighbors=5, minSize=(24, 24))
    if not len(found):
        # second chance for dim or low-contrast photos: local (CLAHE) equalisation. Not global
        # equalisation: on a small face in a flat background it washes the face out.
        boosted = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(small)
        found = _cascade().detectMultiScale(boosted, scaleFactor=1.1, minNeighbors=5, minSize=(24, 24))
    boxes = [tuple(int(round(v / scale)) for v in box) for box in (found if len(found) else [])]
    return sorted(boxes, key=lambda b: b[2] * b[3], reverse=True)


def crop_face(gray: np.ndarray, box: tuple[int, int, int, int], margin: float, size: int = 48) -> np.ndarray:
    """Square crop around ``box`` with ``margin`` x side added on each side, resized to size x size.

    Parts outside the image are filled by repeating the border pixels.
    """
    x, y, w, h = box
    side = max(w, h) * (1 + 2 * margin)
    cx, cy = x + w / 2, y + h / 2
    x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    x1, y1 = x0 + int(round(side)), y0 + int(round(side))
    H, W = gray.shape
    pad = max(0, -x0, -y0, x1 - W, y1 - H)
    if pad:
        gray = cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        x0, y0, x1, y1 = x0 + pad, y0 + pad, x1 + pad, y1 + pad
    crop = gray[y0:y1, x0:x1]
    interp = cv2.INTER_AREA if crop.shape[0] > size else cv2.INTER_CUBIC
    return cv2.resize(crop, (size, size), interpolation=interp)


# ----------------------------------------------------------------------------- normalisation


def prepare_crops(crops: np.ndarray, settings: dict | None = None) -> np.ndarray:
    """(N, 48, 48) uint8 -> the uint8 image the model sees: histogram-equalised."""
    s = settings or FACE_INPUT
    crops = np.asarray(crops, dtype=np.uint8)
    if s.get("equalize_hist", True) and len(crops):
        crops = np.stack([cv2.equalizeHist(np.ascontiguousarray(c)) for c in crops])
    return crops


def crops_to_tensor(prepared: np.ndarray, settings: dict | None = None) -> torch.Tensor:
    """Prepared uint8 crops (N, 48, 48) -> (N, 1, 48, 48) float tensor."""
    s = settings or FACE_INPUT
    x = torch.from_numpy(np.asarray(prepared, dtype=np.float32) * float(s["scale"]))
    return ((x - float(s["mean"])) / float(s["std"])).reshape(len(prepared), 1, *np.shape(prepared)[1:])


def normalise_crops(crops: np.ndarray, settings: dict | None = None) -> torch.Tensor:
    """(N, 48, 48) uint8 grayscale faces -> (N, 1, 48, 48) model input. Used for FER2013 training
    data, the FER2013 test split, CK+ crops and camera crops alike, so all of them reach the model
    with the same equalisation and scaling."""
    return crops_to_tensor(prepare_crops(crops, settings), settings)


def fer_framing(crops: np.ndarray, margin: float | None = None, *, side: int = 192, pad: int = 144) -> dict:
    """Where the Haar cascade puts the face box in FER2013-style crops, and how closely the camera
    path reproduces them: each (48, 48) crop is scaled to ``side`` px and set in a plain canvas
    (its mean grey) so the box is not clipped by the image border, the cascade runs as for a
    photo, and the crop cut with ``margin`` is compared with the original (both equalised)."""
    margin = FACE_INPUT["face_margin"] if margin is None else margin
    ratios, cx, cy, corr = [], [], [], []
    for c in np.asarray(crops, dtype=np.uint8):
        big = cv2.resize(c, (side, side), interpolation=cv2.INTER_CUBIC)
        canvas = cv2.copyMakeBorder(big, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=int(big.mean()))
        boxes = detect_faces(canvas)
        if not boxes:
            continue
        bx, by, bw, bh = boxes[0]
        ratios.append(bw / side), cx.append((bx - pad + bw / 2) / side), cy.append((by - pad + bh / 2) / side)
        again = prepare_crops(crop_face(canvas, boxes[0], margin, c.shape[0])[None])[0].astype(float)
        corr.append(float(np.corrcoef(prepare_crops(c[None])[0].astype(float).ravel(), again.ravel())[0, 1]))
    med = float(np.median(ratios)) if ratios else float("nan")
    q = (lambda v, p: round(float(np.percentile(v, p)), 4) if v else None)
    return {"n_images": len(crops), "n_detected": len(ratios), "box_over_crop_median": round(med, 4),
            "box_over_crop_q25": q(ratios, 25), "box_over_crop_q75": q(ratios, 75),
            "box_centre_x_median": q(cx, 50), "box_centre_y_median": q(cy, 50),
            "implied_margin_per_side": round((1 / med - 1) / 2, 4) if ratios else None,
            "margin_used": margin, "recrop_correlation_median": q(corr, 50), "recrop_correlation_q25": q(corr, 25)}


# ----------------------------------------------------------------------------- one photo


@dataclass
class FaceCrop:
    """The face found in one photo."""

    crop: np.ndarray  # (48, 48) uint8, what the model sees (equalised)
    box: tuple[int, int, int, int]  # (x, y, w, h) of the detected face in the upright photo
    n_faces: int  # faces detected; the largest one was used
    image_size: tuple[int, int]  # (width, height) of the upright photo
    notes: list[str] = field(default_factory=list)

    def tensor(self, settings: dict | None = None) -> torch.Tensor:
        """(1, 1, 48, 48) model input."""
        return crops_to_tensor(self.crop[None], settings)


def extract_face(source: bytes | str | Path | BinaryIO | np.ndarray, settings: dict | None = None) -> FaceCrop:
    """Photo (bytes, path, file object, or an already decoded gray/RGB array) -> ``FaceCrop``.

    Raises ``UnreadableImageError``, ``ImageTooLargeError``, ``ImageTooSmallError`` or
    ``NoFaceError`` (with a hint about light, distance and facing the camera).
    """
    s = {**FACE_INPUT, **(settings or {})}
    if isinstance(source, np.ndarray):
        gray = source if source.ndim == 2 else cv2.cvtColor(source[..., :3], cv2.COLOR_RGB2GRAY)
        gray = np.ascontiguousarray(gray, dtype=np.uint8)
        if min(gray.shape) < MIN_IMAGE_SIDE:
            raise ImageTooSmallError(f"the image is only {gray.shape[1]}x{gray.shape[0]} px")
        size = (gray.shape[1], gray.shape[0])
    else:
        gray, size = _decode(source)
    boxes = detect_faces(gray)
    if not boxes:
        raise NoFaceError(f"no face found in the image. {NO_FACE_HINT}")
    box = boxes[0]
    notes = []
    if len(boxes) > 1:
        notes.append(f"{len(boxes)} faces found; used the largest")
    crop = prepare_crops(crop_face(gray, box, float(s["face_margin"]), int(s["size"]))[None], s)[0]
    to_full = size[0] / gray.shape[1]  # > 1 when a big JPEG was decoded at reduced scale
    full_box = tuple(int(round(v * to_full)) for v in box) if to_full != 1 else box
    if max(full_box[2], full_box[3]) < 48:
        notes.append(f"the face is small ({full_box[2]} px wide); move closer for a sharper crop")
    return FaceCrop(crop, full_box, len(boxes), size, notes)


# ----------------------------------------------------------------------------- Domain
PHOTO_PREVIEW_SIDE = 320  # the photo kept for display is downscaled to this


@dataclass
class FacePhoto(Decoded):
    """One photo's face: the 48x48 crop the model sees, and the photo with the face box to show."""

    crop: np.ndarray | None = None  # (48, 48) uint8
    photo: np.ndarray | None = None  # the upright gray photo, downscaled for display
    box: tuple[int, int, int, int] | None = None  # face box in ``photo`` coordinates


def _downscale(gray: np.ndarray, box, side: int):
    h, w = gray.shape[:2]
    scale = min(1.0, side / max(h, w))
    if scale < 1.0:
        gray = cv2.resize(gray, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return gray, tuple(int(round(v * scale)) for v in box)


class FaceDomain(Domain):
    """Photos -> the largest face as a 48x48 crop. Photos without a usable face raise an
    ``ImageError`` (no face, unreadable, too small, too large) with a hint for the user."""

    name = "face"
    title = "Face"
    suffixes = IMAGE_SUFFIXES
    trainer = "fineprune.domains.face_training"

    def settings(self, card: dict | None) -> dict:
        return {**FACE_INPUT, **((card or {}).get("input") or {})}

    def input_shape(self, card: dict) -> tuple[int, ...]:
        size = int(self.settings(card)["size"])
        return (1, size, size)

    def decode_bytes(self, data: bytes, card: dict, *, name: str = "the photo", split: bool = False) -> list[FacePhoto]:
        settings = self.settings(card)
        try:
            gray = decode_image(data)
            found = extract_face(gray, settings)
        except FinePruneError as exc:
            raise type(exc)(named(str(exc), name)) from None
        photo, box = _downscale(gray, found.box, PHOTO_PREVIEW_SIDE)
        return [FacePhoto(found.tensor(settings)[0], list(found.notes), crop=found.crop, photo=photo, box=box)]


DOMAIN = FaceDomain()
