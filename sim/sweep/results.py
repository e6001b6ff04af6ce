"""Sweep results: ``results.csv`` (a row per trial), ``results.md`` (per-trial and mean ± std over
seeds per point, failures with their error) and ``results.png`` (the metric against each axis, with
error bars over seeds). Everything is read back from the trials' run folders.
"""
from __future__ import annotations

import csv
import io
import math
import statistics
from pathlib import Path

from ..checkpoint import write_text_atomic
from .trial import read_metrics, read_state, read_summary

PCT = ("test_accuracy", "train_accuracy")


def _energy_table():
    try:
        from sim.energy import load_table
        return load_table()
    except Exception:  # pragma: no cover - energy columns are optional
        return None


def _energy(summary: dict, table) -> dict:
    if table is None or summary is None:
        return {}
    try:
        from sim.energy import estimate_summary
        rep = estimate_summary(summary, table)
        return {"energy_cm_nJ_per_image": rep.cm_total * 1e9, "energy_digital_nJ_per_image": rep.digital_total * 1e9,
                "energy_ratio": rep.ratio}
    except Exception:
        return {}


def collect(spec, trials, out: Path, status: dict | None = None) -> list[dict]:
    """A row per trial from its run folder (status, knobs, seed, metric, pulses, energy per image)."""
    table = _energy_table()
    m = spec.metric
    rows = []
    for t in trials:
        run = out / "trials" / t.id
        st = read_state(run)
        s = read_summary(run)
        recs = read_metrics(run)
        stat = st.get("status") or "pending"
        if stat == "running":
            stat = "interrupted"
        row = {"trial": t.id, "point": t.point, "status": stat, **{f"knob:{k}": v for k, v in t.knobs.items()},
               "seed": t.seed, "epochs": (s or {}).get("epochs", len(recs)), "attempts": st.get("attempts", 0)}
        if recs:
            vals = [r[m] for r in recs if m in r]
            best = (max if spec.mode == "max" else min)(vals) if vals else None
            row[f"final_{m}"] = vals[-1] if vals else None
            row[f"best_{m}"] = best
            row["best_epoch"] = next(r["epoch"] for r in recs if r.get(m) == best) if vals else None
        if s is not None and stat in ("done", "stopped"):
            row.update(test_accuracy=s.get("test_accuracy"), loss=s.get("loss"), total_pulses=s.get("total_pulses"),
                       total_refreshes=s.get("total_refreshes"), seconds_per_epoch=s.get("seconds_per_epoch"))
            row.update(_energy(s, table))
        row["error"] = st.get("error", "") if stat == "failed" else ""
        row["folder"] = str(run)
        row["command"] = ((s or {}).get("command") if stat in ("done", "stopped") else None) or st.get("command", "")
        rows.append(row)
    return rows


def _columns(rows, spec):
    knobs = []
    for r in rows:
        for k in r:
            if k.startswith("knob:") and k not in knobs:
                knobs.append(k)
    m = spec.metric
    return (["trial", "status"] + knobs + ["seed", "epochs", f"final_{m}", f"best_{m}", "best_epoch", "test_accuracy",
            "loss", "total_pulses", "total_refreshes", "energy_cm_nJ_per_image", "energy_digital_nJ_per_image",
            "energy_ratio", "seconds_per_epoch", "attempts", "error", "folder", "command"])


def _csv_name(c: str) -> str:
    """CSV header: an axis is named by itself unless that clashes with a fixed column."""
    return c[5:] if c.startswith("knob:") and c[5:] not in FIXED else c


FIXED = ("trial", "point", "status", "seed", "epochs", "error", "folder", "command", "attempts")


