"""The Studio's figures (studio/figures.py): pure functions from data to plotly figures, checked
on the values they plot, and the self-contained HTML page the Export page offers."""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from studio import figures

LAYERS = [{"name": "conv1", "weights": 10, "pruned": 0, "sparsity": 0.0, "spared": True},
          {"name": "conv2", "weights": 10, "pruned": 5, "sparsity": 0.5, "spared": False}]


def energies(**rows):
    """An EnergyRecord-like mapping: layer -> object with ``out_rms`` (what the heatmaps read)."""
    return {name: SimpleNamespace(out_rms=torch.tensor(values, dtype=torch.float32)) for name, values in rows.items()}


def all_figures():
    return [
        figures.waveform_figure(np.zeros(800), 8000),
        figures.logmel_figure(torch.zeros(1, 40, 63), hop_seconds=0.016),
        figures.counts_figure({"a": 2, "b": 0}),
        figures.sparsity_figure(LAYERS),
        figures.energy_heatmap(energies(conv1=[1.0, 2.0], conv2=[3.0]), ["conv1", "conv2"], "Your data"),
        figures.layer_energy_figure(energies(conv1=[1.0, 2.0]), energies(conv1=[2.0, 2.0]), "conv1"),
        figures.confusion_figure([[2, 0], [1, 1]], ["a", "b"], "Before"),
        figures.accuracy_curve_figure([{"sparsity_target": 0.5, "accuracy": 0.5}], current=0.5, general_accuracy=0.4),
        figures.criteria_figure([{"criterion": "energy", "sparsity_target": 0.5, "accuracy": 0.5}]),
    ]


def test_every_figure_has_a_title_and_labelled_axes():
    for fig in all_figures():
        assert fig.layout.title.text, fig
        assert fig.layout.xaxis.title.text and fig.layout.yaxis.title.text, fig.layout.title.text
    bars = figures.baselines_figure([{"method": "fineprune", "accuracy": 0.5, "uses_labels": False, "seconds": 1.0}])
    assert bars.layout.title.text and bars.layout.xaxis.title.text  # its y axis lists the methods by name


def test_waveform_and_logmel_axes_are_in_seconds():
    wave = figures.waveform_figure(np.linspace(-1, 1, 8000), 8000)
    trace = wave.data[0]
    assert len(trace.x) == 2000 and trace.x[1] == pytest.approx(4 / 8000)  # decimated to a few thousand points
    assert trace.y[-1] == pytest.approx(np.linspace(-1, 1, 8000)[-4])
    mel = figures.logmel_figure(torch.arange(40 * 63, dtype=torch.float32).reshape(1, 40, 63), hop_seconds=0.016)
    assert np.asarray(mel.data[0].z).shape == (40, 63)
    assert mel.data[0].x[-1] == pytest.approx(62 * 0.016) and mel.layout.xaxis.title.text == "time (s)"
    assert figures.logmel_figure(torch.zeros(1, 40, 5)).layout.xaxis.title.text == "frame"


def test_sparsity_bars_are_percent_and_spared_layers_say_so():
    bar = figures.sparsity_figure(LAYERS).data[0]
    assert bar.orientation == "h"  # layer names on the y axis: horizontal, never rotated
    assert list(bar.y) == ["conv1", "conv2"] and list(bar.x) == [0.0, 50.0]
    assert list(bar.text) == ["kept dense", "50%"]
    assert list(bar.marker.color) == [figures.SPARED, figures.PERSON] and list(bar.customdata) == [10, 10]


def test_energy_rows_are_scaled_to_their_own_maximum_across_the_width():
    fig = figures.energy_heatmap(energies(conv1=[1.0, 4.0], conv2=[3.0]), ["conv1", "conv2"], "Your data")
    z = np.asarray(fig.data[0].z)
    assert z.shape == (2, 128)
    assert np.allclose(z[0, :64], 0.25) and np.allclose(z[0, 64:], 1.0)  # 2 units stretched over 128 cells
    assert np.allclose(z[1], 1.0)
    assert list(fig.data[0].y) == ["conv1 (2)", "conv2 (1)"]
    detail = figures.layer_energy_figure(energies(conv1=[1.0, 4.0]), energies(conv1=[2.0, 3.0]), "conv1")
    assert list(detail.data[0].y) == [4.0, 1.0] and list(detail.data[1].y) == [3.0, 2.0]  # sorted by the person's use
    assert len(figures.layer_energy_figure(energies(conv1=[1.0]), None, "conv1").data) == 1


