"""Benchmark: synthetic TRL-standard string pairs (JSONL) -> Parquet, sc-data against its peers.

Generates ``--rows`` pairs (prompt 55-85, answers 140-175 characters, ASCII, every row distinct;
or, with ``--texts``, a real set's pairs cycled: non-ASCII and escapes as they come), then
times ``sc_data.ingest.ingest`` on them and reports pairs/s and the peak RSS of the process
(``resource.getrusage``; on Linux ``ru_maxrss`` is in KiB; this TRL JSONL runs on threads, no worker process),
the CPU seconds spent (a figure that, unlike wall time, doesn't depend on what else the machine
runs) and the load average around the run. Generation is not timed.

``--peers`` runs every tool (sc-data, sc-data ``--sequential``, ``pyarrow.json``,
``datasets.load_dataset("json")``, ``polars.read_ndjson``; the peers only parse and write) in a
fresh process each, alternating, ``--repeats`` times, and reports medians and ratios to polars,
so every figure is a same-run ratio on a shared machine. It also runs sc-data with its sha256
passes taken out (:func:`_without_hashes`): what no faster hash could beat.

Usage:
    python -m bench.ingest --rows 1000000 --out /tmp/sc-bench
    python -m bench.ingest --rows 250000 --out /tmp/sc-bench --peers --repeats 3
    python -m bench.ingest --rows 250000 --out /tmp/sc-bench --peers --texts ../shared/data/paper/hh_rlhf_clean_gpt.jsonl
    python -m bench.ingest --rows 1000000 --out /tmp/sc-bench --odd-every 50000 --keep
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
from typing import Any

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


#: The malformed line ``--odd-every`` puts among the pairs: a record cut short (a parse error).
TRUNCATED = '{"prompt": "How do I cut this record sh\n'


def generate(path: Path, rows: int, seed: int = 0, texts: Path | None = None, odd_every: int = 0) -> None:
    """Write ``rows`` distinct TRL-standard pairs as JSONL: from the templates, or cycling the pairs of ``texts``;
    with ``odd_every``, a :data:`TRUNCATED` line after every ``odd_every`` pairs."""
    if texts is not None:
        _cycle(texts, path, rows, odd_every)
        return
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(rows):
            values = {"verb": rng.choice(VERBS), "noun": rng.choice(NOUNS), "i": i}
            record = {
                "prompt": rng.choice(PROMPTS).format(**values),
                "chosen": rng.choice(CHOSEN).format(**values),
                "rejected": rng.choice(REJECTED).format(**values),
            }
            fh.write(json.dumps(record) + "\n" + _odd_line(i, odd_every))


def _cycle(texts: Path, path: Path, rows: int, odd_every: int) -> None:
    """Real text: the (prompt, chosen, rejected) records of ``texts`` (a ``Human: `` prefix taken
    off) over and over, each prompt made distinct by its row number, written as raw UTF-8."""
    records = [json.loads(line) for line in texts.read_text("utf-8").splitlines() if line.strip()]
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(rows):
            r = records[i % len(records)]
            record = {"prompt": f"{r['prompt'].removeprefix('Human: ')} ({i})", "chosen": r["chosen"], "rejected": r["rejected"]}
            fh.write(json.dumps(record, ensure_ascii=False) + "\n" + _odd_line(i, odd_every))


def _odd_line(i: int, odd_every: int) -> str:
    """What follows pair ``i`` (0-based): :data:`TRUNCATED` after every ``odd_every`` pairs, else nothing."""
    return TRUNCATED if odd_every and (i + 1) % odd_every == 0 else ""


def _cpu_seconds() -> float:
    """User + system CPU of this process and its reaped children (the parse workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


PEERS = ("sc_data", "sc_data_sequential", "sc_data_unhashed", "pyarrow", "datasets", "polars")


def _one_range_at_a_time(parallel: Any) -> None:
    """sc-data ``--sequential``: no worker processes, and no second range in flight on a thread."""
    parallel.MIN_PARALLEL_BYTES = 2**62
    parallel.LOOKAHEAD = 1


def _without_hashes(columnar: Any, readers: Any) -> None:
    """sc-data ``unhashed``: the pairs' ids drawn at random and the input not hashed. Not a mode of
    sc-data but a bound: how fast it would run were its two sha256 passes (ids over the canonical
    JSON, ~0.5 GB a million pairs; the input, for the manifest) free, as no faster hash can make them."""
    import numpy as np
    import pyarrow as pa

    def random_ids(stripped: list[Any], escapes: Any) -> Any:
        n = len(stripped[0])
        offsets = np.arange(0, 16 * n + 1, 16, dtype=np.int32)
        return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(os.urandom(8 * n).hex().encode()))

    columnar._content_ids = random_ids
    readers.Source.sha256 = lambda self: "0" * 64


