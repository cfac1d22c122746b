"""Regression guard on the labelled evaluation set, per split, per category and per language:
each must stay at 90 % action-sequence match or better (the benchmark reports the same
numbers; this fails the build when a change loses one category while the overall score hides
it). FLOORS lists the exceptions by number: where a held-out split measured lower at its one
run (benchmarks/results/), that measurement (known gaps, see docs/interpreter.md, not targets:
a change may only raise them); where a split was since tuned above GUARD, a higher floor."""

from __future__ import annotations

import pytest
from interpreter import SPLITS, score, unseen

GUARD = 0.90
#: (split, category, language, "expression", "intensity" or "ruled_out") → its floor where it is not GUARD.
FLOORS: dict[tuple[str, str], float] = {
    # After the third round of issue 16 every earlier split, category and language measures at
    # or above GUARD (the floors that replaced, holdout2 indirect 0.55, holdout3 overall 0.66,
    # holdout4 indirect 0.84, ..., are in this file's history and in benchmarks/results/).
    # holdout5, run once at 5fed041 (interpreter-cpu-2026-12-06-holdout5.json: 91.6 %), tuned
    # on since (a development split): the fourth round reached 100 % on every row of it, with
    # and without the sentence model (interpreter-cpu-2026-12-06-all-splits-round4.json). The
    # floors allow one utterance less per category or language, as any change may lose one.
    ("holdout5", "overall"): 0.99,
    ("holdout5", "confusion"): 0.94,
    ("holdout5", "indirect"): 0.97,
    ("holdout5", "multilingual"): 0.98,
    ("holdout5", "ordering"): 0.94,
    ("holdout5", "statement"): 0.96,
    ("holdout5", "de"): 0.90,
    ("holdout5", "fr"): 0.90,
    ("holdout5", "zh"): 0.91,
    ("holdout5", "intensity"): 0.94,
    # holdout6, run once at 255a21f after the fourth round (interpreter-cpu-2026-12-06-holdout6.json:
    # 90.9 %), tuned on since (a development split): the fifth round read its failures and
    # brought it to 98.0 % (interpreter-cpu-2026-12-06-all-splits-round5.json). Floors one
    # utterance under that, except where the one run measured lower (negated_face, intensity).
    ("holdout6", "overall"): 0.97,
    ("holdout6", "indirect"): 0.94,
    ("holdout6", "multilingual"): 0.97,
    ("holdout6", "negated_face"): 0.85,
    ("holdout6", "stop"): 0.96,
    ("holdout6", "es"): 0.84,
    ("holdout6", "intensity"): 0.88,
    ("holdout6", "ruled_out"): 0.85,
    # dev6: the fifth round's own split, written before it (83.6 % then,
    # interpreter-cpu-2026-12-06-dev6-before.json), tuned on since: 98.6 %.
    ("dev6", "overall"): 0.97,
    # holdout7, run once at 34472cb after the fifth round (interpreter-cpu-2026-12-06-holdout7.json:
    # 90.6 %), tuned on since (a development split): the sixth round read its failures and
    # brought every row to 100 % (interpreter-cpu-2026-12-06-all-splits-round6.json). Floors one
    # utterance under that (the one run's floors were lower: confusion 0.80, slang 0.75, typo
    # 0.81, fr 0.80, ja 0.84, expression 0.89, intensity 0.66).
    ("holdout7", "overall"): 0.99,
    ("holdout7", "chitchat"): 0.91,
    ("holdout7", "confusion"): 0.95,
    ("holdout7", "expression_intensity"): 0.95,
    ("holdout7", "indirect"): 0.98,
    ("holdout7", "mood"): 0.93,
    ("holdout7", "multi"): 0.93,
    ("holdout7", "multilingual"): 0.99,
    ("holdout7", "negated_face"): 0.91,
    ("holdout7", "negation"): 0.91,
    ("holdout7", "ordering"): 0.95,
    ("holdout7", "single"): 0.93,
    ("holdout7", "slang"): 0.93,
    ("holdout7", "statement"): 0.95,
    ("holdout7", "stop"): 0.95,
    ("holdout7", "unsupported"): 0.91,
    ("holdout7", "en"): 0.99,
    ("holdout7", "es"): 0.96,
    ("holdout7", "de"): 0.96,
    ("holdout7", "fr"): 0.96,
    ("holdout7", "pt"): 0.96,
    ("holdout7", "it"): 0.96,
    ("holdout7", "ja"): 0.96,
    ("holdout7", "zh"): 0.96,
    ("holdout7", "expression"): 0.98,
    ("holdout7", "intensity"): 0.97,
    ("holdout7", "ruled_out"): 0.94,
    # holdout8, run once at the round-6 tip (interpreter-cpu-2026-12-06-holdout8.json: 94.0 %; its
    # 438 texts no other split holds: 92.5 %, interpreter-cpu-2026-12-06-holdout8-unseen.json),
    # tuned on since (a development split): the seventh round read its failures and brought it to
    # 99.5 % (interpreter-cpu-2026-12-06-all-splits-round7.json). Floors one utterance under that
    # (the one run's were lower: indirect 0.80, single/it/ja 0.88).
    ("holdout8", "overall"): 0.98,
    ("holdout8", "chitchat"): 0.92,
    ("holdout8", "confusion"): 0.96,
    ("holdout8", "expression_intensity"): 0.96,
    ("holdout8", "indirect"): 0.96,
    ("holdout8", "mood"): 0.96,
    ("holdout8", "multi"): 0.96,
    ("holdout8", "multilingual"): 0.99,
    ("holdout8", "negated_face"): 0.96,
    ("holdout8", "negation"): 0.92,
    ("holdout8", "ordering"): 0.92,
    ("holdout8", "single"): 0.96,
    ("holdout8", "slang"): 0.96,
    ("holdout8", "statement"): 0.96,
    ("holdout8", "stop"): 0.96,
    ("holdout8", "typo"): 0.96,
    ("holdout8", "unsupported"): 0.96,
    ("holdout8", "en"): 0.98,
    ("holdout8", "es"): 0.96,
    ("holdout8", "de"): 0.96,
    ("holdout8", "fr"): 0.96,
    ("holdout8", "pt"): 0.96,
    ("holdout8", "it"): 0.96,
    ("holdout8", "ja"): 0.96,
    ("holdout8", "zh"): 0.96,
    ("holdout8", "expression"): 0.97,
    ("holdout8", "intensity"): 0.96,
    ("holdout8", "ruled_out"): 0.95,
    # dev7: the seventh round's own split, written and committed before it (89.6 % then,
    # interpreter-cpu-2026-12-06-dev7-before.json), tuned on since: 100 %. Floors one utterance
    # under that where a group has more than ten rows; the smaller ones (negation 4, es/de/fr/pt/zh
    # 5-6 each) stay at GUARD, i.e. every row.
    ("dev7", "overall"): 0.99,
    ("dev7", "indirect"): 0.98,
    ("dev7", "multilingual"): 0.98,
    ("dev7", "statement"): 0.96,
    ("dev7", "expression_intensity"): 0.93,
    ("dev7", "en"): 0.99,
    ("dev7", "it"): 0.94,
    ("dev7", "ja"): 0.95,
    ("dev7", "expression"): 0.95,
    ("dev7", "intensity"): 0.97,
    # holdout9, run once at dc1e56c (interpreter-cpu-2026-12-06-holdout9.json: 93.5 %, indirect
    # 0.60, confusion/negated_face/ordering 0.88, intensity band 83.3 %), tuned on by the eighth
    # round (indirect 0.88 after it). Floors one utterance (of 25) under the round-8 numbers where
    # they sit below GUARD; the blind run's own numbers were lower for indirect.
    # The ninth round raised negated_face and ruled-out faces to 100 %, ordering to 0.92 and the
    # split to 96.9 % (interpreter-cpu-2026-12-06-all-splits-round9.json): those floors raised to
    # one utterance under.
    ("holdout9", "overall"): 0.96,
    ("holdout9", "indirect"): 0.84,
    ("holdout9", "confusion"): 0.84,
    ("holdout9", "negated_face"): 0.96,
    ("holdout9", "ordering"): 0.88,
    ("holdout9", "ruled_out"): 0.96,
    # dev8: the eighth round's own rows, measured after it (interpreter-cpu-2026-12-06-all-splits-round8.json);
    # 73.5 % before any rule changed (interpreter-cpu-2026-12-06-dev8-before.json). Floors at the
    # round-8 numbers (the per-language groups hold 6-8 rows) and one utterance under for indirect.
    ("dev8", "indirect"): 0.84,
    ("dev8", "de"): 0.85,
    ("dev8", "ja"): 0.83,
    ("dev8", "zh"): 0.87,
    # holdout10, run once at cf3b160 (interpreter-cpu-2026-12-06-holdout10.json: 95.4 %; negated_face
    # 0.84, indirect 0.85, ordering 0.88, intensity band 89.1 %), tuned on by the ninth round: 98.1 %,
    # negated_face and ruled-out faces 100 %, indirect 0.975, ordering 0.96
    # (interpreter-cpu-2026-12-06-all-splits-round9.json). Floors one utterance under those.
    ("holdout10", "overall"): 0.97,
    ("holdout10", "negated_face"): 0.96,
    ("holdout10", "indirect"): 0.95,
    ("holdout10", "ordering"): 0.92,
    ("holdout10", "ruled_out"): 0.96,
    # dev9: the ninth round's own rows, 70.1 % before any rule changed
    # (interpreter-cpu-2026-12-06-dev9-before.json), 98.3 % after it.
    ("dev9", "overall"): 0.97,
    ("dev9", "negated_face"): 0.98,
    ("dev9", "ruled_out"): 0.98,
}
#: intensity bands have their own bar (issue 16: 85 %)
INTENSITY_GUARD = 0.85



