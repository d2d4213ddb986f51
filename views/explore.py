"""Explore: a sparsity slider over energies recorded once, criteria compared, and the baselines."""
import pandas as pd
import streamlit as st

from fineprune.person import options
from fineprune.person.explore import GRID, nearest
from studio import actions, figures, jobs, state, ui


def slider_ui(session, run) -> None:
    st.subheader("Sparsity slider")
    st.caption("The activation energies of your data were recorded once; every position of the slider is measured "
               "once in the background (masks, BatchNorm, your check clips), so moving it only looks the result up.")
    target = st.select_slider("Weights pruned", options=GRID, value=nearest(GRID, run.settings.sparsity),
                              format_func=lambda v: f"{100 * v:.0f}%", key="explore_sparsity")
    with ui.friendly_errors("Exploring"):
        view = actions.explore_step(session, target)
        point, before = view.point, None if run.before is None else run.before.accuracy
        a, b, c = st.columns(3)
        a.metric("Accuracy at this sparsity", ui.pct(point["accuracy"]), **ui.delta_points(point["accuracy"], before, " vs general"))
        b.metric("General model", ui.pct(before))
        c.metric("Weights pruned (prunable layers)", ui.pct(point["sparsity"]))
        if view.snapped:
            st.caption(f"{100 * target:.0f}% is still being measured: showing the nearest measured position, "
                       f"{100 * view.shown:.0f}%, until it is ready.")
        left, right = st.columns(2)
        left.plotly_chart(figures.accuracy_curve_figure(view.curve, current=view.shown, general_accuracy=before),
                          key="explore_curve", theme=None)
        right.plotly_chart(figures.sparsity_figure(point["layers"], f"Per layer at {100 * view.shown:.0f}%"),
                           key="explore_layers", theme=None)
        jobs.precompute_note(session, view)


def criteria_ui(session, run) -> None:
    st.subheader("Criteria compared")
    st.caption("Each criterion ranks the connections differently. Random and magnitude are controls; "
               "'general_energy' scores with energies from other people's data instead of yours.")
    names = list(options.criteria())
    default = [c for c in dict.fromkeys((run.settings.criterion, run.criterion, "magnitude", "random")) if c in names]
    chosen = st.multiselect("Criteria", names, default=default, key="explore_criteria")
    sparsities = [0.3, 0.5, 0.7, 0.9]
    if st.button("Compare criteria", disabled=session.jobs.running or not chosen, key="explore_compare"):
        with ui.friendly_errors("Comparing criteria"):
            actions.start_criteria(session, chosen, sparsities)
            st.rerun()
    if session.criteria_rows:
        before = None if run.before is None else run.before.accuracy
        st.plotly_chart(figures.criteria_figure(session.criteria_rows, before), key="explore_criteria_fig", theme=None)


def baselines_ui(session, run) -> None:
    st.subheader("Baselines and their compute cost")
    st.caption("Label-free methods see only your adaptation clips; backprop fine-tuning also reads their labels. "
               "All are scored on the same check clips.")
    epochs = st.number_input("Backprop epochs", 1, 50, 15, key="explore_epochs")
    if st.button("Run the baselines", disabled=session.jobs.running, key="explore_baselines"):
        with ui.friendly_errors("Running the baselines"):
            actions.start_baselines(session, int(epochs))
            st.rerun()
    if session.baseline_rows:
        rows = session.baseline_rows
        st.plotly_chart(figures.baselines_figure(rows), key="explore_baselines_fig", theme=None)
        table = pd.DataFrame([{
            "method": figures.METHOD_LABELS.get(r["method"], r["method"]),
            "uses labels": "yes" if r["uses_labels"] else "no",
            "accuracy (%)": round(100 * r["accuracy"], 1),
            "weights pruned (%)": round(100 * r["sparsity"], 1),
            "compute (FLOPs)": ui.human(r["flops"]),
            "time (s)": round(r["seconds"], 2),
        } for r in rows])
        st.dataframe(table, hide_index=True, width="stretch")


def explore_ui() -> None:
    session = state.get()
    st.title("Explore")
    jobs.progress_panel(session, key="explore")
    ui.show_flash(session)
    run = session.run
    if run is None:
        st.info("Nothing to explore yet: run fine-pruning first (or the one-click demo on the Home page).")
        st.page_link("views/fine_prune.py", label="Go to Fine-prune", icon="✂")
        return
    st.caption(f"The {run.model_name} model personalized for {ui.who(run.individual)}, {run.criterion} criterion")
    slider_ui(session, run)
    st.divider()
    if run.before is None:
        st.info("Criteria and baselines are compared on labelled check clips, and this run has none.")
        return
    criteria_ui(session, run)
    st.divider()
    baselines_ui(session, run)


explore_ui()
