"""The checkpoint audit: what a suite's checkpoints hold, from their listings (hub metadata, or hashes of local
files), before anything is downloaded. Pure functions of the listings (suites.py gathers them).

Public suites have served checkpoints that are not what their branch says: identical steps (Pythia steps 0, 1 and
2), branches holding the final model, wrong or re-uploaded shards. The audit flags, per model:

- duplicates: steps whose weights, config shape and tokenizer are byte-identical (a sweep evaluates them once);
- requested steps with no branch;
- a weight file set, or a total size, out of line with the model's other checkpoints in the same format;
- a config that differs in shape from the model's other checkpoints (such units fail without a download).

The reference a checkpoint is compared with is what most of the model's checkpoints have (ties: the latest step's).
"""

from __future__ import annotations

import json
import re
import statistics
from collections import Counter
from dataclasses import asdict, dataclass, field

from trajectories.schema import FAILING_FINDINGS, Finding, FindingKind, Listing

Key = tuple[str, int]  # (model, step)

# config.json keys that differ between checkpoints of one model without changing its shape.
VOLATILE_CONFIG_KEYS = {"_name_or_path", "transformers_version", "torch_dtype", "dtype", "_commit_hash"}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt")
# The names transformers loads weights from (single file or shards); other .bin files (training_args.bin,
# optimizer states) are not weights.
WEIGHT_NAMES = {".safetensors": re.compile(r"model(-\d+-of-\d+)?\.safetensors"),
                ".bin": re.compile(r"pytorch_model(-\d+-of-\d+)?\.bin")}
SIZE_TOLERANCE = 0.01  # a total weight size further than this from the model's median is out of line


def weight_files(paths) -> list[str]:
    """The weight files a sweep loads from a checkpoint holding `paths`: its safetensors where it has any (as
    transformers prefers them), else its .bin."""
    paths = list(paths)
    for pattern in WEIGHT_NAMES.values():
        if found := sorted(p for p in paths if pattern.fullmatch(p)):
            return found
    return []


def config_shape(config: dict) -> str:
    """config.json without the keys that may differ between checkpoints of one model, as canonical JSON."""
    return json.dumps({k: v for k, v in config.items() if k not in VOLATILE_CONFIG_KEYS}, sort_keys=True)


def steps_text(steps) -> str:
    steps = list(steps)
    return f"step {steps[0]}" if len(steps) == 1 else "steps " + ", ".join(map(str, steps))


def reuse_lines(reused: dict[Key, int]) -> list[str]:
    """"<model> steps 1, 2: the weights of step 0", one line per model and source step, from {(model, step): source}."""
    groups: dict[Key, list[int]] = {}
    for (model, step), source in sorted(reused.items()):
        groups.setdefault((model, source), []).append(step)
    return [f"{model} {steps_text(steps)}: the weights of step {source}" for (model, source), steps in groups.items()]


def size_text(n: float) -> str:
    for scale, unit in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:.0f} B"


@dataclass
class Audit:
    """The listings of the checkpoints asked for (None: no metadata to be had), those the suite does not have (and
    why), and what was found out of line."""

    listings: dict[Key, Listing | None]
    absent: dict[Key, str] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)

    def groups(self) -> dict[Key, tuple[int, ...]]:
        """Each checkpoint in a duplicate group: the group's steps, first step first."""
        return {(f.model, step): f.steps for f in self.findings if f.kind == FindingKind.DUPLICATE for step in f.steps}

    def failing(self) -> dict[Key, str]:
        """Checkpoints that cannot be evaluated (no branch, config out of line), and why."""
        return {(f.model, f.steps[0]): f"audit: {f.detail}" for f in self.findings if f.kind in FAILING_FINDINGS}

    def summary(self) -> str:
        listed = [li for li in self.listings.values() if li is not None]
        models = len({key[0] for key in [*self.listings, *self.absent]})
        lines = [f"audit: {len(self.listings) + len(self.absent)} checkpoints of {models} model{'s' * (models != 1)} "
                 f"({size_text(sum(li.size for li in listed))} of weights), "
                 + (f"{len(self.findings)} out of line:" if self.findings else "nothing out of line")]
        return "\n".join(lines + [f"  {f.kind}: {f.model}: {f.detail}" for f in self.findings])

    def table(self) -> str:
        """One row per weight file: model, step, revision, commit, file, size, sha256; then the findings."""
        rows = [("model", "step", "revision", "commit", "file", "size", "sha256")]
        for model, step in sorted([*self.listings, *self.absent]):
            listing = self.listings.get((model, step))
            if listing is None:
                rows.append((model, str(step), "", "", "(no branch)" if (model, step) in self.absent
                             else "(no metadata)", "", ""))
                continue
            for f in listing.weights or [None]:
                rows.append((model, str(step), listing.revision or "", (listing.commit or "")[:12],
                             f.path if f else "(no weights)", str(f.size) if f else "", (f.sha256 or "?") if f else ""))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
        return "\n".join(lines + ["", self.summary()])

    def to_json(self) -> dict:
        return {
            "checkpoints": [asdict(li) if li else {"model": model, "step": step, "weights": None}
                            for (model, step), li in self.listings.items()],
            "absent": [{"model": m, "step": step, "reason": reason} for (m, step), reason in self.absent.items()],
            "findings": [asdict(f) | {"kind": str(f.kind)} for f in self.findings],
        }


