import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
requires_data = pytest.mark.skipif(not SHARED_DATA.exists(), reason="../shared/data is not beside this checkout")

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def tiny_vgg():
    from fineprune.engine.models import build_model

    torch.manual_seed(0)
    config = {"arch": "vgg", "conv": [8, 8, "M", 16, "M", 16], "in_channels": 1, "n_classes": 4, "fc": [24], "dims": 2}
    return build_model(config).eval(), config
