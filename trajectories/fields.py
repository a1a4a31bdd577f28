"""BLiMP's groupings of its 67 paradigms: into fields (morphology, syntax, semantics, syntax_semantics) and into
phenomena, as the data labels them or as the BLiMP paper's tables count them.

- "data" (the default, as `collect` writes phenomenon rows): the data's `linguistics_term`, 13 phenomena.
- "paper": the 12 phenomena of Warstadt et al. (2020)'s tables, where the two `animate_subject_*` paradigms (tagged
  `s-selection` in the data) count under argument_structure.

`blimp_fields.json` maps each paradigm to its `field`, read from the released data files by `derive_fields`; the
data spells one binding paradigm's field "syntax/semantics" and the other 13 of that field "syntax_semantics",
which `derive_fields` unifies.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from trajectories.errors import UserError
from trajectories.schema import CURVE_COLUMNS, Level, field_key
from trajectories.stats import N_BOOT

BLIMP_PHENOMENA: dict[str, str] = json.loads(Path(__file__).with_name("blimp_paradigms.json").read_text())
BLIMP_FIELDS: dict[str, str] = json.loads(Path(__file__).with_name("blimp_fields.json").read_text())
PAPER_RENAMES = {"s-selection": "argument_structure"}
GROUPINGS = ("data", "paper")
FIELD_SPELLINGS = {"syntax/semantics": "syntax_semantics"}


class GroupingError(UserError):
    """An unknown grouping, or BLiMP data that does not say what it should; the message says which."""


def phenomena(grouping: str = "data") -> dict[str, str]:
    """paradigm -> phenomenon under a grouping ("data": 13 phenomena, "paper": 12)."""
    if grouping not in GROUPINGS:
        raise GroupingError(f"unknown grouping {grouping!r}; choose from {', '.join(GROUPINGS)}")
    renames = PAPER_RENAMES if grouping == "paper" else {}
    return {paradigm: renames.get(term, term) for paradigm, term in BLIMP_PHENOMENA.items()}


def derive_fields(blimp_dir: str | Path) -> dict[str, str]:
    """paradigm -> field from BLiMP's jsonl files (every line of a file must agree)."""
    fields = {}
    for path in sorted(Path(blimp_dir).glob("*.jsonl")):
        found = {json.loads(line)["field"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}
        if len(found) != 1:
            raise GroupingError(f"{path}: expected one field, found {sorted(found)}")
        (field,) = found
        fields[path.stem] = FIELD_SPELLINGS.get(field, field)
    if not fields:
        raise GroupingError(f"no BLiMP .jsonl files in {blimp_dir}")
    return fields


def paradigm_of(task: str) -> str:
    """The BLiMP paradigm of a task name (lm-eval's "blimp_<paradigm>" or the bare paradigm); "" if none."""
    name = task.removeprefix("blimp_")
    return name if name in BLIMP_PHENOMENA else ""


def _relabelled(curves: pd.DataFrame, labels: Mapping[str, str]) -> pd.DataFrame:
    """Paradigm rows whose task maps (through its BLiMP paradigm, or directly) to a label, with phenomenon set to
    that label."""
    paradigms = curves[curves.level == "paradigm"]
    label = paradigms.task.map(lambda t: labels.get(paradigm_of(t)) or labels.get(t) or "")
    return paradigms.assign(phenomenon=label)[label != ""]


def grouped(curves: pd.DataFrame, grouping: str = "data") -> pd.DataFrame:
    """The curve table with BLiMP paradigm rows' phenomena as `grouping` has them (other tasks keep theirs)."""
    mapping = phenomena(grouping)
    blimp = (curves.level == Level.PARADIGM) & (curves.task.map(paradigm_of) != "")
    if not blimp.any():
        return curves
    curves = curves.copy()
    curves.loc[blimp, "phenomenon"] = curves.task[blimp].map(lambda t: mapping[paradigm_of(t)])
    return curves


def regroup(curves: pd.DataFrame, items: pd.DataFrame | None = None, grouping: str = "paper",
            n_boot: int = N_BOOT, seed: int = 0) -> pd.DataFrame:
    """The curve table with BLiMP paradigms' phenomena, and the phenomenon rows, rebuilt under a grouping (other
    tasks keep theirs); phenomenon rows get bootstrap CIs over items where the item table has them."""
    from trajectories.curves import with_phenomena  # curves builds on this module

    return with_phenomena(grouped(curves, grouping), items, n_boot, seed, grouping)


def field_rows(curves: pd.DataFrame, items: pd.DataFrame | None = None, fields: Mapping[str, str] | None = None,
               n_boot: int = N_BOOT, seed: int = 0) -> pd.DataFrame:
    """Field rows (CURVE_COLUMNS, level "field", task "field:<name>", phenomenon = the field name): at each
    (model, step) the mean of the field's paradigm accuracies, with a bootstrap CI over items as phenomenon rows
    have (stderr-based where there are no items). fields: paradigm or task -> field (default: BLiMP's)."""
    from trajectories.curves import with_phenomena

    paradigms = _relabelled(curves, BLIMP_FIELDS if fields is None else fields)
    if paradigms.empty:
        return pd.DataFrame(columns=list(CURVE_COLUMNS))
    rows = with_phenomena(paradigms, items, n_boot, seed)
    rows = rows[rows.level == Level.PHENOMENON]
    return rows.assign(level=str(Level.FIELD), task=rows.phenomenon.map(field_key), grouping="")[
        list(CURVE_COLUMNS)].reset_index(drop=True)
