"""The voice dev set's recipe and the guard replay used to choose the voice card's rule."""
import shutil

import numpy as np
import pytest
import torch

from fineprune.bench import voice_dev_rules as dev_rules
from fineprune.bench import voice_dev_set as dev_set
from fineprune.domains.voice_training import DEMO_VOICES, TRAINING_VOICES


def test_dev_voices_are_new_to_the_model():
    assert not set(dev_set.DEV_VOICES.values()) & set(TRAINING_VOICES)
    assert not set(dev_set.DEV_VOICES.values()) & set(DEMO_VOICES.values())
    dev_set._check_voices()


@pytest.mark.skipif(shutil.which("sox") is None, reason="sox not installed")
@pytest.mark.parametrize("condition", list(dev_set.CONDITIONS))
def test_every_capture_condition_gives_a_usable_clip(condition):
    t = np.arange(4000) / 8000
    clip = (0.3 * np.sin(2 * np.pi * 220 * t) * np.hanning(len(t))).astype(np.float32)
    out = dev_set.apply_condition(clip, condition, seed=1)
    assert out.dtype == np.float32 and np.isfinite(out).all() and 0 < np.abs(out).max() <= 1
    assert np.array_equal(out, dev_set.apply_condition(clip, condition, seed=1)), "deterministic"
    if dev_set.CONDITIONS[condition][1] is not None:  # noisy conditions add quiet lead-in and tail
        assert len(out) > len(clip)


@pytest.mark.skipif(shutil.which("sox") is None, reason="sox not installed")
def test_a_take_gets_its_own_tempo_and_pitch():
    t = np.arange(4000) / 8000
    clip = (0.3 * np.sin(2 * np.pi * 220 * t) * np.hanning(len(t))).astype(np.float32)
    slower = dev_set._tempo_pitch(clip, 0.85, -200)
    faster = dev_set._tempo_pitch(clip, 1.2, 200)
    assert len(slower) > len(clip) > len(faster)
    assert np.isfinite(slower).all() and np.isfinite(faster).all()


def test_other_engine_voices_are_not_espeak_and_never_choose():
    assert {engine for engine, _ in dev_set.ENGINE_VOICES.values()} == {"flite", "festival"}
    assert len(dev_set.ENGINE_CONDITIONS) >= len(dev_set.ENGINE_VOICES) and "clean" not in dev_set.ENGINE_CONDITIONS
    from fineprune.bench.voice_dev import summarize

    rows = [{"individual": name, "group": name, "kind": kind, "method": m, "accuracy": acc, "correct": c, "n_test": 40, "lost_clips": lost}
            for name, kind in (("a", "synthetic"), ("b", "engine"))
            for m, acc, c, lost in (("general", 0.9, 36, 0), ("card", 0.8, 32, 4), ("card_pipeline", 0.85, 34, 2))]
    table = summarize(rows, {"<all>": {}}, {"command": "x", "minutes": 1.0})
    assert "engine (n=1)" in table
    card = next(line for line in table.splitlines() if line.startswith("| card |"))
    assert card.endswith("| 80.0 | 1 / 0 / 0 / 1 |"), card  # "all dev" leaves the engine voice out; it has its own count


@pytest.mark.skipif(any(shutil.which(t) is None for t in dev_set.ENGINE_TOOLS), reason="flite/festival not installed")
@pytest.mark.parametrize("key", ["flite_slt", "festival_ked"])
def test_an_other_engine_voice_says_every_digit(key):
    from fineprune.domains.voice_training import feature_settings

    person = dev_set._engine_individual(key, "phone", feature_settings())
    assert person.adapt_x.shape[0] == 60 and person.test_x.shape[0] == 40
    assert person.kind == "engine" and person.model_key == "shipped"
    assert sorted(set(person.test_y.tolist())) == list(range(10))
    assert torch.isfinite(person.adapt_x).all()


