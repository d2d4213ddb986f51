"""Make sure ``app.py`` (``st.navigation``) draws every page, even on a fresh server's first deep link.

Streamlit treats a ``pages/`` folder beside the main script as a v1 multipage app until
``st.navigation`` has run once in the process (``PagesManager.uses_pages_directory``). If the
first visitor of a fresh server opens ``/voice`` directly, Streamlit would run
``pages/voice.py`` on its own: no ``app.py``, a sidebar listing file names, no job polling.
Every page calls ``require_app_navigation()`` first: in that case it switches the v1 mode off
and reruns, so ``app.py`` runs and routes to the same page (page URLs are the file names, so
the v1 and v2 page ids agree). Costs one empty run, once per server process.
"""
import streamlit as st


def require_app_navigation() -> None:
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()
