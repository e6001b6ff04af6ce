"""``python -m mcasim.torch.report RUN... [--plot FILE]``: the torch examples' runs as a table.

Reads each run folder's ``metrics.jsonl`` (one line per epoch, written by examples/*.py) and
prints a Markdown table of the last epoch (every numeric column the runs have, in their order, and
the SET pulses of all epochs) and the command that made the run (``command.txt``, written by the
examples); ``--plot`` draws each run's test metric per epoch (test_accuracy or test_bpc) into one PNG.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

TEST_METRICS = ("test_accuracy", "test_bpc")     # the curve of --plot: the first the runs have


def load_run(run: Path) -> list[dict]:
    f = run / "metrics.jsonl"
    if not f.is_file():
        raise SystemExit(f"{run}: no metrics.jsonl (not a run of examples/*.py?)")
    return [json.loads(line) for line in f.read_text().splitlines() if line.strip()]


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 100 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def table(runs: list[Path]) -> str:
    rows = []
    for r in runs:
        m = load_run(r)
        if "pulses" in m[-1]:                      # the examples log pulses per epoch: add the total
            m[-1] = {**m[-1], "pulses_all_epochs": sum(int(e.get("pulses", 0)) for e in m)}
        rows.append((r, m))
    cols: list[str] = []
    for _, m in rows:
        for k in m[-1]:
            if k not in cols and isinstance(m[-1][k], (int, float)):
                cols.append(k)
    out = ["| run | " + " | ".join(cols) + " | command |", "| --- " * (len(cols) + 2) + "|"]
    for r, m in rows:
        cmd = (r / "command.txt").read_text().strip() if (r / "command.txt").is_file() else ""
        out.append(f"| {r.name} | " + " | ".join(_fmt(m[-1].get(k, "")) for k in cols)
                   + f" | {'`' + cmd + '`' if cmd else ''} |")
    return "\n".join(out)


def plot(runs: list[Path], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    label = None
    for r in runs:
        m = load_run(r)
        key = next((k for k in TEST_METRICS if k in m[-1]), None)
        if key is None:
            continue
        label = key
        ax.plot([e["epoch"] for e in m], [e[key] for e in m], "o-", label=r.name)
    ax.set_xlabel("epoch")
    ax.set_ylabel(label or "metric")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--plot", type=Path, help="PNG of the test metric per epoch")
    a = ap.parse_args(argv)
    print(table(a.runs))
    if a.plot:
        plot(a.runs, a.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
