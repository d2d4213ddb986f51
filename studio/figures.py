"""Plotly figures for the Studio: pure functions (data in, ``go.Figure`` out), no streamlit.

Every figure has a title and labelled axes with units, and dark text big enough to read from the
back of a classroom; each carries its own template, fonts and trace colours, so it looks the same in
the app (drawn with ``theme=None``) and in the exported HTML file. ``figures_html`` writes figures
into one self-contained HTML file (plotly.js inlined, no CDN).
"""
from __future__ import annotations

import html
import math
from typing import Sequence

import numpy as np
import plotly.graph_objects as go
import torch

from fineprune.engine.methods import METHOD_LABELS

INK = "#111111"  # chart text: near-black, never Streamlit's light grey
FONT = dict(size=18, color=INK)
TICKS = dict(size=16, color=INK)
PERSON = "#2E7D32"
MANY_CLASSES = 20  # above this, figures show only the classes that occur (a 1000-class model, one person's few)
GENERAL = "#1565C0"
SPARED = "#9E9E9E"
# criteria curves: colour-blind-safe colours, each with its own dash and marker, so overlapping curves
# stay distinguishable (and keep their colours in the exported HTML)
SERIES = [("#2E7D32", "solid", "circle"), ("#D55E00", "dash", "square"), ("#0072B2", "dot", "diamond"),
          ("#CC79A7", "dashdot", "triangle-up"), ("#E69F00", "longdash", "x"), ("#56B4E9", "solid", "cross"),
          ("#000000", "dot", "star")]


def _layout(fig: go.Figure, title: str, x: str, y: str, height: int = 380) -> go.Figure:
    fig.update_layout(
        template="plotly_white",
        title=dict(text=title, font=dict(size=22, color=INK)),
        font=FONT,
        height=height,
        margin=dict(l=70, r=30, t=70, b=70),
        xaxis_title=x,
        yaxis_title=y,
        legend=dict(font=dict(size=16, color=INK)),
    )
    axes = dict(tickfont=TICKS, title_font=dict(size=18, color=INK), automargin=True, tickangle=0,
                linecolor="#444444", gridcolor="#D0D0D0")
    fig.update_xaxes(**axes)
    fig.update_yaxes(**axes)
    return fig