@pytest.fixture(scope="module")
def scored(embedded_eval):
    items, outputs = embedded_eval
    per_split = {}
    for split in SPLITS:
        chosen = [(i, o) for i, o in zip(items, outputs, strict=True) if i["split"] == split]
        if chosen:
            per_split[split] = score([i for i, _ in chosen], [o for _, o in chosen])
    return score(items, outputs), per_split


def _floor(split: str, key: str) -> float:
    return FLOORS.get((split, key), GUARD)


def test_overall_action_sequence_match_stays_above_the_guard(scored):
    overall, per_split = scored
    assert overall["action_sequence_exact_match"] >= GUARD
    for split, result in per_split.items():
        assert result["action_sequence_exact_match"] >= _floor(split, "overall"), split


@pytest.mark.parametrize("split", SPLITS)
def test_every_category_stays_above_the_guard(scored, split):
    if split not in scored[1]:
        pytest.skip(f"no {split} utterances in the evaluation set")
    result = scored[1][split]
    low = {c: v for c, v in result["per_category_exact_match"].items() if v < _floor(split, c)}
    assert not low, f"{split}: categories under their floor: {low}"


@pytest.mark.parametrize("split", SPLITS)
def test_every_language_stays_above_the_guard(scored, split):
    if split not in scored[1]:
        pytest.skip(f"no {split} utterances in the evaluation set")
    result = scored[1][split]
    low = {c: v for c, v in result["per_language_exact_match"].items() if v < _floor(split, c)}
    assert not low, f"{split}: languages under their floor: {low}"


