"""``python -m fineprune info [MODEL ...]``: the shipped models, or the model files a user saved
(the Export page tells users to run it on the file they downloaded)."""
import numpy as np
import pytest

from fineprune.cli import main
from fineprune.engine.bundle import save_bundle
from fineprune.registry import available_shipped_models


def test_info_describes_a_personalized_file(tmp_path, tiny_vgg, capsys):
    model, config = tiny_vgg
    general = tmp_path / "general.pt"
    save_bundle(general, model, config, {"domain": "generic", "classes": list("abcd"), "input": {"shape": [1, 16, 20]},
                                         "test_accuracy": 0.8125, "test_split": "a made-up split"})
    data = tmp_path / "data"
    data.mkdir()
    for i in range(6):
        np.save(data / f"x{i}.npy", np.random.default_rng(i).standard_normal((1, 16, 20)).astype(np.float32))
    mine = tmp_path / "mine.pt"
    assert main(["personalize", "--model", str(general), "--data", str(data), "--sparsity", "0.6", "--out", str(mine)]) == 0
    capsys.readouterr()
    assert main(["info", str(mine)]) == 0
    out = capsys.readouterr().out
    assert "classes: a, b, c, d" in out and "test accuracy: 81.2% on a made-up split" in out
    assert "personalized from" in out and "sparsity 60" in out and "6 unlabeled files" in out


def test_info_on_a_missing_file_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["info", str(tmp_path / "nothing.pt")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


@pytest.mark.skipif("voice" not in available_shipped_models(), reason="the shipped voice model is not in assets/")
def test_info_reports_the_voice_models_held_out_accuracy(capsys):
    assert main(["info"]) == 0
    voice = capsys.readouterr().out.split("face:")[0]
    from fineprune.registry import load_model

    recorded = load_model("voice").card["held_out"]["accuracy"]
    assert f"test accuracy: {recorded:.1%} on FSDD" in voice
