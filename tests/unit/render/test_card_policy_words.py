"""Card wording that names a policy number takes it from the knowledge: the titer window of
vaccine-response ({weeks_lo}-{weeks_hi} in cards/findings.yaml), never a copy typed by hand."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cds_service import knowledge
from cds_service.knowledge import KNOWLEDGE_DIR, KnowledgeError
from cds_service.render.cards import CardRenderer
from cds_service.render.orderables import Actions
from cds_service.wording import CARDS_DIR

WINDOW = "    post_vaccine_window_days: {min: 28, max: 56}"


def _renderer(tmp_path: Path, window: str = WINDOW, cards: Path = CARDS_DIR) -> CardRenderer:
    target = tmp_path / "knowledge"
    shutil.copytree(KNOWLEDGE_DIR, target, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    policy = target / "policy-cvid-ig.yaml"
    text = policy.read_text(encoding="utf-8")
    assert WINDOW in text
    policy.write_text(text.replace(WINDOW, window), encoding="utf-8")
    kn = knowledge.load(target)
    return CardRenderer(cards, Actions(kn, target, cards))


def _advice(renderer: CardRenderer, name: str) -> str | None:
    return renderer.advice(renderer.wording.criteria["vaccine-response"][name])


def test_the_titer_window_in_card_advice_is_the_policys(tmp_path: Path) -> None:
    renderer = _renderer(tmp_path)
    assert (
        _advice(renderer, "outside-window")
        == "Attach titers drawn 4–8 weeks after the PPSV23 dose."
    )
    wider = _renderer(tmp_path / "wider", "    post_vaccine_window_days: {min: 21, max: 70}")
    assert (
        _advice(wider, "outside-window") == "Attach titers drawn 3–10 weeks after the PPSV23 dose."
    )
    assert "(drawn 3–10 weeks after, before IG)" in (_advice(wider, "insufficient") or "")
    headline = wider.wording.criteria["vaccine-response"]["outside-window"].headline
    assert (
        headline.format(**wider.policy_words) == "Vaccine titers drawn outside the 3–10 week window"
    )


def test_an_unknown_placeholder_in_card_wording_stops_start_up(tmp_path: Path) -> None:
    cards = tmp_path / "cards"
    shutil.copytree(CARDS_DIR, cards)
    findings = cards / "findings.yaml"
    text = findings.read_text(encoding="utf-8")
    findings.write_text(text.replace("{weeks_hi} weeks after the", "{week_hi} weeks after the"))
    with pytest.raises(KnowledgeError, match=r"vaccine-response\.outside-window: \{week_hi\}"):
        _renderer(tmp_path, cards=cards)
