"""Face photos -> 48x48 model input (placeholder; detection lands next)."""
from __future__ import annotations

import cv2
import numpy as np
import torch

# How a 48x48 grayscale face crop becomes the model input -- identical at training time
# (FER2013 crops) and at camera time (Haar crop resized to 48x48): histogram equalisation,
# then (x/255 - mean) / std. After equalisation pixels are ~uniform on [0, 255], hence 0.5/0.29.
FACE_INPUT = {"size": 48, "grayscale": True, "equalize_hist": True, "scale": 1 / 255, "mean": 0.5, "std": 0.29}


def normalise_crops(crops: np.ndarray, settings: dict | None = None) -> torch.Tensor:
    """(N, 48, 48) uint8 grayscale faces -> (N, 1, 48, 48) float tensor, as the model expects."""
    s = settings or FACE_INPUT
    crops = np.asarray(crops, dtype=np.uint8)
    if s.get("equalize_hist", True):
        crops = np.stack([cv2.equalizeHist(c) for c in crops]) if len(crops) else crops
    x = torch.from_numpy(crops.astype(np.float32) * float(s["scale"]))
    return ((x - float(s["mean"])) / float(s["std"])).unsqueeze(1)
