"""The generic domain: each file is a NumPy ``.npy`` array holding one model input.

Lets ``personalize --model PATH`` work for any saved model whose card names no other domain
(``domain: "generic"``), and gives tests a file format that needs no audio or image decoding.
"""
from __future__ import annotations

import io

import numpy as np
import torch

from fineprune.domains.base import Decoded, Domain
from fineprune.errors import InputDataError


class ArrayDomain(Domain):
    name = "generic"
    title = "Arrays"
    suffixes = (".npy",)

    def input_shape(self, card: dict) -> tuple[int, ...]:
        return tuple((card.get("input") or {}).get("shape") or ())

    def decode_bytes(self, data: bytes, card: dict, *, name: str = "the file", split: bool = False) -> list[Decoded]:
        shape = self.input_shape(card)
        try:
            arr = np.load(io.BytesIO(data), allow_pickle=False)  # never a pickle: a file cannot run code
        except Exception as exc:
            raise InputDataError(f"{name} is not a .npy array ({type(exc).__name__})") from None
        if shape and tuple(arr.shape) != shape:
            raise InputDataError(f"{name} has shape {tuple(arr.shape)} but the model takes {shape}")
        if not np.isfinite(arr).all():
            raise InputDataError(f"{name} contains NaN or infinity")
        return [Decoded(torch.from_numpy(np.asarray(arr, dtype=np.float32)))]


DOMAIN = ArrayDomain()
