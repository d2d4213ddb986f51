"""Fine-prune: choose model, individual, criterion and sparsity; run in the background; results."""
import streamlit as st

from fineprune.person import options
from fineprune.person.run import Personalization, adaptation_notes
from studio import actions, figures, jobs, models, outcomes, state, tryit, ui
from studio.models import MINE


def settings_ui(bundle, model_name: str, loaded: dict | None = None):
    defaults = options.settings_for(bundle.card, **(loaded or {}))  # an opened project's settings win
    described = options.criteria()
    criteria = list(described)
    a, b = st.columns(2)
    criterion = a.selectbox(
        "Criterion", criteria, index=criteria.index(defaults.criterion) if defaults.criterion in criteria else 0,
        key=f"criterion_{model_name}", format_func=lambda c: f"{c} — {described[c]}",
    )
    sparsity = b.slider("Target sparsity (% of weights pruned)", 0, 95, int(round(100 * defaults.sparsity)), 5,
                        key=f"sparsity_{model_name}", help="Default chosen by the benchmark for this model")
    with st.expander("More settings"):
        c, d, e = st.columns(3)
        scope = c.selectbox("Scope", options.SCOPES, index=options.SCOPES.index(defaults.scope),
                            key=f"scope_{model_name}", help="layer: same sparsity in every layer; row: in every unit; global: one threshold")
        ratios = sorted({0.0, 0.25, 0.5, 0.75, 1.0, defaults.drop_unused_classes})
        drop = c.select_slider("Drop classes you hardly use", ratios, value=defaults.drop_unused_classes,
                               format_func=lambda r: "off" if r == 0 else f"< {r:g}× fair share", key=f"drop_{model_name}",
                               help="Label-free: a class the model predicts on fewer than this fraction of 1/classes of "
                                    "your clips is removed from the output layer")
        modes = list(options.RECALIBRATION_MODES)
        recal = d.selectbox("Re-measure BatchNorm on your data", modes, index=modes.index(defaults.recalibrate_bn),
                            key=f"recal_{model_name}")
        depths = [None] + list(range(1, options.batchnorm_depth(bundle.model) + 1))
        depth = d.selectbox("…in how many BatchNorm layers", depths,
                            index=depths.index(defaults.recalibrate_bn_depth) if defaults.recalibrate_bn_depth in depths else 0,
                            format_func=lambda n: "all" if n is None else f"the first {n}", key=f"recal_depth_{model_name}",
                            help="Early layers follow your camera or microphone; deep ones also follow which classes you "
                                 "use, so re-measuring them on few classes can wash out the class signal")
        priors = sorted({0.0, 4.0, 16.0, 64.0, float(defaults.recalibrate_bn_prior)})
        prior = d.selectbox("…shrunk toward the general statistics", priors, index=priors.index(float(defaults.recalibrate_bn_prior)),
                            format_func=lambda n: "no" if n == 0 else f"as if they were {n:g} of your examples",
                            key=f"recal_prior_{model_name}",
                            help="Statistics measured on a few examples are noisy: mixed with the general ones, yours weigh "
                                 "n / (n + this)")
        spare_first = e.checkbox("Keep the first layer dense", defaults.spare_first, key=f"spare_first_{model_name}")
        spare_last = e.checkbox("Keep the classifier dense", defaults.spare_last, key=f"spare_last_{model_name}")
        bias = e.checkbox("Bias correction", defaults.bias_correction, key=f"bias_{model_name}")
    # a criterion of the user's own choosing ranks everyone's connections; the card's keeps the guard's fallback
    chosen = defaults if criterion == defaults.criterion else defaults.ranked_by(criterion)
    return chosen.replace(sparsity=sparsity / 100, scope=scope, recalibrate_bn=recal,
                            recalibrate_bn_depth=depth, recalibrate_bn_prior=prior, drop_unused_classes=drop, spare_first=spare_first, spare_last=spare_last, bias_correction=bias)


def individual_ui(session, model_name: str, bundle) -> str:
    mine = session.recordings_for(model_name, bundle.classes)
    options = [MINE] + models.demo_names(model_name)
    key = f"individual_{model_name}"
    if st.session_state.get(key) not in options:
        st.session_state[key] = MINE if len(mine) or len(options) == 1 else models.default_demo(model_name)
    return st.radio("Individual", options, key=key, horizontal=True,
                    format_func=lambda o: f"{o} ({len(mine)} clip{'s' * (len(mine) != 1)})" if o == MINE else f"demo: {o}")


