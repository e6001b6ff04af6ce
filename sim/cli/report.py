"""``mcasim report RUN [RUN ...]``: a Markdown table of runs, read from their summary files.

Each row shows the run's final and best test accuracy, epochs, pulses, refreshes and seconds per
epoch, and the command that reproduces it (rebuilt from the run's resolved ``config.toml``).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def add_arguments(p):
    p.add_argument("runs", nargs="+", help="run folders written by `mcasim train`")
    p.add_argument("--labels", help="comma-separated row labels (default: folder names)")
    p.add_argument("--out", help="also write the table to this file")
    p.add_argument("--stats", action="store_true", help="add a line with the mean and std of the final accuracies")


def row(run: Path, label: str) -> str:
    s = json.loads((run / "summary.json").read_text())
    cmd = f"`{s['command']}`" if s.get("command") else f"(config: `{run}/config.toml`)"
    return (f"| {label} | {100 * s['test_accuracy']:.2f} | {100 * s['best_test_accuracy']:.2f} (ep {s['best_epoch']}) "
            f"| {s['epochs']} | {s['total_pulses']:,} | {s['total_refreshes']:,} | {s['seconds_per_epoch']:.0f} | {cmd} |")


def run(args) -> int:
    runs = [Path(r) for r in args.runs]
    labels = args.labels.split(",") if args.labels else [r.name for r in runs]
    if len(labels) != len(runs):
        print(f"mcasim report: error: {len(labels)} labels for {len(runs)} runs", file=sys.stderr)
        return 2
    missing = [str(r) for r in runs if not (r / "summary.json").is_file()]
    if missing:
        print(f"mcasim report: error: no summary.json in {', '.join(missing)}", file=sys.stderr)
        return 2
    lines = ["| run | test acc. (%) final | best (%) | epochs | SET pulses | refreshes | s/epoch | command |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    lines += [row(r, lab) for r, lab in zip(runs, labels)]
    if args.stats:
        import statistics
        acc = [100 * json.loads((r / "summary.json").read_text())["test_accuracy"] for r in runs]
        sd = statistics.stdev(acc) if len(acc) > 1 else 0.0
        lines.append(f"| mean ± std of {len(acc)} | {statistics.mean(acc):.2f} ± {sd:.2f} | | | | | | |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0
