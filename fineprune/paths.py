"""Where the project's files are (the shipped assets, the run cache, the shared data beside the
checkout), and how one is written whole.

One place, so that moving a module never changes where it looks.
"""
import contextlib
import os
import uuid
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


@contextlib.contextmanager
def atomic_path(path, suffix: str = ".partial"):
    """Yield a temporary path beside ``path`` to write to; when the block ends normally it replaces
    ``path``, otherwise it is removed. Ctrl-C or a full disk never leaves half a file that a later
    run fails to load, and the name is this writer's own: two bench workers filling the same cache
    entry at once both succeed (a shared temporary name let one move the file away under the other).
    ``suffix`` keeps writers that append an extension (``np.savez`` adds ``.npz``) on the same name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}{suffix}")
    try:
        yield partial
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
