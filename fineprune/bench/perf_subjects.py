"""What ``bench perf`` measures: the plan (how many clips, repeats, sparsities) and the subjects
(a shipped model, or an untrained stand-in of its architecture, with a person to personalize to)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from fineprune.domains import get_domain, label_from_name
from fineprune.engine.bundle import ModelBundle
from fineprune.paths import DEMO_ROOT, REPO, SHARED_DATA
from fineprune.engine.evaluation import accuracy
from fineprune.registry import PACKAGED_MODELS, available_shipped_models, load_model, shipped_model_path


@dataclass
class Plan:
    """How much to measure: the full run, or ``--quick`` (a CI smoke test; numbers meaningless)."""

    clips: int = 200
    repeats: int = 5
    slider_steps: int = 11
    backprop_max_epochs: int = 15
    latency_repeats: int = 12
    latency_budget_s: float = 60.0  # per sparsity: slow models (objects) get fewer latency repeats, at least 3
    warmup: int = 1
    memory_scales: tuple[int, ...] = (1, 2)  # personalization peak at N and 2N clips
    memory_in_subprocess: bool = True
    memory_repeats: int = 3  # fresh processes per phase; the median is reported
    person_clips: int = 0  # 0: all of the person's clips; else at most this many (quick)

    def repeats_for(self, seconds_per_round: float) -> int:
        """``latency_repeats``, fewer (at least 3) where one round of calls is slow (Lite0 at 224 px,
        batch 64: seconds), so every sparsity's timing fits ``latency_budget_s``."""
        if self.latency_repeats <= 3:
            return self.latency_repeats
        return max(3, min(self.latency_repeats, int(self.latency_budget_s / max(1e-9, seconds_per_round))))

    @classmethod
    def quick(cls) -> "Plan":
        return cls(clips=8, repeats=1, slider_steps=1, backprop_max_epochs=1, latency_repeats=1, warmup=0,
                   memory_scales=(1,), memory_in_subprocess=False, memory_repeats=1, person_clips=24)


@dataclass
class Person:
    """One individual: labelled clips split into adaptation (labels hidden from fine-pruning) and check."""

    name: str
    adapt_x: torch.Tensor
    adapt_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


@dataclass
class Subject:
    """A model under test with the clips it is measured on."""

    name: str
    bundle: ModelBundle
    clips: torch.Tensor
    person: Person
    notes: list[str] = field(default_factory=list)


def channel_settings(settings, sparsity: float):
    """The ``channel`` criterion at ``sparsity`` of every pruned layer's units (an ERK or global
    scope, the objects card's default, would spread it unevenly; "50% channels" means half of each).
    The first layer's output channels count too (``spare_first`` off): sparing it keeps the layers
    that run at full resolution at full width, so "50%" would not be 50%. Its input -- the raw
    data -- is never cut; the classifier's outputs stay (``spare_last``)."""
    return settings.replace(criterion="channel", sparsity=sparsity, scope="layer", spare_first=False)


def hidden_removed(widths: dict) -> float | None:
    """Share of the hidden (expanded) channels of inverted-residual blocks an export removed."""
    hidden = [v for k, v in widths.items() if k.endswith("_depthwise_conv")]
    return 1 - sum(a for _, a in hidden) / sum(b for b, _ in hidden) if hidden else None


# ----------------------------------------------------------------------------- subjects
def stand_in_bundle(name: str) -> ModelBundle:
    """An untrained model of the shipped architecture (when assets/<name>.pt is missing)."""
    from fineprune.engine.models import build_model

    torch.manual_seed(0)
    if name == "voice":
        from fineprune.domains.voice_training import CLASSES, feature_settings, model_config

        config, card = model_config(), {"domain": "voice", "classes": CLASSES, "features": feature_settings().to_dict()}
    elif name == "face":
        from fineprune.domains.face import FACE_INPUT
        from fineprune.domains.face_training import FACE_MODEL_CONFIG, FER_CLASSES

        config, card = dict(FACE_MODEL_CONFIG), {"domain": "face", "classes": FER_CLASSES, "input": FACE_INPUT}
    elif name == "objects":  # the architecture's package is installed, the weights' package is not
        from fineprune.domains.objects import MODEL_CONFIG, load_card

        config, card = dict(MODEL_CONFIG), load_card()
    else:
        raise ValueError(f"no stand-in for {name!r}")
    return ModelBundle(build_model(config).eval(), config, card)