# --------------------------------------------------------------------------- clips
def waveform_figure(samples: np.ndarray, sample_rate: int, title: str = "Waveform") -> go.Figure:
    samples = np.asarray(samples, dtype=np.float32)
    step = max(1, len(samples) // 2000)  # a few thousand points are plenty on screen
    t = np.arange(0, len(samples), step) / sample_rate
    fig = go.Figure(go.Scatter(x=t, y=samples[::step], mode="lines", line=dict(color=PERSON, width=1)))
    fig.update_yaxes(range=[-1.05, 1.05], tickvals=[-1, -0.5, 0, 0.5, 1])  # ±1 is full scale
    return _layout(fig, title, "time (s)", "amplitude", height=300)


def logmel_figure(features: torch.Tensor, *, hop_seconds: float | None = None, title: str = "Log-mel spectrogram") -> go.Figure:
    """The model input of a voice clip: mel bands x frames (level relative to the loudest bin)."""
    mel = features.detach().float().reshape(-1, features.shape[-1]).numpy()
    x = np.arange(mel.shape[1]) * hop_seconds if hop_seconds else np.arange(mel.shape[1])
    fig = go.Figure(
        go.Heatmap(z=mel, x=x, colorscale="Viridis", colorbar=dict(title=dict(text="level", font=dict(size=13))))
    )
    return _layout(fig, title, "time (s)" if hop_seconds else "frame", "mel band", height=300)


def photo_with_box(gray: np.ndarray, box: tuple[int, int, int, int] | None, *, color=(46, 125, 50)) -> np.ndarray:
    """RGB copy of a gray photo with the detected face box drawn (for ``st.image``)."""
    rgb = np.repeat(np.asarray(gray, dtype=np.uint8)[..., None], 3, axis=2).copy()
    if box is None:
        return rgb
    x, y, w, h = box
    thick = max(2, round(max(rgb.shape[:2]) / 160))
    H, W = rgb.shape[:2]
    x0, y0, x1, y1 = max(0, x), max(0, y), min(W, x + w), min(H, y + h)
    for t in range(thick):
        rgb[max(0, y0 - t) : y1 + t, [max(0, x0 - t), min(W - 1, x1 - 1 + t)]] = color
        rgb[[max(0, y0 - t), min(H - 1, y1 - 1 + t)], max(0, x0 - t) : x1 + t] = color
    return rgb


def enlarge(crop: np.ndarray, factor: int = 4) -> np.ndarray:
    """Nearest-neighbour upscaling so a 48x48 crop is visible (what the model sees, pixel for pixel);
    gray (H, W) or colour (H, W, C) crops."""
    crop = np.asarray(crop, dtype=np.uint8)
    return crop.repeat(factor, axis=0).repeat(factor, axis=1)


def counts_figure(counts: dict[str, int], title: str = "Clips per class") -> go.Figure:
    labels = list(counts) if len(counts) <= MANY_CLASSES else [k for k, n in counts.items() if n]
    fig = go.Figure(go.Bar(x=labels, y=[counts[k] for k in labels], marker_color=PERSON, text=[counts[k] for k in labels]))
    fig.update_xaxes(type="category")
    return _slant_long_labels(_layout(fig, title, "class", "clips", height=280), labels)


def _slant_long_labels(fig: go.Figure, labels: Sequence[str]) -> go.Figure:
    """Horizontal tick labels, unless several long ones (object names) would overlap: then slanted."""
    if len(labels) > 4 and max((len(str(s)) for s in labels), default=0) > 5:
        fig.update_xaxes(tickangle=-30)
    return fig


# --------------------------------------------------------------------------- results
def sparsity_figure(layers: Sequence[dict], title: str = "Connections removed per layer") -> go.Figure:
    names = [r["name"] for r in layers]
    values = [100.0 * r["sparsity"] for r in layers]
    colors = [SPARED if r.get("spared") else PERSON for r in layers]
    text = [("kept dense" if r.get("spared") else f"{v:.0f}%") for r, v in zip(layers, values)]
    # horizontal bars: layer names stay horizontal and readable however many layers there are
    fig = go.Figure(go.Bar(y=names, x=values, orientation="h", marker_color=colors, text=text, textposition="outside",
                           textfont=dict(size=16, color=INK), cliponaxis=False, customdata=[r["weights"] for r in layers],
                           hovertemplate="%{y}: %{x:.1f}% of %{customdata} weights<extra></extra>"))
    fig.update_xaxes(range=[0, 118])
    fig.update_yaxes(type="category", autorange="reversed")
    return _layout(fig, title, "weights pruned (%)", "layer (input at the top)", height=max(320, 110 + 34 * len(layers)))


def _energy_matrix(energies, layers: Sequence[str], width: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Layers x ``width`` cells of RMS output energy, each row scaled to its own maximum and
    stretched across the full width (a 16-channel conv and a 256-neuron layer both fill a row).
    Returns the values and, per cell, the unit it shows."""
    z = np.zeros((len(layers), width))
    units = np.zeros((len(layers), width), dtype=int)
    for i, name in enumerate(layers):
        row = energies[name].out_rms.detach().float().numpy()
        idx = np.minimum((np.arange(width) * len(row)) // width, len(row) - 1)
        z[i] = row[idx] / (row.max() if row.max() > 0 else 1.0)
        units[i] = idx
    return z, units


def energy_heatmap(energies, layers: Sequence[str], title: str) -> go.Figure:
    z, units = _energy_matrix(energies, layers)
    sizes = {n: len(energies[n].out_rms) for n in layers}
    labels = [f"{n} ({sizes[n]})" for n in layers]
    fig = go.Figure(go.Heatmap(z=z, y=labels, x=np.linspace(0, 100, z.shape[1]), customdata=units,
                               colorscale="Greens", zmin=0, zmax=1,
                               colorbar=dict(title=dict(text="× layer max", font=dict(size=13))),
                               hovertemplate="%{y}: unit %{customdata}, energy %{z:.2f} of the layer max<extra></extra>"))
    fig.update_yaxes(autorange="reversed", type="category")
    return _layout(fig, title, "unit position in its layer (%)", "layer",
                   height=max(300, 60 + 38 * len(layers)))


def energy_difference(person, general, layers: Sequence[str], width: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Your energy minus the general data's, per unit: both rows scaled to their own layer maximum
    first (what the two heatmaps show), so +0.4 means "this unit carries 40 % of the layer's peak
    more on your data". Returns the values (layers x ``width``) and the unit per cell."""
    mine, units = _energy_matrix(person, layers, width)
    theirs, _ = _energy_matrix(general, layers, width)
    return mine - theirs, units


def energy_difference_heatmap(person, general, layers: Sequence[str],
                              title: str = "Your energy minus general energy") -> go.Figure:
    """Where your data differs from everyone else's: green units your data drives harder, blue
    units that only the general data uses (the connections into them are the first cut for you).
    The colour scale is stretched to the largest difference, so even a small one is visible; the
    colour bar gives the true values."""
    z, units = energy_difference(person, general, layers)
    span = max(0.05, float(np.abs(z).max()) if z.size else 0.05)
    sizes = {n: len(person[n].out_rms) for n in layers}
    labels = [f"{n} ({sizes[n]})" for n in layers]
    fig = go.Figure(go.Heatmap(z=z, y=labels, x=np.linspace(0, 100, z.shape[1]), customdata=units,
                               colorscale=[[0.0, GENERAL], [0.5, "#FFFFFF"], [1.0, PERSON]], zmin=-span, zmax=span, zmid=0,
                               colorbar=dict(title=dict(text="yours − general<br>(× layer max)", font=dict(size=13))),
                               hovertemplate="%{y}: unit %{customdata}, yours − general = %{z:+.2f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", type="category")
    return _layout(fig, title, "unit position in its layer (%); green: used more by you · blue: used more by others",
                   "layer", height=max(300, 80 + 38 * len(layers)))


def layer_energy_figure(person, general, layer: str) -> go.Figure:
    """One layer's units: RMS output energy on the person's data vs general data."""
    p = person[layer].out_rms.detach().float().numpy()
    units = np.arange(len(p))
    order = np.argsort(-p)
    fig = go.Figure(go.Bar(x=units, y=p[order], name="your data", marker_color=PERSON))
    if general is not None and layer in general:
        g = general[layer].out_rms.detach().float().numpy()
        fig.add_trace(go.Bar(x=units, y=g[order], name="general data", marker_color=GENERAL))
    fig.update_layout(barmode="group", legend=dict(orientation="h", y=1.02, x=1, xanchor="right", yanchor="bottom"))
    return _layout(fig, f"{layer}: energy per unit (sorted by your data)", "unit rank (most used by you first)", "RMS activation")


def confusion_figure(confusion: Sequence[Sequence[int]], classes: Sequence[str], title: str) -> go.Figure:
    cm = np.asarray(confusion, dtype=float)
    if len(classes) > MANY_CLASSES:  # only the classes this person said or the model answered
        keep = np.flatnonzero((cm.sum(0) + cm.sum(1)) > 0)
        cm, classes = cm[np.ix_(keep, keep)], [classes[i] for i in keep]
    support = cm.sum(1, keepdims=True)
    share = np.divide(cm, support, out=np.zeros_like(cm), where=support > 0)
    fig = go.Figure(go.Heatmap(z=share, x=list(classes), y=list(classes), colorscale="Blues", zmin=0, zmax=1,
                               text=cm.astype(int), texttemplate="%{text}",
                               colorbar=dict(title=dict(text="share of<br>true class", font=dict(size=13))),
                               hovertemplate="said %{y}, heard %{x}: %{text}<extra></extra>"))
    fig.update_xaxes(type="category")
    fig.update_yaxes(type="category", autorange="reversed")
    return _slant_long_labels(_layout(fig, title, "predicted class", "true class", height=420), list(classes))


def accuracy_curve_figure(points: Sequence[dict], *, current: float | None = None, general_accuracy: float | None = None,
                          title: str = "Accuracy vs sparsity (your check set)") -> go.Figure:
    pts = sorted(points, key=lambda p: p["sparsity_target"])
    fig = go.Figure(go.Scatter(x=[100 * p["sparsity_target"] for p in pts], y=[100 * p["accuracy"] for p in pts],
                               mode="lines+markers", name="fine-pruned", line=dict(color=PERSON, width=3)))
    if general_accuracy is not None and not math.isnan(general_accuracy):
        _general_line(fig, general_accuracy, GENERAL)
    if current is not None:
        fig.add_vline(x=100 * current, line_color="#C62828", line_width=2, annotation_text=f"{100 * current:.0f}%",
                      annotation_position="bottom right", annotation_font=dict(size=16, color="#C62828"))
    fig.update_xaxes(range=[-2, 97])
    fig.update_yaxes(range=[0, 112], tickvals=list(range(0, 101, 20)))
    _legend_below(fig)
    return _layout(fig, title, "weights pruned (%)", "accuracy (%)", height=420)


def _general_line(fig: go.Figure, accuracy: float, color: str) -> None:
    """The general model's accuracy: a dashed line drawn *above* the curves (a curve that sits on it
    must not hide it), named in the legend rather than by an annotation that can be clipped."""
    y = 100 * accuracy
    fig.add_hline(y=y, line_dash="dash", line_color=color, line_width=3, layer="above", opacity=0.9)
    fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", line=dict(color=color, dash="dash", width=3),
                             name=f"general model ({y:.0f}%)"))


def _legend_below(fig: go.Figure) -> None:
    fig.update_layout(showlegend=True, legend=dict(orientation="h", yanchor="top", y=-0.22, x=0, xanchor="left"))


def criteria_figure(rows: Sequence[dict], general_accuracy: float | None = None) -> go.Figure:
    fig = go.Figure()
    for i, criterion in enumerate(dict.fromkeys(r["criterion"] for r in rows)):
        pts = sorted((r for r in rows if r["criterion"] == criterion), key=lambda r: r["sparsity_target"])
        color, dash, symbol = SERIES[i % len(SERIES)]
        fig.add_trace(go.Scatter(x=[100 * r["sparsity_target"] for r in pts], y=[100 * r["accuracy"] for r in pts],
                                 mode="lines+markers", name=criterion, line=dict(color=color, dash=dash, width=3),
                                 marker=dict(color=color, symbol=symbol, size=11)))
    if general_accuracy is not None and not math.isnan(general_accuracy):
        _general_line(fig, general_accuracy, "#444444")
    fig.update_yaxes(range=[0, 112], tickvals=list(range(0, 101, 20)))
    _legend_below(fig)
    return _layout(fig, "Criteria compared: accuracy vs sparsity", "weights pruned (%)", "accuracy (%)", height=460)


def baselines_figure(rows: Sequence[dict]) -> go.Figure:
    names = [METHOD_LABELS.get(r["method"], r["method"]) for r in rows]
    colors = ["#EF6C00" if r["uses_labels"] else (PERSON if r["method"] == "fineprune" else GENERAL) for r in rows]
    fig = go.Figure(go.Bar(y=names, x=[100 * r["accuracy"] for r in rows], orientation="h", marker_color=colors,
                           text=[f"{100 * r['accuracy']:.0f}% · {r['seconds']:.2f} s" for r in rows], textposition="auto",
                           textfont=dict(size=16)))
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(range=[0, 105])
    return _layout(fig, "Methods compared on your check set (orange: uses labels)", "accuracy (%)", "", height=80 + 45 * len(rows))


# --------------------------------------------------------------------------- home / export
def pipeline_svg() -> str:
    """The one picture: general model -> your unlabeled data -> activation energies -> pruned model."""
    def net(x0, keep=None, color="#455A64"):
        cols = [(x0, [40, 75, 110, 145]), (x0 + 60, [55, 92, 130]), (x0 + 120, [75, 110])]
        lines, k = [], 0
        for (xa, ya), (xb, yb) in zip(cols, cols[1:]):
            for a in ya:
                for b in yb:
                    on = keep is None or keep[k % len(keep)]
                    k += 1
                    if on:
                        lines.append(f'<line x1="{xa}" y1="{a}" x2="{xb}" y2="{b}" stroke="{color}" stroke-width="2"/>')
        dots = "".join(f'<circle cx="{x}" cy="{y}" r="8" fill="white" stroke="{color}" stroke-width="3"/>' for x, ys in cols for y in ys)
        return "".join(lines) + dots

    def box(x, title, sub):
        return (f'<rect x="{x}" y="10" width="190" height="230" rx="16" fill="#F5F5F5" stroke="#BDBDBD"/>'
                f'<text x="{x + 95}" y="200" text-anchor="middle" font-size="17" font-weight="bold">{html.escape(title)}</text>'
                f'<text x="{x + 95}" y="224" text-anchor="middle" font-size="14" fill="#555">{html.escape(sub)}</text>')

    def arrow(x):
        return f'<path d="M{x} 125 h28" stroke="#2E7D32" stroke-width="5" marker-end="url(#head)"/>'

    wave = "".join(f'<rect x="{275 + 9 * i}" y="{105 - h}" width="6" height="{2 * h}" fill="#2E7D32"/>'
                   for i, h in enumerate([8, 20, 36, 50, 30, 44, 18, 40, 26, 12, 6, 22, 34, 16, 8]))
    bars = "".join(f'<rect x="{520 + 14 * i}" y="{165 - h}" width="10" height="{h}" fill="{"#2E7D32" if h > 40 else "#BDBDBD"}"/>'
                   for i, h in enumerate([90, 20, 70, 110, 12, 55, 30, 95, 8, 60]))
    keep = [1, 0, 1, 1, 0, 0, 1, 0, 1, 1, 0, 1, 0, 1, 1, 0, 1, 0]
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 1000 250" width="100%" font-family="sans-serif">'
        '<defs><marker id="head" markerWidth="6" markerHeight="6" refX="3" refY="3" orient="auto">'
        '<path d="M0,0 L6,3 L0,6 z" fill="#2E7D32"/></marker></defs>'
        + box(10, "General model", "trained on many people") + net(45)
        + arrow(205)
        + box(245, "Your voice or face", "a few clips, no labels") + wave
        + '<text x="340" y="176" text-anchor="middle" font-size="14" fill="#555">say 7 · say 3 · ...</text>'
        + arrow(440)
        + box(480, "Activation energy", "which connections you use") + bars
        + arrow(675)
        + box(715, "Your pruned model", "unused connections cut") + net(750, keep=keep, color="#2E7D32")
        + "</svg>"
    )


def figures_html(figures: Sequence[tuple[str, go.Figure]], title: str = "Fine-Pruning Studio report") -> str:
    """One self-contained HTML page: plotly.js is inlined once (works offline, loads nothing from a CDN)."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>",
             f"<body style='font-family:sans-serif;max-width:1100px;margin:auto'><h1>{html.escape(title)}</h1>"]
    for i, (heading, fig) in enumerate(figures):
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        parts.append(fig.to_html(full_html=False, include_plotlyjs=(i == 0), include_mathjax=False,
                                 default_width="100%", config={"responsive": True, "displaylogo": False}))
    parts.append("</body></html>")
    return "\n".join(parts)