def test_confusion_is_shaded_by_share_of_the_true_class_and_shows_counts():
    fig = figures.confusion_figure([[2, 0], [1, 1], [0, 0]], ["a", "b", "c"], "Before")
    assert np.allclose(np.asarray(fig.data[0].z), [[1.0, 0.0], [0.5, 0.5], [0.0, 0.0]])  # a class without clips: 0
    assert np.asarray(fig.data[0].text).tolist() == [[2, 0], [1, 1], [0, 0]]


def test_accuracy_curves_are_sorted_percentages_with_reference_lines():
    points = [{"sparsity_target": 0.8, "accuracy": 0.3}, {"sparsity_target": 0.2, "accuracy": 0.9}]
    fig = figures.accuracy_curve_figure(points, current=0.8, general_accuracy=0.5)
    assert list(fig.data[0].x) == [20.0, 80.0] and list(fig.data[0].y) == [90.0, 30.0]
    hline, vline = fig.layout.shapes  # the general model's accuracy, the chosen sparsity
    assert hline.y0 == hline.y1 == 50.0 and vline.x0 == vline.x1 == 80.0
    assert len(figures.accuracy_curve_figure(points, general_accuracy=float("nan")).layout.shapes) == 0
    rows = [{"criterion": c, "sparsity_target": s, "accuracy": a} for c, s, a in
            [("energy", 0.5, 0.6), ("random", 0.5, 0.2), ("energy", 0.2, 0.8)]]
    crit = figures.criteria_figure(rows)
    assert [t.name for t in crit.data] == ["energy", "random"] and list(crit.data[0].x) == [20.0, 50.0]


def test_baselines_name_the_methods_and_mark_the_ones_using_labels():
    rows = [{"method": "fineprune", "accuracy": 0.7, "uses_labels": False, "seconds": 1.25},
            {"method": "backprop", "accuracy": 0.9, "uses_labels": True, "seconds": 3.0},
            {"method": "svd", "accuracy": 0.4, "uses_labels": False, "seconds": 0.5},
            {"method": "not_registered", "accuracy": 0.1, "uses_labels": False, "seconds": 0.1}]
    bar = figures.baselines_figure(rows).data[0]
    assert list(bar.y) == [figures.METHOD_LABELS["fineprune"], figures.METHOD_LABELS["backprop"],
                           figures.METHOD_LABELS["svd"], "not_registered"]
    assert list(bar.marker.color) == [figures.PERSON, "#EF6C00", figures.GENERAL, figures.GENERAL]
    assert list(bar.x) == [70.0, 90.0, 40.0, 10.0] and bar.text[0] == "70% · 1.25 s"


def test_counts_keep_the_class_order_and_empty_classes():
    bar = figures.counts_figure({"b": 3, "a": 0, "?": 1}).data[0]
    assert list(bar.x) == ["b", "a", "?"] and list(bar.y) == [3, 0, 1]


def test_photo_box_is_drawn_on_its_outline_only():
    gray = np.full((50, 60), 7, np.uint8)
    rgb = figures.photo_with_box(gray, (10, 10, 20, 20))
    green = [46, 125, 50]
    assert rgb.shape == (50, 60, 3)
    assert rgb[10, 15].tolist() == green and rgb[29, 15].tolist() == green and rgb[15, 10].tolist() == green
    assert rgb[20, 20].tolist() == [7, 7, 7] and rgb[0, 0].tolist() == [7, 7, 7]  # inside and outside untouched
    assert np.array_equal(figures.photo_with_box(gray, None), np.repeat(gray[..., None], 3, axis=2))
    edge = figures.photo_with_box(gray, (-5, 40, 100, 30))  # a box past the photo's borders is clipped, never fails
    assert edge[40, 30].tolist() == green and edge[49, 30].tolist() == green


