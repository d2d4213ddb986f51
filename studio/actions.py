"""What the buttons start: gather the person's tensors and hand a job to the session's slot.
No drawing here; errors are ``FinePruneError`` subclasses the pages show with ``friendly_errors``."""
from __future__ import annotations

from fineprune.errors import InputDataError
from fineprune.pipeline import PruneSettings
from fineprune.session import PersonData, Recordings, compare_baselines, compare_criteria, demo_split, personalize

from . import models
from .models import MINE


def recordings_of(session, model_name: str, individual: str) -> Recordings:
    if individual == MINE:
        bundle = models.bundle_for(model_name)
        return session.recordings_for(model_name, bundle.classes)
    return models.demo_recordings(model_name, individual)


def person_data(session, model_name: str, individual: str) -> PersonData:
    """The adaptation and check sets of ``individual`` (``MINE`` or a demo individual)."""
    rec = recordings_of(session, model_name, individual)
    choice = session.split_for(model_name) if individual == MINE else None
    split = rec.split(choice.check_per_label, choice.max_adapt_per_label) if choice else demo_split(rec)
    if not split.adapt:
        where = "Record or upload some clips on the Voice or Face page first." if individual == MINE else ""
        raise InputDataError(f"{individual} has no clips in the adaptation set. {where}".strip())
    return rec.person_data(split)


def general_data(model_name: str, individual: str):
    """Other demo individuals pooled (the "general data" control), or None when none ship."""
    return models.general_inputs(model_name, exclude=None if individual == MINE else individual)


def start_personalization(session, model_name: str, individual: str, settings: PruneSettings) -> None:
    bundle = models.bundle_for(model_name)
    data = person_data(session, model_name, individual)
    settings.validate()
    session.jobs.start(
        "personalize", f"Fine-pruning for {individual}", personalize,
        bundle.model, data, settings,
        classes=bundle.classes, model_name=model_name, individual=individual,
        general_x=general_data(model_name, individual),
    )


def start_criteria(session, criteria: list[str], sparsities: list[float]) -> None:
    run = session.run
    bundle = models.bundle_for(run.model_name)
    session.jobs.start(
        "criteria", "Comparing criteria", compare_criteria,
        bundle.model, run.person, run.settings,
        criteria=criteria, sparsities=sparsities, general_x=general_data(run.model_name, run.individual),
    )


def start_baselines(session, backprop_epochs: int = 15) -> None:
    run = session.run
    bundle = models.bundle_for(run.model_name)
    session.jobs.start(
        "baselines", "Running the baselines", compare_baselines,
        bundle.model, run.person, run.settings,
        general_x=general_data(run.model_name, run.individual), backprop_epochs=backprop_epochs,
    )
