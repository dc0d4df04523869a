"""Benchmark: 1,000,000 scored synthetic pairs through difficulty, tiers and export.

Usage:
    python -m bench.stage [--rows 1000000] [--workdir /tmp/sc_bench_stage] [--no-plots]

Writes a scored Parquet file (generated with pyarrow, vectorised), then stages it in a fresh child
process so the peak resident memory (ru_maxrss) belongs to staging alone, times the read and the
plan apart in a second child, and prints the phases' wall times and the peak memory against the
table's in-memory size. Targets: < 20 s, < 3x.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq


def messages(role: str, content: pa.Array) -> pa.Array:
    n = len(content)
    struct = pa.StructArray.from_arrays([pa.array(np.full(n, role, dtype=object), pa.string()), content], ["role", "content"])
    return pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32)), struct)


def make_table(n: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    idx = pa.array(np.arange(n)).cast(pa.string())
    prompt_idx = pa.array(rng.integers(0, int(n * 0.97), n)).cast(pa.string())  # some repeated prompts
    text = "lorem ipsum dolor sit amet " * 4

    def content(prefix: str, ids: pa.Array) -> pa.Array:
        return pc.binary_join_element_wise(pa.array(np.full(n, prefix, dtype=object), pa.string()), ids, " #")

    cats = np.array(["violence_physical_harm", "privacy", "cybercrime", "drugs_weapons", "unknown"], dtype=object)
    category = pa.array(cats[rng.integers(0, len(cats), n)], pa.string())
    return pa.table(
        {
            "id": pc.binary_join_element_wise(pa.array(np.full(n, "pair", dtype=object), pa.string()), idx, ""),
            "prompt": messages("user", content("How would someone do thing", prompt_idx)),
            "chosen": messages("assistant", content("I can't help with that. " + text, idx)),
            "rejected": messages("assistant", content("Sure, here is how. " + text, idx)),
            "categories": pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32)), category),
            "category": category,
            "source": pa.array(np.full(n, "synthetic", dtype=object), pa.string()),
            "chosen_safe": pa.array(np.ones(n, dtype=bool)),
            "rejected_safe": pa.array(np.zeros(n, dtype=bool)),
            "ref_margin__margin_mean": pa.array(rng.normal(size=n)),
            "ref_margin__error": pa.nulls(n, pa.string()),
            "judge__severity": pa.array(rng.integers(0, 4, n)),
            "similarity__margin": pa.array(rng.normal(size=n)),
        }
    )


def phases_only(scored: Path) -> None:
    """Child process: the read and the plan, timed apart (their own process, so what they leave in
    the allocator does not count towards staging's peak)."""
    from sc_data.stage.pipeline import read_scored
    from sc_data.stage.plan import plan

    t0 = time.perf_counter()
    table, _, _ = read_scored(scored)
    t_read = time.perf_counter() - t0
    t1 = time.perf_counter()
    plan(table)
    print(json.dumps({"read_s": t_read, "difficulty_tiers_s": time.perf_counter() - t1}))


def stage_only(scored: Path, out: Path, plots: bool) -> None:
    """Child process: ``stage()`` end to end and its peak resident memory over the post-import baseline."""
    import sc_data.stage.export
    import sc_data.stage.report  # noqa: F401 - import matplotlib before the baseline
    from sc_data.stage.pipeline import stage

    page = resource.getpagesize()
    baseline = int(Path("/proc/self/statm").read_text().split()[1]) * page
    t0 = time.perf_counter()
    result = stage(scored, out, overwrite=True, plots=plots)
    t_stage = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"stage_end_to_end_s": t_stage, "peak_rss_bytes": peak, "baseline_rss_bytes": baseline,
                      "rows_out": result.rows_out, "tiers": result.tiers}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/sc_bench_stage"))
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--stage-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--phases-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    scored, out = args.workdir / "scored.parquet", args.workdir / "staged"
    if args.stage_only:
        stage_only(scored, out, not args.no_plots)
        return
    if args.phases_only:
        phases_only(scored)
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    table = make_table(args.rows)
    pq.write_table(table, scored, compression="zstd")
    nbytes = table.nbytes
    print(f"generated {args.rows:,} rows ({nbytes / 2**20:.0f} MiB in memory) in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    del table
    cmd = [sys.executable, __file__, "--stage-only", "--workdir", str(args.workdir)] + (["--no-plots"] if args.no_plots else [])
    child = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    phases = [sys.executable, __file__, "--phases-only", "--workdir", str(args.workdir)]
    child.update(json.loads(subprocess.run(phases, check=True, capture_output=True, text=True).stdout))
    from sc_data.stage.folder import verify

    t1 = time.perf_counter()
    verify(out)
    child["verify_s"] = time.perf_counter() - t1
    child.update(
        rows=args.rows,
        table_bytes=nbytes,
        peak_over_table=(child["peak_rss_bytes"] - child["baseline_rss_bytes"]) / nbytes,
        machine=f"{platform.node()} {platform.machine()} {platform.processor() or ''} cpus={__import__('os').cpu_count()}",
        python=platform.python_version(),
        pyarrow=pa.__version__,
        date=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    )
    print(json.dumps(child, indent=2))
    shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
