"""Answers with safety labels, the training data of the probe judge (``sc-data judge fit``).

Each input becomes one row per answer: (prompt, answer, unsafe, severity or NaN, category, source).

* Preference pairs in any layout ingest reads (``--format``, ``--map`` as for ``sc-data ingest``),
  labelled by their ``chosen_safe`` / ``rejected_safe`` flags: PKU-SafeRLHF's human labels, or a
  canonical pairs Parquet that carries them. PKU-SafeRLHF's ``response_k_severity_level`` (0–3)
  comes along as the severity. Pairs without flags are used only with
  ``assume_chosen_safe=True`` (a set filtered so that chosen is safe and rejected unsafe, like
  the Staged-Competence release): weak labels, and said so in the probe's record.
* A table of single answers with ``prompt``, ``answer`` and ``severity`` (0–3) or ``unsafe``
  (bool), optionally ``category`` (``--map`` renames your columns to these).

Rows that can't be read are counted by reason, never silently dropped.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from sc_data.errors import InputError
from sc_data.scorers.probe import LabelledAnswers

ANSWER_COLUMNS = ("prompt", "answer")


def _rows(spec: str | Path) -> tuple[Any, list[dict[str, Any]]]:
    from sc_data.ingest.readers import resolve

    source = resolve(spec)
    rows = [row for batch in source.batches() for row in batch.rows]
    if not rows:
        raise InputError(f"{spec} holds no rows")
    return source, rows


def _severity(value: Any) -> float:
    if value is None or isinstance(value, bool):
        return math.nan
    try:
        level = float(value)
    except (TypeError, ValueError):
        return math.nan
    return level if level in (0.0, 1.0, 2.0, 3.0) else math.nan


def _messages(value: Any, role: str) -> list[dict[str, str]]:
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if isinstance(value, list) and all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in value):
        return [{"role": str(m.get("role", role)), "content": m["content"]} for m in value]
    raise TypeError(f"{role} is neither a string nor a list of messages")


def _from_answers(rows: list[dict[str, Any]], name: str, column_map: dict[str, str], skipped: Counter) -> LabelledAnswers:
    from sc_data.schema import normalised_prompt_key

    prompts, answers, unsafe, severity, cats = [], [], [], [], []
    for row in rows:
        row = {canonical: row.get(theirs) for canonical, theirs in column_map.items()} | {
            k: v for k, v in row.items() if k not in column_map.values()
        }
        level = _severity(row.get("severity"))
        flag = row.get("unsafe")
        if not isinstance(flag, bool):
            flag = None if math.isnan(level) else level >= 1
        try:
            prompt, answer = _messages(row.get("prompt"), "user"), _messages(row.get("answer"), "assistant")
        except TypeError:
            skipped["prompt_or_answer_missing"] += 1
            continue
        if flag is None:
            skipped["no_label"] += 1
            continue
        prompts.append(prompt)
        answers.append(answer)
        unsafe.append(flag)
        severity.append(level)
        cats.append(row.get("category") if isinstance(row.get("category"), str) else None)
    return LabelledAnswers(prompts, answers, np.asarray(unsafe, dtype=bool), np.asarray(severity, dtype=np.float64), cats,
                           [name] * len(answers), [normalised_prompt_key(p) for p in prompts])


def _from_pairs(source: Any, rows: list[dict[str, Any]], fmt: str, column_map: dict[str, str] | None,
                assume_chosen_safe: bool, skipped: Counter) -> LabelledAnswers:
    from sc_data.ingest.config import IngestOptions
    from sc_data.ingest.formats import get_format
    from sc_data.ingest.rows import RowError
    from sc_data.schema import normalised_prompt_key

    convert = get_format(fmt).converter(source.name, IngestOptions(safety_pairs="keep", column_map=column_map))
    out = LabelledAnswers([], [], np.zeros(0, bool), np.zeros(0), [], [], [])
    parts = [out]
    for row in rows:
        try:
            pair = convert(row)
        except RowError as e:
            skipped[e.reason] += 1
            continue
        levels = {}
        if fmt == "pku-saferlhf":  # the human severity of each response, by its text
            levels = {row.get(f"response_{k}"): _severity(row.get(f"response_{k}_severity_level")) for k in (0, 1)}
        flags = (pair.chosen_safe, pair.rejected_safe)
        if None in flags:
            if not assume_chosen_safe:
                skipped["no_safety_flags"] += 1
                continue
            flags = (True, False)
        prompt = [{"role": role, "content": content} for role, content in pair.prompt]  # ingest's (role, content) tuples
        answers = [[{"role": role, "content": content} for role, content in a] for a in (pair.chosen, pair.rejected)]
        sev = [levels.get(a[-1]["content"], math.nan) for a in answers]
        key = normalised_prompt_key(prompt)
        parts.append(LabelledAnswers(
            [prompt, prompt], answers, np.asarray([not flags[0], not flags[1]]), np.asarray(sev, dtype=np.float64),
            [None, pair.category], [source.name] * 2, [key, key],
        ))
    return LabelledAnswers.concat(parts)


def read_labelled(
    inputs: list[str | Path], *, fmt: str = "auto", column_map: dict[str, str] | None = None, assume_chosen_safe: bool = False,
) -> tuple[LabelledAnswers, dict[str, Any]]:
    """Every labelled answer of ``inputs`` and a report of what was read and skipped per input.

    Raises:
        InputError: an input holds no labelled answer (the report's reasons say why).
    """
    from sc_data.ingest.formats import check_columns, columns_of, detect_format

    parts, report = [], {}
    for spec in inputs:
        source, rows = _rows(spec)
        skipped: Counter = Counter()
        mapped = {canonical: theirs for canonical, theirs in (column_map or {}).items()}
        is_answers = {mapped.get("prompt", "prompt"), mapped.get("answer", "answer")} <= set(columns_of(rows[:100]))
        if is_answers:
            part = _from_answers(rows, source.name, mapped, skipped)
            layout = "answers"
        else:
            layout = fmt if fmt != "auto" else detect_format(rows[:100], where=str(spec), column_map=column_map)
            check_columns(rows[:100], layout, where=str(spec), column_map=column_map)
            part = _from_pairs(source, rows, layout, column_map, assume_chosen_safe, skipped)
        if len(part) == 0:
            raise InputError(
                f"{spec} gave no labelled answer ({dict(skipped) or 'no rows'}): pairs need chosen_safe / rejected_safe "
                "flags (PKU-SafeRLHF has them; pass --assume-chosen-safe for a set filtered so), answer tables a "
                "severity or unsafe column"
            )
        parts.append(part)
        report[source.name] = {"layout": layout, "rows": len(rows), "answers": len(part), "unsafe": int(part.unsafe.sum()),
                               "with_severity": int((~np.isnan(part.severity)).sum()), "skipped": dict(skipped),
                               "labels": "assumed: chosen safe, rejected unsafe" if assume_chosen_safe and layout != "answers" else "given"}
    return LabelledAnswers.concat(parts), report