def _outputs(general_first, recal_first, n_classes=4):
    """A stored-outputs dict whose adaptation logits pick the given classes."""
    def logits(first):
        out = torch.full((len(first), n_classes), -2.0)
        for i, c in enumerate(first):
            out[i, c] = 3.0
        return out

    g, r = logits(general_first), logits(recal_first)
    test = torch.eye(n_classes)
    out = {"general": (g, test), "bn_adapt": (r, test * 2)}
    for prefix in ("prune", "magnitude", "general_energy"):
        out[f"{prefix}_bn"] = (r, test * 3)
        out[f"{prefix}_keep"] = (g, test * 4)
    return out


def test_replay_follows_the_guard_rule():
    out = _outputs([0, 1, 2, 3] * 5, [0, 1, 2, 3] * 5)  # recalibration changes nothing: drop 0, agreement 1
    rule = {"min_entropy_drop": 0.0, "min_agreement": 0.9, "drop_min_expected": 0, "drop_max_hits": 0}
    test, d = dev_rules.replay_guard(out, rule)
    assert d["bn"] and torch.equal(test, out["prune_bn"][1])
    test, d = dev_rules.replay_guard(out, {**rule, "min_entropy_drop": 0.5})
    assert not d["bn"] and torch.equal(test, out["prune_keep"][1])
    test, _ = dev_rules.replay_guard(out, {**rule, "min_entropy_drop": 0.5}, "none")
    assert torch.equal(test, out["general"][1])


def test_replay_drops_classes_like_the_engine():
    out = _outputs([0, 1] * 10, [0, 1] * 10)  # classes 2, 3 only ever tie for second place
    rule = {"min_entropy_drop": -9.0, "min_agreement": 0.0, "drop_min_expected": 4, "drop_max_hits": 0}
    test, d = dev_rules.replay_guard(out, rule)
    assert set(d["dropped"]) <= {2, 3}
    assert (test[:, d["dropped"]] < -1e3).all()


def test_nested_choice_never_uses_the_held_out_group():
    y = torch.tensor([0, 1, 2, 3])
    good = _outputs([0, 1, 2, 3] * 5, [0, 1, 2, 3] * 5)
    people = [{"group": g, "out": good, "test_y": y, "n_test": 4, "general": 1.0} for g in ("a", "b", "c")]
    rules = [{"min_entropy_drop": 9.0, "min_agreement": 0.0, "drop_min_expected": 0, "drop_max_hits": 0},
             {"min_entropy_drop": -9.0, "min_agreement": 0.0, "drop_min_expected": 0, "drop_max_hits": 0}]
    chosen = dev_rules.nested_rules(people, rules)
    assert set(chosen) == {"<all>", "a", "b", "c"}
    assert all(rule in rules for rule in chosen.values())
    assert dev_rules.score_rule(people, rules[0])["losers"] == 0


def test_stored_outputs_are_keyed_by_the_models_weights():
    """A retrained LOSO model must not replay the outputs of the one before it."""
    from fineprune.bench.voice_dev import weights_fingerprint

    torch.manual_seed(0)
    a, b = torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2)
    before = weights_fingerprint({"shipped": a, "loso:x": b})
    assert before == weights_fingerprint({"loso:x": b, "shipped": a})
    b.running_mean[0] += 1e-6
    assert weights_fingerprint({"shipped": a, "loso:x": b}) != before


def test_the_shipped_card_is_the_one_the_bench_describes():
    # what ships is what voice_dev's constants say (the bench and the studies measure those), and the
    # class-mix correction it switches on has the class moments it reads
    from fineprune.bench.voice_dev import card_defaults, shipped_rule
    from fineprune.engine.label_shift import moments_of
    from fineprune.registry import load_model

    shipped = load_model("voice")
    assert shipped.card["prune_defaults"] == card_defaults(shipped_rule(shipped.card))
    assert shipped.card["prune_defaults"]["recalibrate_bn_label_shift"] and moments_of(shipped.model) is not None