def test_enlarge_is_pixel_for_pixel():
    crop = np.arange(48 * 48, dtype=np.int64).reshape(48, 48).astype(np.uint8)
    big = figures.enlarge(crop)
    assert big.shape == (192, 192) and big.dtype == np.uint8
    assert np.array_equal(big[::4, ::4], crop) and np.array_equal(big[3::4, 3::4], crop)
    assert figures.enlarge(crop, 2).shape == (96, 96)


def test_energy_difference_is_yours_minus_general_after_scaling_each_row():
    mine = energies(conv1=[1.0, 4.0], conv2=[3.0, 3.0])
    theirs = energies(conv1=[2.0, 2.0], conv2=[1.0, 3.0])
    z, units = figures.energy_difference(mine, theirs, ["conv1", "conv2"])
    assert z.shape == (2, 128) and units[0, 0] == 0 and units[0, -1] == 1
    assert np.allclose(z[0, :64], 0.25 - 1.0) and np.allclose(z[0, 64:], 0.0)  # unit 0: used by others, not by you
    assert np.allclose(z[1, :64], 1.0 - 1 / 3) and np.allclose(z[1, 64:], 0.0)
    fig = figures.energy_difference_heatmap(mine, theirs, ["conv1", "conv2"])
    assert fig.data[0].zmid == 0 and fig.data[0].zmax == pytest.approx(0.75) and fig.data[0].zmin == pytest.approx(-0.75)
    assert fig.layout.title.text and fig.layout.xaxis.title.text and list(fig.data[0].y) == ["conv1 (2)", "conv2 (2)"]


def test_chart_text_is_dark_and_large_and_colours_are_explicit():
    """Readable from the back of a room, and the same in the exported HTML as in the app: every figure
    carries its template and dark fonts; the criteria curves have their own colours, dashes and
    markers; the general model's line is drawn above the curves and named in the legend."""
    for fig in all_figures():
        assert fig.layout.template.layout.paper_bgcolor, fig.layout.title.text  # a template is embedded
        assert fig.layout.font.color == figures.INK and fig.layout.font.size >= 16
        for axis in (fig.layout.xaxis, fig.layout.yaxis):
            assert axis.tickfont.color == figures.INK and axis.tickfont.size >= 16 and axis.tickangle == 0
    rows = [{"criterion": c, "sparsity_target": 0.5, "accuracy": 0.5} for c in ("energy", "magnitude", "random")]
    crit = figures.criteria_figure(rows, general_accuracy=0.5)
    curves = [t for t in crit.data if t.x[0] is not None]
    assert len({t.line.color for t in curves}) == 3 and len({t.line.dash for t in curves}) == 3
    assert all(t.line.color for t in crit.data)
    (general,) = crit.layout.shapes
    assert general.layer == "above" and general.y0 == 50.0
    assert any(t.name == "general model (50%)" for t in crit.data)
    html = figures.figures_html([("criteria", crit)])
    assert all(t.line.color in html for t in curves)


def test_export_html_is_self_contained_with_one_heading_per_figure():
    figs = all_figures()
    html = figures.figures_html([("a <b>", figs[0]), ("second", figs[3])], title="Report & co")
    assert re.findall(r"<h2>(.*?)</h2>", html) == ["a &lt;b&gt;", "second"]
    assert "<title>Report &amp; co</title>" in html
    assert not re.search(r"<(script|link)[^>]+(src|href)=", html)  # plotly.js is inlined, nothing is fetched
    assert html.count("Plotly.newPlot") == 2 and html.count("plotly.js v") == 1  # the library once, both figures
    svg = ET.fromstring(figures.pipeline_svg())  # well-formed SVG
    assert svg.tag.endswith("svg") and len(svg.findall(".//{http://www.w3.org/2000/svg}rect")) > 4
