"""What made a file of shift scores, and whether reusing it with the options at hand would mix two kinds of scores.

`eda select` writes `scores.jsonl` (every sample with its `shift_score`), `data.jsonl` (the selection, scores
included) and `selection.json`, which records the shift `metric` and the `base` and `finetuned` targets'
`target_signature`s. Either data file, passed back as the dataset, reuses those scores. Reuse is checked here:

- no metric and no targets asked for: the recorded scores are used as they are;
- a metric or targets that agree with the record: the same;
- a metric or targets that differ from the record, or scores with no record to compare against: the scores are
  computed again when both targets are at hand, and refused (naming both values and the fix) when they are not.

Scores are never silently taken for ones another metric or another pair of targets would give.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import EdaInputError
from .signature import IDENTITY_KEYS

__all__ = ["RECORD_NAME", "ScoresRecord", "read_scores_record", "scores_to_recompute"]

#: the file beside the scores that records what made them (`eda select`'s record of its run)
RECORD_NAME = "selection.json"
_TARGETS = (("base", "base target"), ("finetuned", "fine-tuned target"))


@dataclass(frozen=True)
class ScoresRecord:
    """The metric and the targets' signatures recorded beside a scores file (`source`)."""

    source: str
    metric: str
    base: dict[str, Any] | None = None
    finetuned: dict[str, Any] | None = None

    def provenance(self) -> dict[str, Any]:
        """The record's fields as `selection.json` holds them, to carry over into a new selection's record."""
        return {"metric": self.metric, "base": self.base, "finetuned": self.finetuned}


def read_scores_record(dataset: Any) -> ScoresRecord | None:
    """The record beside `dataset` (a path to a file or a folder) if it has one naming a metric, else `None`."""
    if not isinstance(dataset, (str, os.PathLike)):
        return None
    path = Path(dataset)
    record = (path if path.is_dir() else path.parent) / RECORD_NAME
    if not record.is_file():
        return None
    try:
        info = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise EdaInputError(f"{record} is not readable JSON ({err}): restore it, or delete it to score again") from err
    if not isinstance(info, dict) or not isinstance(info.get("metric"), str):
        return None
    return ScoresRecord(str(record), info["metric"], info.get("base"), info.get("finetuned"))


def _describe(signature: dict[str, Any] | None) -> str:
    if signature is None:
        return "not recorded"
    return f"{signature.get('name_or_path') or '<unnamed>'!r} (fingerprint {signature.get('fingerprint')})"


def _differences(record: ScoresRecord | None, metric: str | None, targets: dict[str, dict | None]) -> list[str]:
    """Each asked-for option the scores were not made with, naming both values."""
    if record is None:
        asked = ([f"metric {metric!r}"] if metric is not None else []) + [
            f"{label} {_describe(targets[key])}" for key, label in _TARGETS if targets.get(key) is not None]
        return [f"{', '.join(asked)} asked for; what made the scores is not recorded (no {RECORD_NAME} beside them)"]
    found = []
    if metric is not None and metric != record.metric:
        found.append(f"metric {record.metric!r} there, {metric!r} now")
    for key, label in _TARGETS:
        recorded, asked = getattr(record, key), targets.get(key)
        if asked is not None and (recorded is None or any(recorded.get(k) != asked.get(k) for k in IDENTITY_KEYS)):
            found.append(f"{label} {_describe(recorded)} there, {_describe(asked)} now")
    return found


def scores_to_recompute(
    source: str,
    record: ScoresRecord | None,
    *,
    metric: str | None = None,
    base: dict[str, Any] | None = None,
    finetuned: dict[str, Any] | None = None,
    can_score: bool,
    fix: str,
) -> list[str]:
    """The reasons to compute the scores of `source` again (empty: reuse them as they are).

    `metric`, `base` and `finetuned` (target signatures) are what the caller asked for, `None` where it asked
    nothing. When the scores differ from the request, or nothing records what made them, and `can_score` is false
    (the targets are not at hand), raise `EdaInputError` naming both values and `fix`.
    """
    if metric is None and base is None and finetuned is None:
        return []
    reasons = _differences(record, metric, {"base": base, "finetuned": finetuned})
    if reasons and not can_score:
        raise EdaInputError(f"the shift scores in {source} were not made as asked ({'; '.join(reasons)}): {fix}")
    return reasons
