"""The ImageNet photos of ``../shared/data/imagenet`` for ``bench imagenet``: decoded once by the
``objects`` domain's own decoder, cached as uint8 crops under ``runs/cache/imagenet``.

Sets: ``imagenette`` and ``imagewoof`` (``train100``: unlabeled adaptation photos; ``val50``: test
photos only) and ``sample1000`` (one photo of every class: the general data). Labels are ImageNet-1k
class indices. ``write_card`` rebuilds ``assets/objects.json``'s class list from ``sample1000``.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from fineprune.engine.methods import Individual
from fineprune.domains.objects import CARD_PATH, OBJECTS_INPUT, centre_crop, open_rgb, to_features
from fineprune.paths import CACHE, SHARED_DATA, atomic_path

IMAGENET = SHARED_DATA / "imagenet"
SETS = ("imagenette", "imagewoof")
CACHE_DIR = CACHE / "imagenet"
CACHE_VERSION = 2  # bump when the decoder or preprocessing changes


@dataclass
class PhotoSet:
    crops: torch.Tensor  # (N, 224, 224, 3) uint8
    labels: torch.Tensor  # (N,) ImageNet-1k class index
    files: list[str]

    def x(self, index=None) -> torch.Tensor:
        """Model inputs (float, [-1, 1]) of all photos or of ``index``."""
        crops = self.crops if index is None else self.crops[index]
        return to_features(crops, OBJECTS_INPUT)

    def subset(self, index) -> "PhotoSet":
        index = torch.as_tensor(index, dtype=torch.long)
        return PhotoSet(self.crops[index], self.labels[index], [self.files[i] for i in index.tolist()])


def available() -> bool:
    return all((IMAGENET / s / "classes.tsv").exists() for s in SETS) and (IMAGENET / "sample1000" / "index.csv").exists()


def set_classes(set_name: str) -> list[dict]:
    """Rows of ``classes.tsv``: synset, in1k_index (int), name."""
    with open(IMAGENET / set_name / "classes.tsv", newline="") as handle:
        return [{**row, "in1k_index": int(row["in1k_index"])} for row in csv.DictReader(handle, delimiter="\t")]


def _decode_all(items: list[tuple[Path, int]]) -> PhotoSet:
    crops, labels, files = [], [], []
    for path, label in items:
        crop, _ = centre_crop(open_rgb(path.read_bytes(), path.name), OBJECTS_INPUT)
        crops.append(torch.from_numpy(crop))
        labels.append(label)
        files.append(path.name)
    return PhotoSet(torch.stack(crops), torch.tensor(labels), files)


def _cached(key: str, items_fn) -> PhotoSet:
    path = CACHE_DIR / f"{key}.v{CACHE_VERSION}.pt"
    if path.exists():
        blob = torch.load(path, weights_only=True)
        return PhotoSet(blob["crops"], blob["labels"], list(blob["files"]))
    photos = _decode_all(items_fn())
    with atomic_path(path) as partial:  # the bench's workers decode the same set at once on a fresh cache
        torch.save({"crops": photos.crops, "labels": photos.labels, "files": photos.files}, partial)
    return photos


def load_split(set_name: str, split: str) -> PhotoSet:
    """All photos of ``set_name``/``split`` (``train100`` or ``val50``), classes in classes.tsv order."""

    def items():
        out = []
        for row in set_classes(set_name):
            folder = IMAGENET / set_name / split / row["synset"]
            out += [(p, row["in1k_index"]) for p in sorted(folder.iterdir()) if p.is_file()]
        return out

    return _cached(f"{set_name}_{split}", items)


def sample1000_rows() -> list[dict]:
    with open(IMAGENET / "sample1000" / "index.csv", newline="") as handle:
        return [{**row, "class_index": int(row["class_index"])} for row in csv.DictReader(handle)]


def load_general() -> PhotoSet:
    """``sample1000``: one photo per ImageNet class (the general data)."""
    return _cached("sample1000", lambda: [(IMAGENET / "sample1000" / r["file"], r["class_index"]) for r in sample1000_rows()])


def class_names_from_index(rows: list[dict]) -> tuple[list[str], list[str]]:
    """(unique class names in index order, synsets). ImageNet names two classes twice (crane,
    maillot): the second of each gets its synset in brackets."""
    rows = sorted(rows, key=lambda r: r["class_index"])
    names, seen = [], set()
    for r in rows:
        name = r["name"].replace("_", " ")
        if name.lower() in seen:
            name = f"{name} ({r['wnid']})"
        seen.add(name.lower())
        names.append(name)
    return names, [r["wnid"] for r in rows]


def card_classes() -> dict:
    """``classes`` and ``class_aliases`` (synset -> name; the name with ``-`` for spaces -> name) for the card."""
    names, synsets = class_names_from_index(sample1000_rows())
    aliases = {s: n for s, n in zip(synsets, names)}
    for n in names:
        if " " in n and "(" not in n:
            aliases.setdefault(n.replace(" ", "-"), n)
    return {"classes": names, "synsets": synsets, "class_aliases": aliases}


def write_card(updates: dict, path: Path = CARD_PATH) -> None:
    """Merge ``updates`` into the card (creating it), keeping the key order readable."""
    card = json.loads(path.read_text()) if path.exists() else {}
    card.update(updates)
    path.write_text(json.dumps(card, indent=1, ensure_ascii=False) + "\n")


def make_individual(set_name: str, classes: list[int], n_adapt: int, n_test: int, seed: int, *, dev: bool = False) -> Individual:
    """Adaptation photos: ``n_adapt`` per class from train100 (unlabeled; labels kept only for
    backprop). Test photos: ``n_test`` per class from val50 -- or, with ``dev``, further train100
    photos (for choosing defaults without touching a test photo)."""
    rows = set_classes(set_name)
    train = load_split(set_name, "train100")
    test = train if dev else load_split(set_name, "val50")
    gen = torch.Generator().manual_seed(seed)
    adapt_idx, test_idx = [], []
    for c in classes:
        label = rows[c]["in1k_index"]
        pool = torch.nonzero(train.labels == label).flatten()
        pool = pool[torch.randperm(len(pool), generator=gen)]
        adapt_idx += pool[:n_adapt].tolist()
        if dev:
            test_idx += pool[n_adapt : n_adapt + n_test].tolist()
        else:
            test_idx += torch.nonzero(test.labels == label).flatten()[:n_test].tolist()
    adapt_idx, test_idx = torch.tensor(adapt_idx), torch.tensor(test_idx)
    name = f"{set_name}:" + "+".join(rows[c]["name"] for c in classes)
    return Individual(name, train.x(adapt_idx), test.x(test_idx), test.labels[test_idx], train.labels[adapt_idx])
