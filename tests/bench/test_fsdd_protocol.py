"""``bench fsdd``'s protocol: who adapts on what, and that choices are nested (never made on the
held-out speaker)."""
import torch

from fineprune.domains import voice_training as voice


def test_bench_individual_protocol():
    from fineprune.bench.fsdd import Speaker, individual

    x = torch.arange(500, dtype=torch.float32)[:, None]
    y = torch.arange(500) // 50
    takes = torch.arange(500) % 50
    spk = Speaker("s", voice.ClipSet(x, y, ["s"] * 500, takes))
    person = individual(spk)
    assert len(person.adapt_x) == 450 and len(person.test_x) == 50
    assert set(person.test_x.flatten().long().remainder(50).tolist()) == set(range(5))
    few = individual(spk, per_digit=2, digits=(3, 7))
    assert len(few.adapt_x) == 4 and len(few.test_x) == 96  # takes 0-4 + the 43 unused takes of each digit
    assert set(few.test_y.tolist()) == {3, 7}
    assert not set(few.adapt_x.flatten().tolist()) & set(few.test_x.flatten().tolist())


def test_nested_choice_never_uses_the_held_out_speaker():
    from fineprune.bench.fsdd import nested_choice

    rows = []
    for s in ("a", "b", "c"):
        for pipe in ("p", "q"):
            for sp in (0.5, 0.7):
                dev = 0.9 if pipe == "p" else 0.5
                if s == "a" and pipe == "q":
                    dev = 1.0  # speaker a alone loves q: only a's own choice could pick q
                rows.append({"individual": s, "pipeline": pipe, "sparsity_target": sp, "dev_accuracy": dev, "test_accuracy": 0})
    choice = nested_choice(rows, {"a": 0.8, "b": 0.8, "c": 0.8})
    assert choice["a"]["pipeline"] == "p" and choice["a"]["sparsity"] == 0.7


def test_the_committed_loso_models_each_leave_out_their_speaker():
    """The benches score each FSDD speaker with a general model that never heard them; the six are
    committed (retraining on another CPU gives other weights and moves every result built on them)."""
    import json

    from fineprune.domains.voice_training import FSDD_SPEAKERS
    from fineprune.engine.bundle import load_bundle
    from fineprune.paths import LOSO_MODELS

    for speaker in FSDD_SPEAKERS:
        bundle = load_bundle(LOSO_MODELS / f"loso_{speaker}.pt")
        heard = bundle.card["trained_on"]["fsdd_speakers"]
        assert speaker not in heard and len(heard) == len(FSDD_SPEAKERS) - 1
        assert f"--exclude-speaker {speaker}" in bundle.card["training"]["command"]
        assert json.loads((LOSO_MODELS / f"loso_{speaker}.json").read_text()) == bundle.card
