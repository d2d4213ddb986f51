"""Small drawing helpers shared by the pages."""
from __future__ import annotations

import contextlib
import html
import logging
import traceback

import streamlit as st

from fineprune.errors import FinePruneError

from .jobs import error_message

log = logging.getLogger("fineprune.studio")


@contextlib.contextmanager
def friendly_errors(what: str = "That"):
    """Show a ``FinePruneError`` as ``st.error`` with its message, anything else as a short
    generic message (traceback to the server log only). The page keeps going."""
    try:
        yield
    except FinePruneError as exc:
        st.error(str(exc), icon="⚠")
    except Exception as exc:  # a bug: never show a traceback to a classroom
        st.error(error_message(exc, traceback.format_exc(), what), icon="⚠")


def show_flash(state, *, results_here: bool = False) -> None:
    """Messages left by the previous run (job outcomes, what an upload added). A finished run is a
    toast that points to the results -- unless they are on the page that shows it (``results_here``)."""
    for level, message in state.flash:
        if level == "finished":
            where = "the results are below" if results_here else "the results are on the Fine-prune page"
            st.toast(f"{message}: {where}.", icon="✔")
        elif level == "toast":  # brief, on whatever page is open
            st.toast(message, icon="✔")
        else:
            getattr(st, level if level in ("success", "info", "warning", "error") else "info")(message)
    state.flash.clear()


def big_prompt(text: str, sub: str = "") -> None:
    """A prompt a class can read from the back of the room."""
    st.markdown(
        f"<div style='font-size:3.2rem;font-weight:700;line-height:1.1;margin:0.2em 0'>{html.escape(text)}</div>"
        + (f"<div style='font-size:1.1rem;color:#555'>{html.escape(sub)}</div>" if sub else ""),
        unsafe_allow_html=True,
    )


def pct(value: float | None, digits: int = 0) -> str:
    if value is None or value != value:  # None or NaN
        return "–"
    return f"{100 * value:.{digits}f}%"


def delta_points(after: float | None, before: float | None, suffix: str = "") -> dict:
    """``st.metric`` delta arguments: "+12 points" green, "-3 points" red, "±0 points" grey."""
    if after is None or before is None or after != after or before != before:
        return {"delta": None}
    points = 100 * (after - before)
    if abs(points) < 0.5:
        return {"delta": f"±0 points{suffix}", "delta_color": "off"}
    return {"delta": f"{points:+.0f} points{suffix}"}


def who(individual: str) -> str:
    from .models import MINE

    return "you (your recordings)" if individual == MINE else f"demo individual “{individual}”"


def human(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.1f}{unit}"
    return f"{n:.0f}"


def no_model_note(domain: str) -> None:
    st.warning(
        f"No {domain} model is available in this installation (assets/{domain}.pt is missing). "
        f"The README explains how to train it.",
        icon="ℹ",
    )
