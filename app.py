"""Fine-Pruning Studio: ``streamlit run app.py`` (see the README's "The Studio").

Pages are thin views in ``views/`` (not ``pages/``: that name would make Streamlit treat the app as a
legacy multipage app); the work is done by ``fineprune`` (the engine) through
``studio`` (session state, cached models, job polling, figures). Icons are symbols that
DejaVu Sans draws (Streamlit accepts them as emoji, and they render on a machine without an emoji
font, as plain text): a ``:material/...:`` icon would make the browser fetch an SVG from
fonts.gstatic.com, and this app loads nothing from outside the machine it runs on.
"""
import os

# OpenMP worker threads spin while they wait; on a busy machine (a classroom laptop running other
# things, a shared server) that made a demo run 10-20x slower. Let them sleep. Read once, when torch
# loads, so it must be set before anything imports torch; an explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import streamlit as st  # noqa: E402

st.set_page_config(page_title="Fine-Pruning Studio", page_icon="✂", layout="wide")

from studio import classroom, jobs, state  # noqa: E402

PAGES = [
    st.Page("views/home.py", title="Home", icon="☀", default=True),
    st.Page("views/voice.py", title="Voice", icon="☎"),
    st.Page("views/face.py", title="Face", icon="☺"),
    st.Page("views/objects.py", title="Objects", icon="☕"),
    st.Page("views/fine_prune.py", title="Fine-prune", icon="✂"),
    st.Page("views/explore.py", title="Explore", icon="⚖"),
    st.Page("views/export.py", title="Export", icon="⬇"),
]
PAGES_WITH_OWN_PROGRESS = {"fine_prune", "explore"}

# presenter-friendly: the numbers a class reads from the back of the room (inline CSS, nothing fetched)
PRESENTER_CSS = "<style>[data-testid='stMetricValue'] { font-size: 3rem; font-weight: 600; }</style>"

page = st.navigation(PAGES)
st.html(PRESENTER_CSS)
classroom.sidebar()  # classroom mode (make classroom): the address students open, and its QR code
# state.get() each time, never a module-level name: the script's module outlives the run and would
# keep an ended session's state (and its job) alive
jobs.collect(state.get())  # a job that ended since the last run: its result or message goes into the state
if page.url_path not in PAGES_WITH_OWN_PROGRESS:
    with st.sidebar:
        jobs.progress_panel(state.get(), key="sidebar", compact=True)
page.run()