def input_shape(bundle: ModelBundle) -> tuple[int, ...]:
    """The shape of one model input, from the card's input spec."""
    card = bundle.card
    if bundle.domain == "objects":
        return tuple(get_domain("objects").input_shape(card))
    if bundle.domain == "voice":
        from fineprune.domains.audio import FeatureSettings

        return FeatureSettings.from_dict(card.get("features")).input_shape
    spec = card.get("input") if isinstance(card.get("input"), dict) else {}
    if "shape" in spec:
        return tuple(int(s) for s in spec["shape"])
    if "size" in spec:
        return (1 if spec.get("grayscale", True) else 3, int(spec["size"]), int(spec["size"]))
    config = bundle.config
    return (config.get("in_channels", 1), *([32] * config.get("dims", 2)))


def demo_people(bundle: ModelBundle) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """Shipped demo individuals (assets/demo/<domain>/<name>/LABEL_take.ext) as (name, x, y)."""
    folder = DEMO_ROOT / bundle.domain
    if not folder.is_dir():
        return []
    domain = get_domain(bundle.domain)
    aliases = bundle.card.get("class_aliases") or {}
    people = []
    for person_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = sorted(p for p in person_dir.rglob("*") if p.suffix.lower() in domain.suffixes)
        files = [p for p in files if label_from_name(p.name, bundle.classes, aliases) is not None]
        if not files:
            continue
        loaded = domain.load_files(files, bundle.card)
        if len(loaded.x) < 4:
            continue
        y = torch.tensor([bundle.classes.index(label_from_name(p.name, bundle.classes, aliases)) for p in loaded.paths])
        people.append((person_dir.name, loaded.x.float(), y))
    return people


def split_person(name: str, x: torch.Tensor, y: torch.Tensor, check_fraction: float = 0.3) -> Person:
    """Per label, the first ``check_fraction`` of the takes are the check set, the rest adaptation."""
    check = torch.zeros(len(y), dtype=torch.bool)
    for label in y.unique():
        idx = torch.nonzero(y == label).flatten()
        check[idx[: max(1, round(check_fraction * len(idx)))]] = True
    return Person(name, x[~check], y[~check], x[check], y[check])


FER_PERSON_CLASSES = ("happy", "sad", "surprise")  # a class-subset individual, as in bench face


def fer_person(bundle: ModelBundle, adapt_per_class: int = 40, check_per_class: int = 20) -> Person | None:
    """A FER2013 test-split individual showing three expressions (FER2013 has no identities)."""
    path = SHARED_DATA / "fer2013" / "fer2013_48.npz"
    if bundle.domain != "face" or not path.exists():
        return None
    import numpy as np

    from fineprune.domains.face import normalise_crops

    with np.load(path) as data:
        x_test, y_test, classes = data["x_test"], data["y_test"], [str(c) for c in data["classes"]]
    rng = np.random.default_rng(0)
    lookup = {c: i for i, c in enumerate(bundle.classes)}
    adapt, check = [], []
    for name in FER_PERSON_CLASSES:
        idx = rng.permutation(np.flatnonzero(y_test == classes.index(name)))
        adapt.append(idx[:adapt_per_class])
        check.append(idx[adapt_per_class : adapt_per_class + check_per_class])
    adapt, check = np.concatenate(adapt), np.concatenate(check)
    to_y = lambda idx: torch.tensor([lookup[classes[int(y_test[i])]] for i in idx])  # noqa: E731
    return Person("FER2013 test: " + "/".join(FER_PERSON_CLASSES), normalise_crops(x_test[adapt]), to_y(adapt),
                  normalise_crops(x_test[check]), to_y(check))


OBJECT_PERSON_CLASSES = ("n01440764", "n03028079", "n03445777")  # Imagenette: tench, church, golf ball
OBJECT_PHOTOS = 64  # objects: at most this many photos (one Lite0 pass over 64 photos at 224 px is seconds on one core)


