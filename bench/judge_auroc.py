"""How well does the local judge tell unsafe from safe answers? AUROC and Spearman on PKU-SafeRLHF.

Every answer of the file (``response_0`` and ``response_1`` of each row) is judged once by the
``local`` backend (default SmolLM2-135M-Instruct, rubric ``sc_data/rubrics/harm_severity.txt``);
its ``p_unsafe`` = 1 − p(0) is scored against the human label ``is_response_k_safe`` (AUROC), and
its expected severity against the human ``response_k_severity_level`` 0–3 (Spearman). Writes a
Markdown report with the command, machine and date.

Usage:
    python -m bench.judge_auroc /work/shared/data/pku-saferlhf/alpaca7b_test_head.jsonl \\
        --output judge.md   # then paste into bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from sc_data.io import write_text
from sc_data.scorers.judge import JudgeScorer
from sc_data.scorers.judge_backends import Item


def load_answers(path: Path, limit: int | None) -> tuple[list[Item], np.ndarray, np.ndarray]:
    """(items, unsafe labels, human severity levels), two answers per JSONL row."""
    items, unsafe, level = [], [], []
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh):
            if limit is not None and n >= limit:
                break
            row = json.loads(line)
            for k in (0, 1):
                prompt = [{"role": "user", "content": row["prompt"]}]
                items.append(
                    Item(
                        prompt=prompt,
                        answer=[{"role": "assistant", "content": row[f"response_{k}"]}],
                    )
                )
                unsafe.append(not row[f"is_response_{k}_safe"])
                level.append(int(row[f"response_{k}_severity_level"]))
    return items, np.array(unsafe), np.array(level)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("path", type=Path, help="PKU-SafeRLHF JSONL file")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--max-length", type=int, default=384)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--limit", type=int, default=None, help="first N rows only")
    parser.add_argument("--output", type=Path, default=None, help="Markdown report to write")
    args = parser.parse_args()

    items, unsafe, level = load_answers(args.path, args.limit)
    judge = JudgeScorer(
        model=args.model,
        max_length=args.max_length,
        batch_size=args.batch_size,
        device=args.device,
        predict_category=False,
    )
    start = time.perf_counter()
    judge.load()
    loaded = time.perf_counter()
    choices = judge.judge_items(items)
    seconds = time.perf_counter() - loaded
    failed = [c.error for c in choices if c.error]
    if failed:
        sys.exit(f"{len(failed)} answers failed: {failed[:3]}")
    probs = np.stack([c.probs for c in choices])  # (N, 4)
    p_unsafe = 1.0 - probs[:, 0]
    severity = probs @ np.arange(4.0)
    truncated = sum(c.truncated for c in choices)
    rho, p_value = spearmanr(severity, level)
    stats = {
        "answers": len(items),
        "unsafe_fraction": float(unsafe.mean()),
        "auroc_p_unsafe": float(roc_auc_score(unsafe, p_unsafe)),
        "auroc_expected_severity": float(roc_auc_score(unsafe, severity)),
        "spearman_severity_vs_human_level": float(rho),
        "spearman_p_value": float(p_value),
        "truncated_answers": int(truncated),
        "mean_p_by_label": probs.mean(axis=0).round(4).tolist(),
        "load_s": round(loaded - start, 1),
        "judge_s": round(seconds, 1),
        "answers_per_s": round(len(items) / seconds, 2),
    }
    print(json.dumps(stats, indent=2))
    if args.output is not None:
        command = "python " + " ".join(sys.argv)
        machine = f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()} {platform.release()}"
        report = [
            "# Judge benchmark: local SmolLM2 judge vs PKU-SafeRLHF human labels",
            "",
            f"- command: `{command}`",
            f"- machine: {machine}; device `{args.device}`; torch threads {__import__('torch').get_num_threads()}",
            f"- date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
            f"- judge: `{args.model}`, rubric sha256 `{judge.config()['rubric_sha256'][:16]}…`, max_length {args.max_length}",
            "",
            "| metric | value |",
            "|---|---|",
            *(f"| {k} | {v} |" for k, v in stats.items()),
            "",
        ]
        write_text("\n".join(report), args.output)


if __name__ == "__main__":
    main()
