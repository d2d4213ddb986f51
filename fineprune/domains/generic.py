"""The generic domain: each file is a NumPy ``.npy`` array holding one model input.

Lets ``personalize --model PATH`` work for any saved model whose card names no other domain
(``domain: "generic"``), and gives tests a file format that needs no audio or image decoding.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from fineprune.registry import LoadedInputs


class ArrayDomain:
    name = "generic"
    suffixes = (".npy",)

    def load_files(self, paths: Sequence[Path], card: dict) -> LoadedInputs:
        shape = tuple(card.get("input", {}).get("shape", ()))
        arrays, used, skipped = [], [], []
        for path in map(Path, paths):
            try:
                arr = np.load(path, allow_pickle=False)
            except Exception as exc:
                skipped.append((path, f"not a .npy array ({type(exc).__name__})"))
                continue
            if shape and tuple(arr.shape) != shape:
                skipped.append((path, f"shape {tuple(arr.shape)} but the model takes {shape}"))
                continue
            if not np.isfinite(arr).all():
                skipped.append((path, "contains NaN or infinity"))
                continue
            arrays.append(torch.from_numpy(np.asarray(arr, dtype=np.float32)))
            used.append(path)
        x = torch.stack(arrays) if arrays else torch.empty(0, *shape)
        return LoadedInputs(x, used, skipped)


ARRAY_DOMAIN = ArrayDomain()
