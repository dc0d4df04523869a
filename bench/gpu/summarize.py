"""Collect bench/gpu/run.sh's phase outputs into summary.json and a markdown table for bench/RESULTS.md.

    python -m bench.gpu.summarize OUT_DIR   # prints the markdown; writes OUT_DIR/summary.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None


def _train_rows(name: str, report: dict[str, Any] | None) -> list[str]:
    if report is None:
        return [f"| {name} | (no result) | | | |"]
    ratios = {k: v["median"] for k, v in report.get("ratio_sc_data_over", {}).items()}
    rows = []
    for result in report["results"]:
        tool = result.get("trainer", "?")
        if "unavailable" in result:
            rows.append(f"| {name}: {tool} | {result['unavailable']} | | | |")
            continue
        ratio = "" if tool == "sc_data" else f"sc-data {ratios.get(tool, float('nan')):.2f}×"
        rows.append(f"| {name}: {tool} | {result['steps_per_s']} | {result['tokens_per_s']} | {result['peak_mem_gib']} | {ratio} |")
    return rows


def summarize(out: Path) -> str:
    phases = [json.loads(line) for line in (out / "phases.jsonl").read_text("utf-8").splitlines() if line.strip()]
    summary = {
        "phases": phases,
        "score": _json(out / "score.json"),
        "train_checkpointing_on": _json(out / "train-gc.json"),
        "train_checkpointing_off": _json(out / "train-nogc.json"),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    lines = ["| phase | rc | seconds | budget |", "|---|---|---|---|"]
    lines += [f"| {p['phase']} | {p['rc']} | {p['seconds']} | {p['budget_s']} |" for p in phases]
    score = summary["score"] or {}
    lines += ["", "| scoring | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in score.items() if not isinstance(v, (dict, list))]
    lines += ["", "| training run | steps/s | tokens/s | peak memory (GiB) | ratio |", "|---|---|---|---|---|"]
    lines += _train_rows("checkpointing on", summary["train_checkpointing_on"])
    lines += _train_rows("checkpointing off", summary["train_checkpointing_off"])
    return "\n".join(lines)


if __name__ == "__main__":
    print(summarize(Path(sys.argv[1])))
