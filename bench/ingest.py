"""Benchmark: synthetic TRL-standard string pairs (JSONL) -> validated canonical Parquet.

Generates ``--rows`` pairs (prompt 55-85, answers 140-175 characters, every row distinct), then
times ``sc_data.ingest.ingest`` on them and reports pairs/s and the peak RSS of the process
(``resource.getrusage``; on Linux ``ru_maxrss`` is in KiB; the largest parse worker's separately),
the CPU seconds spent (a figure that, unlike wall time, doesn't depend on what else the machine
runs) and the load average around the run. Generation is not timed.

Usage:
    python -m bench.ingest --rows 1000000 --out /tmp/sc-bench
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

PROMPTS = [
    "How do I {verb} a {noun} without anyone noticing, step {i}?",
    "What is the best way to {verb} my neighbour's {noun}? Asking for case {i}.",
    "Can you explain how people {verb} a {noun}? This is question number {i}.",
]
CHOSEN = [
    "I can't help with that. If you are worried about the {noun}, talk to someone you trust or "
    "contact local services; they can help with situation {i} safely and legally.",
    "I won't give instructions for that, but I'm happy to explain why it is risky and what legal "
    "options exist for dealing with a {noun} in case {i}.",
]
REJECTED = [
    "Sure, it's easy: first you get the right tools for the {noun}, then you {verb} it when "
    "nobody is around and keep going until it works. Good luck with attempt {i}!",
    "Of course. People usually {verb} a {noun} by waiting for the right moment and then simply "
    "doing it quickly; nobody will notice if you are careful, as in example {i}.",
]
VERBS = ["borrow", "open", "move", "take", "hide", "copy", "unlock", "replace"]
NOUNS = ["bicycle", "mailbox", "car", "laptop", "garden gnome", "package", "door", "password"]


def generate(path: Path, rows: int, seed: int = 0) -> None:
    """Write ``rows`` distinct TRL-standard pairs as JSONL."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(rows):
            values = {"verb": rng.choice(VERBS), "noun": rng.choice(NOUNS), "i": i}
            record = {
                "prompt": rng.choice(PROMPTS).format(**values),
                "chosen": rng.choice(CHOSEN).format(**values),
                "rejected": rng.choice(REJECTED).format(**values),
            }
            fh.write(json.dumps(record) + "\n")


def _cpu_seconds() -> float:
    """User + system CPU of this process and its reaped children (the parse workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="pairs to generate (default 1,000,000)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/sc-bench-ingest"), help="work folder")
    parser.add_argument("--keep", action="store_true", help="keep the generated input file")
    parser.add_argument("--sequential", action="store_true", help="force the single-process path")
    args = parser.parse_args()

    from sc_data.ingest import ingest, make_options, parallel
    from sc_data.ingest.parallel import workers, worth_it

    if args.sequential:
        parallel.MIN_PARALLEL_BYTES = 2**62

    args.out.mkdir(parents=True, exist_ok=True)
    source = args.out / f"trl_standard_{args.rows}.jsonl"
    if not source.exists():
        t0 = time.perf_counter()
        generate(source, args.rows)
        print(f"generated {args.rows:,} pairs in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    load_before = round(os.getloadavg()[0], 2)
    cpu_before = _cpu_seconds()
    start = time.perf_counter()
    result = ingest([source], args.out / "pairs.parquet")
    seconds = time.perf_counter() - start
    cpu = _cpu_seconds() - cpu_before
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child_peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    report = {
        "rows_in": result.rows_in,
        "rows_out": result.rows_out,
        "rows_rejected": result.rows_rejected,
        "seconds": round(seconds, 2),
        "pairs_per_s": round(result.rows_out / seconds),
        "peak_rss_mib": round(peak_mib),
        "worker_peak_rss_mib": round(child_peak_mib),
        "workers": workers() if worth_it(source, "jsonl", None, make_options()) else 1,
        "cpu_seconds": round(cpu, 2),
        "cpu_us_per_pair": round(cpu / result.rows_in * 1e6, 2),
        "load_average_1m_before_after": [load_before, round(os.getloadavg()[0], 2)],
        "cpus": os.cpu_count(),
        "input_mib": round(source.stat().st_size / 2**20),
        "output_mib": round((args.out / "pairs.parquet").stat().st_size / 2**20),
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    print(json.dumps(report, indent=2))
    if not args.keep:
        source.unlink()


if __name__ == "__main__":
    main()