def write_csv(rows, spec, path: Path) -> None:
    cols = _columns(rows, spec)
    f = io.StringIO(newline="")
    w = csv.DictWriter(f, fieldnames=[_csv_name(c) for c in cols], extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({_csv_name(k): v for k, v in r.items()})
    write_text_atomic(path, f.getvalue())    # a driver killed here leaves the old table or the new one


def _fmt_metric(m, v):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return f"{100 * v:.2f}" if m in PCT else f"{v:.4g}"


def _mean_sd(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None, None
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def points(rows, spec) -> list[dict]:
    """Mean ± std over seeds per point (finished trials only)."""
    m = spec.metric
    groups: dict = {}
    for r in rows:
        groups.setdefault(r["point"], []).append(r)
    out = []
    for pid, rs in groups.items():
        ok = [r for r in rs if r["status"] in ("done", "stopped")]
        p = {"point": pid, "knobs": {k[5:]: v for k, v in rs[0].items() if k.startswith("knob:")}, "n": len(ok),
             "of": len(rs)}
        for key in (f"final_{m}", f"best_{m}", "total_pulses", "energy_cm_nJ_per_image"):
            p[key] = _mean_sd([r.get(key) for r in ok])
        out.append(p)
    return out


def markdown(rows, spec, info: dict | None = None) -> str:
    m = spec.metric
    unit = " (%)" if m in PCT else ""
    knobs = [c for c in _columns(rows, spec) if c.startswith("knob:")]
    kn = [k[5:] for k in knobs]
    counts = {s: sum(r["status"] == s for r in rows) for s in ("done", "stopped", "failed", "interrupted", "pending")}
    lines = [f"# Sweep `{spec.name}` ({spec.path})", ""]
    desc = ", ".join(f"{v} {k}" for k, v in counts.items() if v)
    lines += [f"{len(rows)} trials: {desc}." + (f" Engine: {info['engine']}." if info and info.get("engine") else ""),
              f"Metric: `{m}` ({spec.mode}); final = last epoch, best = best epoch.", ""]
    lines += ["## Mean ± std over seeds per point", "",
              "| " + " | ".join(kn + ["seeds", f"final {m}{unit}", f"best {m}{unit}", "SET pulses",
                                     "energy / image (CM)"]) + " |",
              "| " + " | ".join(["---"] * (len(kn) + 5)) + " |"]
    for p in points(rows, spec):
        def ms(key, f):
            mu, sd = p[key]
            return "" if mu is None else (f(mu) + (f" ± {f(sd)}" if p["n"] > 1 else ""))
        lines.append("| " + " | ".join([str(p["knobs"].get(k, "")) for k in kn] + [
            f"{p['n']}" + (f" of {p['of']}" if p["n"] != p["of"] else ""),
            ms(f"final_{m}", lambda v: _fmt_metric(m, v)), ms(f"best_{m}", lambda v: _fmt_metric(m, v)),
            ms("total_pulses", lambda v: f"{v:,.0f}"), ms("energy_cm_nJ_per_image", lambda v: f"{v:.1f} nJ")]) + " |")
    lines += ["", "## Trials", "",
              "| trial | " + " | ".join(kn) + f" | seed | status | epochs | final {m}{unit} | best{unit} (epoch) | "
              "SET pulses | refreshes | energy / image CM (digital / CM) | command |",
              "| " + " | ".join(["---"] * (len(kn) + 10)) + " |"]
    for r in rows:
        best = _fmt_metric(m, r.get(f"best_{m}"))
        e = r.get("energy_cm_nJ_per_image")
        lines.append("| " + " | ".join([r["trial"]] + [str(r.get(k, "")) for k in knobs] + [
            str(r["seed"]), r["status"], str(r.get("epochs", "")), _fmt_metric(m, r.get(f"final_{m}")),
            f"{best} (ep {r.get('best_epoch')})" if best else "",
            f"{r['total_pulses']:,}" if r.get("total_pulses") is not None else "",
            f"{r['total_refreshes']:,}" if r.get("total_refreshes") is not None else "",
            (f"{e:.1f} nJ" + (f" ({r['energy_ratio']:.0f}x)" if r.get("energy_ratio") is not None else ""))
            if e is not None else "",
            f"`{r['command']}`" if r.get("command") else ""]) + " |")
    failed = [r for r in rows if r["status"] == "failed"]
    if failed:
        lines += ["", "## Failures", ""] + [f"- `{r['trial']}` (after {r['attempts']} attempt"
                                           f"{'s' if r['attempts'] != 1 else ''}): {r['error']}" for r in failed]
    return "\n".join(lines) + "\n"


def plot(rows, spec, path: Path) -> bool:
    """The metric (final, mean ± std over seeds) against each axis; one panel per axis."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401

    m = spec.metric
    ok = [r for r in rows if r["status"] in ("done", "stopped") and r.get(f"final_{m}") is not None]
    if not ok:
        return False
    panels = [(a.name, {p.label: p.value for p in a.points}, False) for a in spec.axes]
    if spec.search:
        panels += [(k, None, v["log"]) for k, v in spec.search["params"].items()]
    if not panels:
        panels = [("seed", None, False)]
    scale = 100 if m in PCT else 1
    fig, axs = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, (name, numeric, log) in zip(axs[0], panels):
        others = [a.name for a in spec.axes if a.name != name]
        groups: dict = {}
        for r in ok:
            key = " ".join(f"{o}={r.get('knob:' + o)}" for o in others) if numeric is not None else ""
            groups.setdefault(key, []).append(r)
        for gi, (g, rs) in enumerate(sorted(groups.items())):
            by_x: dict = {}
            for r in rs:
                lab = r.get("knob:" + name, r["seed"]) if name != "seed" else r["seed"]
                by_x.setdefault(str(lab), []).append(r[f"final_{m}"] * scale)
            if numeric is not None:
                order = [p for p in numeric if p in by_x]
                if all(numeric[p] is not None for p in order):
                    xs = [numeric[p] for p in order]
                else:
                    xs = [list(numeric).index(p) for p in order]
                    ax.set_xticks(range(len(numeric)), list(numeric), rotation=30, ha="right", fontsize=7)
            else:
                order = sorted(by_x, key=lambda s: float(s) if _isnum(s) else 0.0)
                xs = [float(p) if _isnum(p) else i for i, p in enumerate(order)]
            mu = [statistics.mean(by_x[p]) for p in order]
            sd = [statistics.stdev(by_x[p]) if len(by_x[p]) > 1 else 0.0 for p in order]
            style = "o-" if numeric is not None else "o"
            ax.errorbar(xs, mu, yerr=sd, fmt=style, capsize=3, label=g or None, ms=4)
        if log:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel(name)
        ax.set_ylabel(f"final {m}" + (" (%)" if m in PCT else ""))
        ax.grid(alpha=0.3)
        if any(groups) and len(groups) > 1:
            ax.legend(fontsize=6)
    fig.suptitle(f"{spec.name}: mean ± std over seeds", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _isnum(s) -> bool:
    try:
        float(s)
        return True
    except (TypeError, ValueError):
        return False


def write_all(spec, trials, out: Path, info: dict | None = None) -> list[dict]:
    rows = collect(spec, trials, out)
    write_csv(rows, spec, out / "results.csv")
    write_text_atomic(out / "results.md", markdown(rows, spec, info))
    try:
        plot(rows, spec, out / "results.png")
    except Exception as exc:  # a plot must never lose the tables
        import sys
        print(f"warning: results plot failed: {exc}", file=sys.stderr)
    return rows