def audit(listings: dict[Key, Listing | None], absent: dict[Key, str] | None = None) -> Audit:
    """Compare each model's listed checkpoints. `listings`: every checkpoint asked for (None: no metadata to be
    had); `absent`: checkpoints the suite does not have (no branch), and why."""
    absent = absent or {}
    findings = []
    for model in dict.fromkeys(key[0] for key in [*listings, *absent]):
        mine = {step: li for (m, step), li in sorted(listings.items()) if m == model and li is not None}
        findings += _duplicates(model, mine) + _configs(model, mine) + _weight_sets(model, mine)
        findings += [Finding(FindingKind.NO_BRANCH, model, (step,), reason)
                     for (m, step), reason in sorted(absent.items()) if m == model]
        findings += [Finding(FindingKind.UNLISTED, model, (step,), f"step {step}: no metadata to audit (offline, "
                                                                      "and not in the local hub cache)")
                     for (m, step), li in sorted(listings.items()) if m == model and li is None]
    return Audit(listings, absent, findings)


def _duplicates(model: str, listings: dict[int, Listing]) -> list[Finding]:
    by_content: dict[tuple, list[int]] = {}
    for step, listing in listings.items():
        if listing.content is not None:
            by_content.setdefault(listing.content, []).append(step)
    return [Finding(FindingKind.DUPLICATE, model, tuple(steps), f"{steps_text(steps)} have identical weights")
            for steps in by_content.values() if len(steps) > 1]


def _reference(values: dict[int, object]):
    """The value most checkpoints have; ties go to the latest step's."""
    counts = Counter(values.values())
    return max(values.values(), key=lambda v: (counts[v], max(s for s, x in values.items() if x == v)))


def _configs(model: str, listings: dict[int, Listing]) -> list[Finding]:
    shapes = {step: li.config_shape for step, li in listings.items() if li.config_shape is not None}
    if len(set(shapes.values())) < 2:
        return []
    reference = _reference(shapes)
    usual = json.loads(reference)
    findings = []
    for step, shape in shapes.items():
        if shape != reference:
            mine = json.loads(shape)
            keys = sorted(k for k in usual.keys() | mine.keys() if usual.get(k) != mine.get(k))
            differences = "; ".join(f"{k} {mine.get(k)!r} (others {usual.get(k)!r})" for k in keys[:6])
            findings.append(Finding(FindingKind.CONFIG, model, (step,), f"step {step}: config.json differs in shape "
                                                                        f"from the model's other checkpoints: "
                                                                        f"{differences}"))
    return findings


def _weight_sets(model: str, listings: dict[int, Listing]) -> list[Finding]:
    findings = []
    for suffix in WEIGHT_NAMES:
        group = {step: li for step, li in listings.items() if li.weights and li.weights[0].path.endswith(suffix)}
        if len(group) < 3:  # with two, neither is the odd one out
            continue
        files = {step: tuple(f.path for f in li.weights) for step, li in group.items()}
        usual = _reference(files)
        median = statistics.median(li.size for li in group.values())
        for step, li in group.items():
            if files[step] != usual:
                findings.append(Finding(FindingKind.SHARDS, model, (step,), f"step {step}: weight files "
                                        f"{', '.join(files[step])}; the model's other {suffix} checkpoints have "
                                        f"{', '.join(usual)}"))
            elif abs(li.size - median) > SIZE_TOLERANCE * median:
                findings.append(Finding(FindingKind.SIZE, model, (step,), f"step {step}: weights total "
                                        f"{size_text(li.size)}; the model's other {suffix} checkpoints "
                                        f"{size_text(median)} (median)"))
    return findings