def imagenette_person(bundle: ModelBundle, n_photos: int) -> Person | None:
    """An ``objects`` individual: ImageNet *training* photos (``train100``) of three Imagenette
    classes, decoded by the objects domain (fine as unlabeled adaptation photos; the check split
    only feeds the backprop comparison)."""
    folder = SHARED_DATA / "imagenet" / "imagenette"
    if bundle.domain != "objects" or not (folder / "classes.tsv").exists():
        return None
    index = {}
    for line in (folder / "classes.tsv").read_text().splitlines()[1:]:
        synset, in1k, *_ = line.split("\t")
        index[synset] = int(in1k)
    per_class = -(-n_photos // len(OBJECT_PERSON_CLASSES))
    files, labels = [], []
    for synset in OBJECT_PERSON_CLASSES:
        photos = sorted((folder / "train100" / synset).glob("*.JPEG"))[:per_class]
        files += photos
        labels += [index[synset]] * len(photos)
    if not files:
        return None
    loaded = get_domain("objects").load_files(files, bundle.card)
    label_of = dict(zip(files, labels))
    y = torch.tensor([label_of[p] for p in loaded.paths])
    names = "/".join(bundle.classes[index[s]] for s in OBJECT_PERSON_CLASSES)
    return split_person(f"Imagenette train100: {names}", loaded.x.float(), y)


def load_subject(name: str, plan: Plan) -> Subject:
    notes = []
    path = shipped_model_path(name)
    if name in available_shipped_models():
        bundle = load_model(name)
        notes.append(f"model: {path.relative_to(REPO)}" + (" (its weights from their package)" if name in PACKAGED_MODELS else ""))
    else:
        bundle = stand_in_bundle(name)
        notes.append(f"model: {path.relative_to(REPO)} is missing -- an UNTRAINED stand-in of the shipped architecture is measured")
    bundle.model.eval()
    if bundle.domain == "objects" and plan.clips > OBJECT_PHOTOS:  # keep the full objects run to minutes
        plan = replace(plan, clips=OBJECT_PHOTOS)
    people = demo_people(bundle)
    if bundle.domain == "objects" and not people and (person := imagenette_person(bundle, min(plan.clips, plan.person_clips or plan.clips))) is not None:
        clips = tile(torch.cat([person.adapt_x, person.test_x]), plan.clips)
        notes.append(
            f"clips and person: {len(person.adapt_x) + len(person.test_x)} photos of {person.name} (224x224 crops by the objects "
            f"decoder; {len(person.adapt_x)} adaptation / {len(person.test_x)} check; clips tiled to {plan.clips}, "
            f"capped at {OBJECT_PHOTOS} for objects so the full run takes minutes)"
        )
    elif people:
        pooled = torch.cat([x for _, x, _ in people])
        clips = tile(pooled, plan.clips)
        # the person with the most room to improve: the general model's worst demo individual
        general = [accuracy(bundle.model, x, y) for _, x, y in people]
        worst = min(range(len(people)), key=lambda i: general[i])
        person = split_person(*people[worst])
        notes.append(
            f"clips: {len(pooled)} shipped demo clips of {len(people)} individuals (tiled to {plan.clips}); "
            f"person: demo '{person.name}', the general model's weakest demo individual "
            f"({len(person.adapt_x)} adaptation / {len(person.test_x)} check clips)"
        )
    elif (person := fer_person(bundle)) is not None:
        clips = tile(torch.cat([person.adapt_x, person.test_x]), plan.clips)
        notes.append(
            f"clips and person: no demo faces in {DEMO_ROOT.relative_to(REPO)}/face -- a FER2013 test-split individual showing "
            f"{', '.join(FER_PERSON_CLASSES)} ({len(person.adapt_x)} adaptation / {len(person.test_x)} check crops; "
            f"clips tiled to {plan.clips})"
        )
    else:
        shape = input_shape(bundle)
        g = torch.Generator().manual_seed(0)
        clips = torch.randn(plan.clips, *shape, generator=g)
        # a synthetic "person": labels are the general model's own answers on clean inputs, the
        # person's clips are those inputs with a fixed gain and offset (a consistent shift)
        base = torch.randn(max(40, plan.clips // 2), *shape, generator=g)
        with torch.inference_mode():
            labels = bundle.model(base).argmax(1)
        shifted = base * 1.3 + 0.3
        person = split_person("synthetic", shifted, labels)
        notes.append(
            ("clips: ../shared/data/imagenet is missing" if bundle.domain == "objects" else
             f"clips: no demo clips in {DEMO_ROOT.relative_to(REPO)}/{bundle.domain}") + f" -- {plan.clips} synthetic inputs of shape "
            f"{tuple(shape)}; person: synthetic (labels = the general model's answers before a gain/offset shift)"
        )
    if plan.person_clips:
        person = thin_person(person, plan.person_clips)
    return Subject(name, bundle, clips, person, notes)


def thin_person(person: Person, n: int) -> Person:
    """At most ``n`` adaptation and ``n // 2`` check clips, spread over the (label-ordered) sets."""
    def spread(x, y, k):
        idx = torch.linspace(0, len(x) - 1, min(k, len(x))).round().long().unique()
        return x[idx], y[idx]

    return Person(person.name, *spread(person.adapt_x, person.adapt_y, n), *spread(person.test_x, person.test_y, max(1, n // 2)))


def tile(x: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` inputs: ``x`` repeated as often as needed."""
    reps = -(-n // len(x))
    return x.repeat(reps, *([1] * (x.dim() - 1)))[:n].contiguous()