def test_every_language_is_measured(scored):
    for split in ("dev2", "holdout2", "dev3", "holdout4", "holdout5", "holdout6", "dev6", "holdout7", "holdout8", "dev7"):
        assert {"en", "es", "de", "fr", "pt", "it", "ja", "zh"} <= set(scored[1][split]["per_language_exact_match"])


def test_asked_faces_and_intensity_bands_stay_above_the_guard(scored):
    overall, per_split = scored
    for split, result in [("all", overall), *per_split.items()]:
        intensity_floor = FLOORS.get((split, "intensity"), INTENSITY_GUARD)
        expression_floor = FLOORS.get((split, "expression"), GUARD)
        assert result["expression_accuracy"] is None or result["expression_accuracy"] >= expression_floor, split
        assert result["intensity_accuracy"] is None or result["intensity_accuracy"] >= intensity_floor, split
        ruled_out = result["ruled_out_expression_absent"]
        assert ruled_out is None or ruled_out >= FLOORS.get((split, "ruled_out"), GUARD), split


def test_the_score_catches_a_ruled_out_face():
    """The metric itself: a shown face that the user ruled out fails the utterance."""
    from comfyui_persona.persona.interpreter import Interpretation
    from comfyui_persona.persona.schema import ActionDirective

    item = {
        "text": "nod but don't smile",
        "actions": ["nod"],
        "expression": None,
        "category": "c",
        "not_expression": "smile",
    }
    smiling = Interpretation(directives=[ActionDirective(action="nod", expression="smile", intensity=0.5)])
    plain = Interpretation(directives=[ActionDirective(action="nod", expression="neutral", intensity=0.5)])
    assert score([item], [smiling])["action_sequence_exact_match"] == 0.0
    assert score([item], [plain])["action_sequence_exact_match"] == 1.0


def test_unseen_keeps_only_the_texts_no_other_split_holds():
    rows = [{"text": "Wave!", "split": "a"}, {"text": "wave", "split": "b"}, {"text": "Sit down.", "split": "b"}]
    assert unseen([r for r in rows if r["split"] == "b"], rows) == [rows[2]]