def run_peer(tool: str, source: Path, out: Path) -> dict[str, float]:
    """One tool, JSONL -> Parquet, in this (fresh) process: wall and CPU seconds, peak RSS."""
    cpu0, t0 = _cpu_seconds(), time.perf_counter()
    if tool.startswith("sc_data"):
        from sc_data.ingest import columnar, ingest, parallel, readers

        if tool == "sc_data_sequential":
            _one_range_at_a_time(parallel)
        if tool == "sc_data_unhashed":
            _without_hashes(columnar, readers)
        ingest([source], out / f"{tool}.parquet", overwrite=True)
    elif tool == "pyarrow":
        import pyarrow.json as pj
        import pyarrow.parquet as pq

        pq.write_table(pj.read_json(source), out / "pyarrow.parquet", compression="zstd")
    elif tool == "datasets":
        import datasets

        datasets.load_dataset("json", data_files=str(source), split="train", cache_dir=str(out / "hf")).to_parquet(out / "datasets.parquet")
    else:
        import polars

        polars.read_ndjson(source).write_parquet(out / "polars.parquet", compression="zstd")
    seconds = time.perf_counter() - t0
    peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return {"seconds": seconds, "cpu_seconds": _cpu_seconds() - cpu0, "peak_rss_mib": peak / 1024}


def peers(source: Path, out: Path, rows: int, repeats: int) -> dict[str, Any]:
    """Every tool in a fresh process, alternating, ``repeats`` times; medians and ratios to polars.

    The order rotates by one tool a round: a tool that always ran right after polars' 1 GB process
    read 10-40 % slower than the same code run after it.
    """
    import shutil
    import statistics
    import subprocess

    runs: dict[str, list[dict[str, float]]] = {t: [] for t in PEERS}
    load = [round(os.getloadavg()[0], 2)]
    for r in range(repeats):
        for tool in PEERS[r % len(PEERS):] + PEERS[:r % len(PEERS)]:  # each round starts one tool later: no tool always runs first
            done = subprocess.run([sys.executable, "-m", "bench.ingest", "--worker", tool, "--source", str(source), "--out", str(out)],
                                  capture_output=True, text=True, check=True)
            runs[tool].append(json.loads(done.stdout.strip().splitlines()[-1]))
            shutil.rmtree(out / "hf", ignore_errors=True)
        load.append(round(os.getloadavg()[0], 2))
    table = {}
    for tool, rs in runs.items():
        wall = statistics.median(r["seconds"] for r in rs)
        cpu = statistics.median(r["cpu_seconds"] for r in rs)
        table[tool] = {"pairs_per_s": round(rows / wall), "cpu_us_per_pair": round(cpu / rows * 1e6, 2),
                       "peak_rss_mib": round(max(r["peak_rss_mib"] for r in rs)), "wall_s": [round(r["seconds"], 2) for r in rs]}
    polars_rate = table["polars"]["pairs_per_s"]
    for row in table.values():
        row["throughput_vs_polars"] = round(row["pairs_per_s"] / polars_rate, 3)
    return {"rows": rows, "repeats": repeats, "load_average_1m_between_rounds": load, "tools": table}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="pairs to generate (default 1,000,000)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/sc-bench-ingest"), help="work folder")
    parser.add_argument("--keep", action="store_true", help="keep the generated input file")
    parser.add_argument("--sequential", action="store_true", help="one range at a time (no second thread, no worker processes)")
    parser.add_argument("--peers", action="store_true", help="also time pyarrow, datasets and polars, alternating")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of --peers")
    parser.add_argument("--texts", type=Path, help="cycle the pairs of this JSONL (real text, e.g. the paper's set) instead of the templates")
    parser.add_argument("--odd-every", type=int, default=0, metavar="N",
                        help="a malformed line (a record cut short) after every N pairs: what the row path must read, and only around it")
    parser.add_argument("--worker", choices=PEERS, help=argparse.SUPPRESS)
    parser.add_argument("--source", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.odd_every < 0:
        parser.error("--odd-every must be 0 (none) or more")
    if args.peers and args.odd_every:
        parser.error("--odd-every with --peers: the peers stop at the first malformed line")
    if args.worker:
        print(json.dumps(run_peer(args.worker, args.source, args.out)))
        return
    odd = f"_odd{args.odd_every}" if args.odd_every else ""
    source = args.out / (f"trl_{args.texts.stem}_{args.rows}{odd}.jsonl" if args.texts else f"trl_standard_{args.rows}{odd}.jsonl")
    if args.peers:
        args.out.mkdir(parents=True, exist_ok=True)
        if not source.exists():
            generate(source, args.rows, texts=args.texts, odd_every=args.odd_every)
        report = {**peers(source, args.out, args.rows, args.repeats), "cpus": os.cpu_count(), "python": platform.python_version(),
                  "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        print(json.dumps(report, indent=2))
        return

    from sc_data.ingest import ingest, parallel

    if args.sequential:
        _one_range_at_a_time(parallel)

    args.out.mkdir(parents=True, exist_ok=True)
    if not source.exists():
        t0 = time.perf_counter()
        generate(source, args.rows, texts=args.texts, odd_every=args.odd_every)
        print(f"generated {args.rows:,} pairs in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    load_before = round(os.getloadavg()[0], 2)
    cpu_before = _cpu_seconds()
    start = time.perf_counter()
    result = ingest([source], args.out / "pairs.parquet", overwrite=True)  # a --keep folder is run again
    seconds = time.perf_counter() - start
    cpu = _cpu_seconds() - cpu_before
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report = {
        "rows_in": result.rows_in,
        "rows_out": result.rows_out,
        "rows_rejected": result.rows_rejected,
        "seconds": round(seconds, 2),
        "pairs_per_s": round(result.rows_out / seconds),
        "peak_rss_mib": round(peak_mib),
        "ranges_in_flight": parallel.LOOKAHEAD,  # this TRL JSONL takes the columnar path: threads, never worker processes
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
