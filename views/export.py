"""Export: the personalized model, the report and the plots, downloaded straight from memory."""
import streamlit as st

from studio import exporting, models, projects, state, ui

FORMAT_HELP = {
    "masked": "masks kept beside the weights (torch.nn.utils.prune): reloads as the same pruned model",
    "sparse": "compact: 1 bit per weight for the mask plus the surviving values",
    "structured": "smaller dense model: whole pruned units removed (fastest; best with the 'channel' criterion)",
}


def export_ui() -> None:
    session = state.get()
    st.title("Export")
    ui.show_flash(session)
    run = session.run
    with st.expander("Save or open a project (your clips, labels, split, settings and result)"):
        projects.panel(session, key="export")
    if run is None:
        st.info("Nothing to export yet: run fine-pruning first.")
        st.page_link("views/fine_prune.py", label="Go to Fine-prune", icon="✂")
        return
    st.caption(f"{run.model_name} model personalized for {run.individual} · {run.criterion}, "
               f"{100 * run.settings.sparsity:.0f}% target · accuracy {ui.pct(run.before and run.before.accuracy)} → "
               f"{ui.pct(run.after and run.after.accuracy)}")
    st.info("Files are built in memory and go straight to your browser's download. None of your recordings, "
            "photos, crops or features is in them: the model holds weights and masks, the report holds numbers.")
    bundle = models.bundle_for(run.model_name)
    slug = exporting.slug(f"{run.model_name}-{run.individual}")

    st.subheader("Personalized model")
    formats = exporting.available_formats()
    fmt = st.radio("File format", formats, horizontal=True, key="export_format",
                   format_func=lambda f: f, captions=[FORMAT_HELP.get(f, "") for f in formats])
    with ui.friendly_errors("Writing the model file"):
        data = exporting.model_file(session, bundle, fmt)
        st.download_button(f"Download the model ({len(data) / 1024:.0f} kB, {fmt})", data, file_name=f"{slug}-{fmt}.pt",
                           mime="application/octet-stream", icon="⬇", on_click="ignore", type="primary", key="dl_model")
        st.caption("Load it with `fineprune.load_bundle(path)` or `python -m fineprune info PATH`.")

    st.subheader("Report")
    a, b = st.columns(2)
    a.download_button("Report (JSON)", exporting.report_json(run), file_name=f"{slug}-report.json",
                      mime="application/json", icon="⬇", on_click="ignore", key="dl_json")
    b.download_button("Per-layer table (CSV)", exporting.layers_csv(run), file_name=f"{slug}-layers.csv",
                      mime="text/csv", icon="⬇", on_click="ignore", key="dl_csv")

    st.subheader("Plots")
    st.caption("One HTML file with every plot of the results; interactive and fully offline (plotly.js is inside).")
    st.download_button("Plots (HTML)", lambda: exporting.plots_html(session), file_name=f"{slug}-plots.html",
                       mime="text/html", icon="⬇", on_click="ignore", key="dl_html")


export_ui()
