"""Figures the README quotes from committed measurements must match them (a re-measured demo card
otherwise leaves the README saying what the Studio no longer shows)."""
from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_readme_quotes_the_default_demo_individuals_measured_before_and_after():
    readme = (ROOT / "README.md").read_text()
    cards = [json.loads(p.read_text()) for p in sorted((ROOT / "assets" / "demo" / "voice").glob("*.json"))]
    default = next(card for card in cards if card.get("default"))
    quoted = re.search(rf"The default demo individual, {default['name']},.*?from (\d+)% to (\d+)%", readme, re.S)
    assert quoted, f"the README no longer names the default demo individual ({default['name']}) and its before/after"
    measured = default["measured"]
    assert (int(quoted[1]), int(quoted[2])) == (round(100 * measured["accuracy_before"]), round(100 * measured["accuracy_after"]))