def results_ui(run: Personalization) -> None:
    st.subheader(f"Result: the {run.model_name} model personalized for {ui.who(run.individual)}")
    st.caption(f"{run.criterion} criterion, target {100 * run.settings.sparsity:.0f}% · "
               f"{len(run.person.adapt_ids)} adaptation clips (unlabeled) · {len(run.person.check_ids)} check clips · "
               f"{run.seconds:.1f} s")
    s = run.savings
    a, b, c, d = st.columns(4)
    before = None if run.before is None else run.before.accuracy
    after = None if run.after is None else run.after.accuracy
    a.metric("Accuracy before", ui.pct(before), help="the general model on your check clips")
    b.metric("Accuracy after", ui.pct(after), help="the fine-pruned model on the same check clips", **ui.delta_points(after, before))
    c.metric("Connections removed", ui.pct(s["connections_removed"] / max(1, s["connections"])),
             help=f"{s['connections_removed']:,} of {s['connections']:,} weights in the prunable layers")
    d.metric("FLOPs removed per input", ui.human(s["flops_removed"]),
             help=f"multiply-adds through pruned weights (2 FLOPs each), of {ui.human(s['layer_flops'])} FLOPs "
                  "in all conv/linear layers for one input")
    if run.before is None:
        st.info("No check clips, so accuracy cannot be measured: give some clips a label and keep them for checking.")
    for note in adaptation_notes(run.result.report, run.classes):
        st.caption(note)
    if run.before is not None:
        changes_ui(run)

    st.plotly_chart(figures.sparsity_figure(run.result.report["layers"]), key="result_sparsity", theme=None)

    st.markdown("##### Which units your data uses (activation energy)")
    person = run.result.energies
    layers = list(person)
    left, right = st.columns(2)
    left.plotly_chart(figures.energy_heatmap(person, layers, "Your data"), key="heat_person", theme=None)
    if run.general_energies is not None:
        right.plotly_chart(figures.energy_heatmap(run.general_energies, layers, "Other people (demo individuals)"),
                           key="heat_general", theme=None)
    else:
        right.info("No general data ships with this model (no other demo individuals), so there is nothing to compare with.")
    if run.general_energies is not None:
        st.plotly_chart(figures.energy_difference_heatmap(person, run.general_energies, layers), key="heat_difference",
                        theme=None)
        st.caption("The difference tells the story: **green** units carry more signal on your data than on other "
                   "people's, **blue** ones mostly serve other people. Fine-pruning keeps the connections your data "
                   "uses and cuts the rest, so the blue parts are where your model gets smaller.")
    layer = st.selectbox("Layer up close", layers, index=min(1, len(layers) - 1), key=f"heat_layer_{run.model_name}")
    st.plotly_chart(figures.layer_energy_figure(person, run.general_energies, layer), key="heat_layer_fig", theme=None)

    if run.before is not None:
        st.markdown("##### What the model hears, before and after")
        left, right = st.columns(2)
        left.plotly_chart(figures.confusion_figure(run.before.confusion, run.classes, f"Before: {ui.pct(before)}"), key="cm_before", theme=None)
        right.plotly_chart(figures.confusion_figure(run.after.confusion, run.classes, f"After: {ui.pct(after)}"), key="cm_after", theme=None)
    st.divider()
    tryit.panel(state.get(), key="results")
    st.page_link("views/explore.py", label="Explore other sparsities, criteria and baselines", icon="⚖")
    st.page_link("views/export.py", label="Download the personalized model and the report", icon="⬇")


def changes_ui(run: Personalization) -> None:
    """The check clips that changed answer, and why there is no gain when there is none."""
    session = state.get()
    changes = session.changes
    if changes is None or changes.run_id != id(run):
        with ui.friendly_errors("Comparing the clips"):
            changes = session.changes = outcomes.clip_changes(run, models.bundle_for(run.model_name).model)
    if changes is None:
        return
    columns = {"clip": "clip", "said": "said (label)", "before": "general model", "after": "personalized model"}
    if changes.fixed:
        st.success(f"**{len(changes.fixed)} check clip{'s' * (len(changes.fixed) != 1)} were wrong and are now right.**")
        st.dataframe([{columns[k]: v for k, v in row.items()} for row in changes.fixed], hide_index=True, key="fixed_clips")
    if changes.broken:
        st.warning(f"**{len(changes.broken)} check clip{'s' * (len(changes.broken) != 1)} went the other way** "
                   "(right before, wrong now).")
        st.dataframe([{columns[k]: v for k, v in row.items()} for row in changes.broken], hide_index=True, key="broken_clips")
    reason = outcomes.no_gain_reason(run, changes)
    if reason:
        st.info(reason)


def fine_prune_ui() -> None:
    session = state.get()
    st.title("✂ Fine-prune")
    names = list(models.model_specs())
    if not names:
        ui.no_model_note("voice or face")
        return
    model_name = st.selectbox("Model", names, key="fp_model")
    bundle = models.bundle_for(model_name)
    individual = individual_ui(session, model_name, bundle)
    settings = settings_ui(bundle, model_name, session.loaded_settings.get(model_name))

    running = session.jobs.running
    if st.button("Run fine-pruning", type="primary", icon="✂", disabled=running, key="fp_run"):
        with ui.friendly_errors("Fine-pruning"):
            actions.start_personalization(session, model_name, individual, settings.validate())
            st.rerun()
    jobs.progress_panel(session, key="fine_prune")
    ui.show_flash(session, results_here=True)
    if session.run is not None:
        results_ui(session.run)
    elif not running:
        st.info("Press **Run fine-pruning** to personalize the model. It takes a few seconds; the page stays usable meanwhile.")


fine_prune_ui()
