"""What the buttons start: gather the person's tensors and hand a job to the session's slot.
No drawing here; errors are ``FinePruneError`` subclasses the pages show with ``friendly_errors``.
Job functions run in a worker thread: they use only plain values (``DemoSource``), never ``st.*``."""
from __future__ import annotations

from fineprune.errors import InputDataError
from fineprune.person import explore
from fineprune.person.demo import demo_split
from fineprune.person.jobs import FAILED, scaled_progress
from fineprune.person.options import PruneSettings
from fineprune.person.recordings import PersonData
from fineprune.person.run import compare_baselines, compare_criteria, personalize

from . import models, workers
from .models import MINE, DemoSource


def my_person_data(session, model_name: str) -> PersonData:
    """The session's own adaptation and check sets, split as the person chose."""
    bundle = models.bundle_for(model_name)
    rec = session.recordings_for(model_name, bundle.classes)
    choice = session.split_for(model_name)
    split = rec.split(choice.check_per_label, choice.max_adapt_per_label)
    if not split.adapt:
        raise InputDataError(f"{MINE} has no clips in the adaptation set. Record or upload some clips on the "
                             "Voice or Face page first.")
    return rec.person_data(split)


def demo_person_data(source: DemoSource, individual: str, *, progress=None, cancel=None) -> PersonData:
    """Half of a demo individual's clips per class adapt (unlabeled), the other half check."""
    rec = source.recordings(individual, progress=progress, cancel=cancel)
    split = demo_split(rec)
    if not split.adapt:
        raise InputDataError(f"the demo individual {individual!r} has no clips to adapt on")
    return rec.person_data(split)


def personalize_job(model, source: DemoSource, model_name: str, individual: str, mine: PersonData | None,
                    settings: PruneSettings, *, progress=None, cancel=None):
    """Worker: read the demo clips if needed (with progress), then ``fineprune.person.run.personalize``."""
    if mine is None:
        person = demo_person_data(source, individual, progress=scaled_progress(progress, 0.0, 0.2), cancel=cancel)
    else:
        person = mine
    general = source.general(None if individual == MINE else individual,
                             progress=scaled_progress(progress, 0.2, 0.3), cancel=cancel)
    return personalize(model, person, settings, classes=list(source.classes), model_name=model_name,
                       individual=individual, general_x=general, progress=scaled_progress(progress, 0.3, 1.0),
                       cancel=cancel)


def start_personalization(session, model_name: str, individual: str, settings: PruneSettings) -> None:
    bundle = models.bundle_for(model_name)
    settings.validate()
    mine = my_person_data(session, model_name) if individual == MINE else None  # refuse before starting
    session.explore.cancel()  # the slider's points of the run this one replaces are not needed any more
    session.jobs.start("personalize", f"Fine-pruning for {individual}", personalize_job,
                       bundle.model, models.demo_source(model_name), model_name, individual, mine, settings)


def general_data(run):
    """The general data of a finished run (decoded already: cached)."""
    source = models.demo_source(run.model_name)
    return source.general(None if run.individual == MINE else run.individual)


def start_criteria(session, criteria: list[str], sparsities: list[float]) -> None:
    run = session.run
    bundle = models.bundle_for(run.model_name)
    session.jobs.start(
        "criteria", "Comparing criteria", compare_criteria,
        bundle.model, run.person, run.settings,
        criteria=criteria, sparsities=sparsities, general_x=general_data(run),
    )


def start_baselines(session, backprop_epochs: int = 15) -> None:
    run = session.run
    bundle = models.bundle_for(run.model_name)
    session.jobs.start(
        "baselines", "Running the baselines", compare_baselines,
        bundle.model, run.person, run.settings,
        general_x=general_data(run), backprop_epochs=backprop_epochs,
    )


# ----------------------------------------------------------------------------- the Explore slider
def pooled_gate(progress, cancel):
    """Run each slider point on one of the server's workers, released between points: a queued
    fine-pruning of another session waits at most one point (well under a second), not the grid."""

    def gate(step):
        return workers.POOL.run(lambda progress=None, cancel=None: step(), progress=progress, cancel=cancel)

    return gate


def precompute_job(run, grid, position, *, progress=None, cancel=None):
    """Worker: measure the slider's points (``fineprune.person.explore.precompute_points``)."""
    return explore.precompute_points(run, grid, cancel, progress, position=position, gate=pooled_gate(progress, cancel))


def start_precompute(session) -> None:
    """Measure the current run's slider points in the background, unless that is done or under way."""
    run = session.run
    if run is None or explore.ready(run) or session.explore_failed == id(run):
        return
    active = session.explore.active
    if active is not None and active.meta.get("run") == id(run) and not active.job.finished:
        return
    if session.explore_at.value is None:
        session.explore_at.value = run.settings.sparsity
    # the job holds the run and the position, never the session (a closed session's state can go)
    session.explore.start("explore", "Measuring the slider's positions", precompute_job, run, explore.GRID,
                          session.explore_at, meta={"run": id(run)}, pooled=False)


def explore_step(session, target: float) -> explore.SliderView:
    """A slider move: remember where the slider is (measured next if not ready), keep the
    background measuring going, and look the point up (the nearest measured one until it is ready)."""
    run = session.run
    session.explore_at.value = float(target)
    active = session.explore.active
    outcome = session.explore.collect()  # the background measuring ended: failed, cancelled or done
    if outcome is not None and outcome.status == FAILED and active.meta.get("run") == id(run):
        session.explore_failed = id(run)
        session.say("error", outcome.message)
    start_precompute(session)
    view = explore.slider_view(run, target)
    if view.point is None:  # nothing measured at all (nor being measured): measure this one now
        explore.explore_point(run, target)
        view = explore.slider_view(run, target)
    return view
