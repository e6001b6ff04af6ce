"""``mcasim report RUN [RUN ...]``: a Markdown table of runs, read from their summary files.

Each row shows the final and best figure of the run's metric (the task's: test accuracy, BPC,
FD...), the final values of any ``--columns`` (other per-epoch figures of the summary, e.g. a GAN's
``coverage_min``, ``label_match`` or an LSTM's ``test_bpc``), epochs, pulses, refreshes and seconds
per epoch, and the command that makes it.

The command is the one recorded by the run's last ``mcasim train`` call, without ``--resume`` (a
resumed run equals an uninterrupted one, so on an empty folder it makes the same run), shown only
when it still resolves to the run's own ``config.toml`` (its config file, ``--set``s and options
against the file as it is now). A run whose command no longer does (the config file changed since,
or it was continued with other options than it started with) shows its ``config.toml`` instead.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def add_arguments(p):
    p.add_argument("runs", nargs="+", help="run folders written by `mcasim train`")
    p.add_argument("--labels", help="comma-separated row labels (default: folder names)")
    p.add_argument("--out", help="also write the table to this file")
    p.add_argument("--stats", action="store_true", help="add a line with the mean and std of the final figures")
    p.add_argument("--columns", help="comma-separated summary keys shown as extra columns (final values), "
                                     "e.g. coverage_min,label_match or test_bpc")


# how a metric is shown: (column title, scale, decimals); accuracies in %, others as they are
METRIC_FORMAT = {"test_accuracy": ("test acc. (%)", 100.0, 2),
                 "coverage_min": ("rarest class (%)", 100.0, 1)}


def metric_of(s: dict) -> str:
    return s.get("metric", "test_accuracy")   # summaries from before the layer library: accuracy


def _fmt(metric: str, value: float) -> str:
    _, scale, dec = METRIC_FORMAT.get(metric, (metric, 1.0, 3))
    return f"{scale * value:.{dec}f}"


def _cell(s: dict, key: str) -> str:
    v = s.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return "—"
    return str(v) if isinstance(v, int) else _fmt(key, v)


def fresh_command(run: Path, command: str) -> str | None:
    """``command`` (a recorded ``mcasim train ...``) without ``--resume``, if it resolves to the
    run's ``config.toml``; else None (module docstring)."""
    import contextlib
    import io
    import shlex

    from sim.cli import build_parser
    from sim.cli.train import command_overrides
    from sim.config import ConfigError, load_config
    try:
        argv = shlex.split(command)
    except ValueError:
        return None
    if argv[:2] != ["mcasim", "train"]:
        return None
    argv = [a for a in argv[1:] if a != "--resume"]
    try:
        with contextlib.redirect_stderr(io.StringIO()):     # a command this build cannot parse: None
            args = build_parser().parse_args(argv)
        made = load_config(args.config, command_overrides(args))
        recorded = load_config(run / "config.toml")
    except (SystemExit, ConfigError, OSError):
        return None
    return "mcasim " + shlex.join(argv) if made.to_dict() == recorded.to_dict() else None


def row(run: Path, label: str, columns: list[str] = ()) -> str:
    s = json.loads((run / "summary.json").read_text())
    m = metric_of(s)
    fresh = fresh_command(run, s["command"]) if s.get("command") else None
    cmd = f"`{fresh}`" if fresh else f"(config: `{run}/config.toml`)"
    extra = "".join(f" {_cell(s, c)} |" for c in columns)
    return (f"| {label} | {_fmt(m, s[m])} | {_fmt(m, s['best_' + m])} (ep {s['best_epoch']}) |{extra}"
            f" {s['epochs']} | {s['total_pulses']:,} | {s['total_refreshes']:,} | {s['seconds_per_epoch']:.0f} | {cmd} |")


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
    columns = [c.strip() for c in args.columns.split(",") if c.strip()] if args.columns else []
    unknown = [c for c in columns if not any(c in s for s in summaries)]
    if unknown:
        print(f"mcasim report: error: no run's summary has {', '.join(unknown)}", file=sys.stderr)
        return 2
    title = METRIC_FORMAT.get(m, (m,))[0]
    heads = "".join(f" {METRIC_FORMAT.get(c, (c,))[0]} final |" for c in columns)
    lines = [f"| run | {title} final | best |{heads} epochs | SET pulses | refreshes | s/epoch | command |",
             "| --- | --- | --- |" + " --- |" * len(columns) + " --- | --- | --- | --- | --- |"]
    lines += [row(r, lab, columns) for r, lab in zip(runs, labels)]
    if args.stats:
        import statistics

        def mean_sd(key):
            _, scale, dec = METRIC_FORMAT.get(key, (key, 1.0, 3))
            vals = [scale * s[key] for s in summaries if isinstance(s.get(key), (int, float))]
            if not vals:
                return ""
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            return f"{statistics.mean(vals):.{dec}f} ± {sd:.{dec}f}"
        extra = "".join(f" {mean_sd(c)} |" for c in columns)
        lines.append(f"| mean ± std of {len(summaries)} | {mean_sd(m)} | |{extra} | | | | |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0
