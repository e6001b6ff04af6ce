"""``mcasim report RUN [RUN ...]``: a Markdown table of runs, read from their summary files.

Each row shows the final and best figure of the run's metric (the task's: test accuracy, BPC,
FD...), epochs, pulses, refreshes and seconds per epoch, and the command that made it.
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


# how a metric is shown: (column title, scale, decimals); accuracies in %, others as they are
METRIC_FORMAT = {"test_accuracy": ("test acc. (%)", 100.0, 2)}


def metric_of(s: dict) -> str:
    return s.get("metric", "test_accuracy")   # summaries from before the layer library: accuracy


def _fmt(metric: str, value: float) -> str:
    _, scale, dec = METRIC_FORMAT.get(metric, (metric, 1.0, 3))
    return f"{scale * value:.{dec}f}"


def row(run: Path, label: str) -> str:
    s = json.loads((run / "summary.json").read_text())
    m = metric_of(s)
    cmd = f"`{s['command']}`" if s.get("command") else f"(config: `{run}/config.toml`)"
    return (f"| {label} | {_fmt(m, s[m])} | {_fmt(m, s['best_' + m])} (ep {s['best_epoch']}) "
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
    summaries = [json.loads((r / "summary.json").read_text()) for r in runs]
    metrics = {metric_of(s) for s in summaries}
    if len(metrics) > 1:
        print(f"mcasim report: error: the runs report different metrics ({', '.join(sorted(metrics))}); "
              "make one table per metric", file=sys.stderr)
        return 2
    m = metrics.pop()
    title = METRIC_FORMAT.get(m, (m,))[0]
    lines = [f"| run | {title} final | best | epochs | SET pulses | refreshes | s/epoch | command |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    lines += [row(r, lab) for r, lab in zip(runs, labels)]
    if args.stats:
        import statistics
        _, scale, dec = METRIC_FORMAT.get(m, (m, 1.0, 3))
        vals = [scale * s[m] for s in summaries]
        sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
        lines.append(f"| mean ± std of {len(vals)} | {statistics.mean(vals):.{dec}f} ± {sd:.{dec}f} | | | | | | |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0
