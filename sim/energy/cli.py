"""``mcasim energy RUN``: training energy per image, computational memory vs 32-bit digital.

Reads ``RUN/summary.json`` (event counts written by ``mcasim train``), applies an energy table
(``--table FILE`` or a shipped preset name, default ``default``), prints both designs' energy per
training image, their ratio and a breakdown by component, and writes ``RUN/energy.json`` and a
stacked-bar plot ``RUN/energy.png`` (``--out`` to put it elsewhere). See ``docs/energy.md``.
"""
from __future__ import annotations

import json
import sys
from importlib import resources
from pathlib import Path

from .model import EnergyError, estimate_summary, load_table


def preset_names() -> list[str]:
    d = resources.files("sim.energy").joinpath("tables")
    return sorted(p.name[len("energy_"):-len(".toml")] for p in d.iterdir()
                  if p.name.startswith("energy_") and p.name.endswith(".toml"))


def resolve_table(spec):
    """A path, or the name of a shipped preset (``default``, ``dram_reference``, ...)."""
    if spec is None:
        return load_table()
    p = Path(spec)
    if p.exists():
        return load_table(p)
    name = spec.replace("-", "_")
    if name in preset_names():
        return load_table(resources.files("sim.energy").joinpath(f"tables/energy_{name}.toml"))
    raise EnergyError(f"energy table not found: {spec} (not a file, nor a preset: {', '.join(preset_names())})")


def add_arguments(p):
    p.add_argument("run", help="run folder written by `mcasim train` (holds summary.json)")
    p.add_argument("--table", help="energy table TOML file, or a preset name "
                   "(default: 'default'; also 'dram-reference')")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--out", help="stacked-bar PNG to write (default: RUN/energy.png)")


def fmt_j(x: float) -> str:
    for unit, f in (("µJ", 1e-6), ("nJ", 1e-9), ("pJ", 1e-12)):
        if abs(x) >= f:
            return f"{x / f:8.2f} {unit}"
    return f"{x / 1e-12:8.3f} pJ"


def render(rep, run: Path, summary: dict) -> str:
    lines = [f"training energy per image — run {run} ({rep.images:,} images, "
             f"batch {summary.get('batch_size', '?')}, {summary.get('optimizer', '?')}; table {rep.table})", ""]
    lines.append(f"  computational memory (mixed precision): {fmt_j(rep.cm_total)}")
    lines.append(f"  32-bit digital reference:               {fmt_j(rep.digital_total)}")
    lines.append(f"  ratio (digital / computational memory): {rep.ratio:8.1f} x")
    for title, part, tot in (("computational memory", rep.cm, rep.cm_total),
                             ("32-bit digital", rep.digital, rep.digital_total)):
        lines += ["", f"  {title} breakdown:"]
        for k, v in sorted(part.items(), key=lambda kv: -kv[1]):
            pct = 100 * v / tot if tot else 0.0
            lines.append(f"    {k:36s} {fmt_j(v)}  {pct:5.1f} %")
    for n in rep.notes:
        lines += ["", f"  note: {n}"]
    return "\n".join(lines)


def plot(rep, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    comps = list(dict.fromkeys(list(rep.digital) + list(rep.cm)))
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 6.5), gridspec_kw={"width_ratios": [1, 1.3]})
    cmap = plt.get_cmap("tab20")
    bottoms = [0.0, 0.0]
    for i, k in enumerate(comps):           # stacked bars, linear scale
        vals = [rep.cm.get(k, 0.0) * 1e9, rep.digital.get(k, 0.0) * 1e9]
        ax.bar([0, 1], vals, bottom=bottoms, color=cmap(i % 20), label=k, width=0.6)
        bottoms = [b + v for b, v in zip(bottoms, vals)]
    ax.set_xticks([0, 1], [f"computational\nmemory\n{rep.cm_total * 1e9:.3g} nJ",
                           f"32-bit digital\n\n{rep.digital_total * 1e9:.3g} nJ"])
    ax.set_ylabel("energy per training image (nJ)")
    ax.set_title(f"ratio {rep.ratio:.1f}x  (table {rep.table})")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
    # per component, both designs, log scale (the small components are invisible in the stack)
    import numpy as np
    y = np.arange(len(comps))
    for off, part, lab, col in ((-0.2, rep.cm, "computational memory", "tab:green"),
                                (0.2, rep.digital, "32-bit digital", "tab:blue")):
        vals = [max(part.get(k, 0.0) * 1e9, 1e-6) for k in comps]
        ax2.barh(y + off, vals, height=0.4, label=lab, color=col)
    ax2.set_yticks(y, comps, fontsize=8)
    ax2.invert_yaxis()
    ax2.set_xscale("log")
    ax2.set_xlim(left=1e-3)
    ax2.set_xlabel("nJ per training image (log)")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(args) -> int:
    run_dir = Path(args.run)
    sp = run_dir / "summary.json"
    if not run_dir.is_dir():
        print(f"error: run folder not found: {run_dir}", file=sys.stderr)
        return 2
    if not sp.is_file():
        print(f"error: {sp} not found (is {run_dir} a finished `mcasim train` run?)", file=sys.stderr)
        return 2
    try:
        summary = json.loads(sp.read_text())
    except json.JSONDecodeError as exc:
        print(f"error: {sp}: invalid JSON: {exc}", file=sys.stderr)
        return 2
    try:
        table = resolve_table(args.table)
        rep = estimate_summary(summary, table)
    except EnergyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    d = rep.as_dict()
    d["run"] = str(run_dir)
    d["table_file"] = table.source
    (run_dir / "energy.json").write_text(json.dumps(d, indent=2) + "\n")
    png = Path(args.out) if args.out else run_dir / "energy.png"
    plot(rep, png)
    if args.json:
        print(json.dumps(d))
    else:
        print(render(rep, run_dir, summary))
        print(f"\nwrote {run_dir / 'energy.json'} and {png}")
    return 0
