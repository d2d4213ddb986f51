"""Optional: torchvision ImageNet models (ResNet50, MobileNetV2, ...) as fine-pruning targets.

torchvision is not a dependency (here only CUDA builds of it exist, which fail to import next
to torch+cpu). Where it imports and its weights are cached or downloadable, ``--model
torchvision:resnet50`` works; elsewhere the user gets one clear line saying why not.
"""
from __future__ import annotations

import io

import numpy as np
import torch

from fineprune.engine.bundle import ModelBundle
from fineprune.errors import UnknownModelError, UnreadableImageError
from fineprune.engine.models import register_architecture
from fineprune.domains.base import Decoded, Domain

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _import_torchvision():
    try:
        import torchvision  # noqa: F401
        from torchvision import models
    except Exception as exc:  # ImportError, or OSError from a CUDA-only build (libc10_cuda.so)
        raise UnknownModelError(
            f"torchvision models need an importable torchvision matching torch {torch.__version__} "
            f"(here: {type(exc).__name__}: {str(exc).splitlines()[0][:100]})"
        ) from None
    return models


@register_architecture("torchvision")
def torchvision_architecture(name: str, n_classes: int = 1000):
    return _import_torchvision().get_model(name, weights=None, num_classes=n_classes)


def load_torchvision(name: str) -> ModelBundle:
    models = _import_torchvision()
    try:
        weights = models.get_model_weights(name).DEFAULT
        model = models.get_model(name, weights=weights).eval()
    except Exception as exc:
        raise UnknownModelError(f"torchvision:{name} could not be loaded with its weights ({type(exc).__name__}: {str(exc)[:120]})") from None
    card = {
        "name": f"torchvision:{name}",
        "domain": "image",
        "classes": list(weights.meta.get("categories", [])),
        "input": {"size": 224, "resize": 256, "mean": IMAGENET_MEAN, "std": IMAGENET_STD, "format": "RGB image"},
    }
    return ModelBundle(model, {"arch": "torchvision", "name": name, "n_classes": len(card["classes"]) or 1000}, card)


class ImageNetDomain(Domain):
    name = "image"
    title = "Images"
    suffixes = (".jpg", ".jpeg", ".png", ".webp", ".bmp")

    def input_shape(self, card: dict) -> tuple[int, ...]:
        size = int((card.get("input") or {}).get("size", 224))
        return (3, size, size)

    def decode_bytes(self, data: bytes, card: dict, *, name: str = "the image", split: bool = False) -> list[Decoded]:
        from PIL import Image, ImageOps

        spec = card.get("input", {})
        try:
            with Image.open(io.BytesIO(data)) as img:
                img = ImageOps.exif_transpose(img).convert("RGB")
        except Exception as exc:
            raise UnreadableImageError(f"{name} is not an image we can read ({type(exc).__name__})") from None
        resize, size = spec.get("resize", 256), spec.get("size", 224)
        scale = resize / min(img.size)
        img = img.resize((max(size, round(img.width * scale)), max(size, round(img.height * scale))), Image.BILINEAR)
        left, top = (img.width - size) // 2, (img.height - size) // 2
        arr = np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.float32) / 255.0
        arr = (arr - np.array(spec.get("mean", IMAGENET_MEAN))) / np.array(spec.get("std", IMAGENET_STD))
        return [Decoded(torch.from_numpy(arr.transpose(2, 0, 1).astype(np.float32)))]


DOMAIN = ImageNetDomain()
