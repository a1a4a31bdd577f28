"""BLiMP's fields and its two phenomenon groupings (the data's 13, the paper's 12)."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from tests.helpers import SYNTHETIC_STEPS, logistic_acc
from tests.helpers import planted_tables as tables
from trajectories import fields
from trajectories.schema import CURVE_COLUMNS

LOG_STEPS = np.array(SYNTHETIC_STEPS)


def test_the_paper_grouping_has_12_phenomena_and_the_data_13():
    data, paper = fields.phenomena("data"), fields.phenomena("paper")
    assert len(data) == len(paper) == 67
    assert len(set(data.values())) == 13 and len(set(paper.values())) == 12
    assert data["animate_subject_passive"] == data["animate_subject_trans"] == "s-selection"
    assert paper["animate_subject_passive"] == paper["animate_subject_trans"] == "argument_structure"
    assert Counter(paper.values())["argument_structure"] == Counter(data.values())["argument_structure"] + 2
    assert {p: t for p, t in data.items() if t != paper[p]} == {"animate_subject_passive": "s-selection",
                                                                "animate_subject_trans": "s-selection"}
    with pytest.raises(fields.GroupingError, match="unknown grouping"):
        fields.phenomena("chomsky")


def test_field_map_covers_every_paradigm_with_four_fields():
    assert set(fields.BLIMP_FIELDS) == set(fields.BLIMP_PHENOMENA)
    assert set(fields.BLIMP_FIELDS.values()) == {"morphology", "syntax", "semantics", "syntax_semantics"}
    # Every phenomenon lies in one field except NPI licensing, whose scope paradigms the data files under
    # syntax_semantics and its licensor paradigms under semantics.
    by_phenomenon = {}
    for paradigm, phenomenon in fields.BLIMP_PHENOMENA.items():
        by_phenomenon.setdefault(phenomenon, set()).add(fields.BLIMP_FIELDS[paradigm])
    assert {p for p, f in by_phenomenon.items() if len(f) > 1} == {"npi_licensing"}


def test_committed_field_map_is_the_one_the_data_gives(tmp_path, blimp_dir):
    assert fields.derive_fields(blimp_dir) == fields.BLIMP_FIELDS
    (tmp_path / "mixed.jsonl").write_text('{"field": "syntax"}\n{"field": "semantics"}\n')
    with pytest.raises(fields.GroupingError, match="one field"):
        fields.derive_fields(tmp_path)


def test_derive_fields_unifies_the_data_spelling(tmp_path):
    (tmp_path / "principle_A_case_2.jsonl").write_text(json.dumps({"field": "syntax/semantics"}) + "\n")
    assert fields.derive_fields(tmp_path) == {"principle_A_case_2": "syntax_semantics"}


@pytest.fixture(scope="module")
def blimp_like():
    """Three paradigms of two fields (morphology: two agreement paradigms; syntax: an animate_subject one)."""
    steps = LOG_STEPS[::2]
    planted = {"m": {"blimp_anaphor_gender_agreement": ("anaphor_agreement", logistic_acc(steps, 50, top=0.95)),
                     "blimp_irregular_past_participle_verbs": ("irregular_forms", logistic_acc(steps, 5000)),
                     "blimp_animate_subject_trans": ("s-selection", logistic_acc(steps, 500)),
                     "blimp_causative": ("argument_structure", logistic_acc(steps, 500)),
                     "mytask": ("mine", logistic_acc(steps, 500))}}
    return tables(planted, steps=steps, n_items=200, n_boot=50)


def test_field_rows_average_their_paradigms_with_item_bootstrap_cis(blimp_like):
    curves, items = blimp_like
    rows = fields.field_rows(curves, items, n_boot=100)
    assert tuple(rows.columns) == CURVE_COLUMNS
    assert set(rows.task) == {"field:morphology", "field:syntax"} and (rows.level == "field").all()
    paradigms = curves[curves.level == "paradigm"].set_index(["task", "step"]).acc
    morph = rows[rows.task == "field:morphology"].set_index("step")
    expected = (paradigms["blimp_anaphor_gender_agreement"] + paradigms["blimp_irregular_past_participle_verbs"]) / 2
    np.testing.assert_allclose(morph.acc, expected.loc[morph.index])
    assert (morph.ci_method == "bootstrap-items").all() and (morph.n == 400).all()
    assert ((morph.ci_low <= morph.acc) & (morph.acc <= morph.ci_high)).all()
    # Without items, the CI comes from the paradigms' stderrs.
    assert (fields.field_rows(curves).ci_method == "stderr").all()
    custom = fields.field_rows(curves, items, fields={"mytask": "user"}, n_boot=20)
    assert set(custom.task) == {"field:user"}


def test_regroup_moves_animate_subject_under_argument_structure(blimp_like):
    curves, items = blimp_like
    paper = fields.regroup(curves, items, "paper", n_boot=20)
    phen = paper[paper.level == "phenomenon"]
    assert "phenomenon:s-selection" not in set(phen.task) and "phenomenon:mine" in set(phen.task)
    arg = phen[phen.task == "phenomenon:argument_structure"]
    assert (arg.n == 400).all()  # causative and animate_subject_trans
    assert paper[paper.task == "blimp_animate_subject_trans"].phenomenon.eq("argument_structure").all()
    data = fields.regroup(curves, items, "data", n_boot=20)
    assert "phenomenon:s-selection" in set(data.task)
