"""Where the project's files are: the shipped assets, the run cache, and the shared data beside the checkout.

One place, so that moving a module never changes where it looks.
"""
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ASSETS = REPO / "assets"  # shipped general models (``*.pt`` + ``*.json`` cards) and demo individuals
DEMO_ROOT = ASSETS / "demo"
# the six leave-one-speaker-out voice models the benches score FSDD speakers with: committed, because
# retraining gives other weights on another CPU (its float kernels) and moves every result built on them
LOSO_MODELS = ASSETS / "loso"
CACHE = REPO / "runs" / "cache"  # decoded data sets, rebuilt at will; ignored by git
SHARED_DATA = REPO.parent / "shared" / "data"  # training and benchmark data; never committed


def shown_path(path) -> str:
    """A path as reports show it: relative to the repository where it lies inside it (no machine's
    own folders in committed tables)."""
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)
