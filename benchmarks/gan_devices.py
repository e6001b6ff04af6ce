"""The smallest synapse that reaches fp32 quality: GAN FD against devices per side (issue 26).

Reads finished (or running) GAN run folders — their ``config.toml``, ``metrics.jsonl`` and, where
the run has ended, ``summary.json`` — and writes one table and one plot:

    python -m benchmarks.gan_devices runs/gan/n8v runs/gan/n16v runs/gan/n24v runs/gan/n32v \\
        runs/gan/pcm48v --fp32 runs/gan/fp32 --epoch 15 --out docs/img/gan_devices

- ``gan_devices.md``: per run the devices per side N (2N devices per synapse), blind or verified,
  the FD at ``--epoch`` and its ratio to the fp32 run's FD at the same epoch (the issue's target is
  1.25x), the best FD up to that epoch, the rarest class's share of the samples, the SET pulses and
  refreshes summed over epochs 1..E, the device count of the whole network, and the training energy
  per image (``mcasim energy``'s computational-memory total, over the whole run; runs without a
  ``summary.json`` leave it empty);
- ``gan_devices.png``: FD per epoch of every run and fp32 (left), FD at ``--epoch`` against N with
  the 1.25x fp32 line (right).

The smallest N whose ratio is <= ``TARGET`` is named under the table.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sim.config import ConfigError, load_config

TARGET = 1.25          # FD / fp32 FD (issue 26)


class CurveError(ValueError):
    pass


def _metrics(run: Path) -> list[dict]:
    p = run / "metrics.jsonl"
    if not p.is_file():
        raise CurveError(f"{run}: no metrics.jsonl (not a run folder?)")
    rows = [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
    if not rows or "fd" not in rows[0]:
        raise CurveError(f"{run}: not a GAN run (no FD in metrics.jsonl)")
    return rows


def run_point(run: Path, epoch: int) -> dict:
    """The figures of one run folder at ``epoch`` (see the module docstring)."""
    run = Path(run)
    rows = _metrics(run)
    upto = [r for r in rows if r["epoch"] <= epoch]
    if not upto or upto[-1]["epoch"] != epoch:
        raise CurveError(f"{run}: has {rows[-1]['epoch']} epochs, --epoch {epoch} asked")
    try:
        cfg = load_config(run / "config.toml")
    except (ConfigError, OSError) as exc:
        raise CurveError(f"{run}: {exc}") from exc
    s = cfg.synapse
    point = {"run": str(run), "mode": s.mode, "devices_per_side": int(s.devices_per_side),
             "verified": bool(s.verified_update), "anti_windup": bool(s.verify_anti_windup),
             "engine": cfg.tile.get("engine", "reference") if isinstance(cfg.tile, dict) else "reference",
             "epoch": epoch, "fd": float(upto[-1]["fd"]), "fd_curve": [float(r["fd"]) for r in rows],
             "best_fd": min(float(r["fd"]) for r in upto),
             "best_epoch": min(upto, key=lambda r: r["fd"])["epoch"],
             "coverage_min": float(upto[-1].get("coverage_min", float("nan"))),
             "pulses": sum(int(r.get("pulses", 0)) for r in upto),
             "refreshes": sum(int(r.get("refreshes", 0)) for r in upto),
             "energy_nJ_per_image": None, "devices": None}
    summ = run / "summary.json"
    if summ.is_file():
        from sim.energy import estimate_summary, load_table
        sd = json.loads(summ.read_text())
        point["energy_nJ_per_image"] = estimate_summary(sd, load_table(None)).cm_total * 1e9
        weights = sum(int(L["in"]) * int(L["out"]) for L in sd["layers"] if L.get("kind", "analog") == "analog")
        point["devices"] = weights * 2 * point["devices_per_side"] if s.mode != "fp32" else 0
    return point


def table(points: list[dict], fp32: dict | None) -> str:
    ref = fp32["fd"] if fp32 else None
    e = points[0]["epoch"] if points else (fp32 or {}).get("epoch")
    lines = [f"| N per side (devices per synapse) | updates | FD at epoch {e} | / fp32 | best FD (epoch) | "
             f"rarest class | SET pulses, epochs 1-{e} | refreshes | devices | energy (nJ/image) | run |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for p in sorted(points, key=lambda p: (p["mode"], p["devices_per_side"], p["verified"])):
        kind = ("verified" + (", anti-windup" if p["anti_windup"] else "")) if p["verified"] else "blind"
        if p["mode"] == "ideal":
            kind = "ideal devices"
        ratio = f"{p['fd'] / ref:.2f}x" if ref else ""
        dev = f"{p['devices']:,}" if p["devices"] else ""
        en = f"{p['energy_nJ_per_image']:.0f}" if p["energy_nJ_per_image"] is not None else ""
        lines.append(f"| {p['devices_per_side']} ({2 * p['devices_per_side']}) | {kind} | {p['fd']:.2f} | {ratio} | "
                     f"{p['best_fd']:.2f} ({p['best_epoch']}) | {100 * p['coverage_min']:.1f} % | "
                     f"{p['pulses']:,} | {p['refreshes']:,} | {dev} | {en} | `{p['run']}` |")
    if fp32:
        lines.append(f"\nfp32 (`{fp32['run']}`): FD {fp32['fd']:.2f} at epoch {fp32['epoch']}; target "
                     f"<= {TARGET}x = {TARGET * fp32['fd']:.2f}.")
        pcm = [p for p in points if p["mode"] == "pcm" and p["fd"] <= TARGET * fp32["fd"]]
        if pcm:
            best = min(pcm, key=lambda p: p["devices_per_side"])
            lines.append(f"Smallest PCM synapse that meets it: N = {best['devices_per_side']} per side "
                         f"({'verified' if best['verified'] else 'blind'}), FD {best['fd']:.2f} = "
                         f"{best['fd'] / fp32['fd']:.2f}x.")
        else:
            lines.append("No PCM run here meets it.")
    return "\n".join(lines)


def plot(points: list[dict], fp32: dict | None, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for p in sorted(points, key=lambda p: p["devices_per_side"]):
        lab = f"{p['mode']} N {p['devices_per_side']}" + (" verified" if p["verified"] else "")
        a.plot(range(1, len(p["fd_curve"]) + 1), p["fd_curve"], marker=".", label=lab)
    if fp32:
        a.plot(range(1, len(fp32["fd_curve"]) + 1), fp32["fd_curve"], "k-", lw=2, label="fp32")
    a.axvline(points[0]["epoch"] if points else 0, color="grey", ls=":")
    a.set_xlabel("epoch"); a.set_ylabel("FD (lower is better)"); a.set_yscale("log"); a.legend(fontsize=7)
    a.set_title("GAN FD per epoch")
    for mode, mk in (("pcm", "o-"), ("ideal", "s--")):
        pts = sorted((p for p in points if p["mode"] == mode), key=lambda p: p["devices_per_side"])
        if pts:
            b.plot([p["devices_per_side"] for p in pts], [p["fd"] for p in pts], mk, label=f"{mode}")
    if fp32:
        b.axhline(fp32["fd"], color="k", label="fp32")
        b.axhline(TARGET * fp32["fd"], color="k", ls="--", label=f"{TARGET}x fp32 (target)")
    b.set_xlabel("devices per side N"); b.set_ylabel(f"FD at epoch {points[0]['epoch'] if points else ''}")
    b.set_title("FD against synapse size"); b.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.gan_devices", description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="GAN run folders (PCM or ideal, any devices per side)")
    ap.add_argument("--fp32", help="the fp32 GAN run folder the ratios refer to")
    ap.add_argument("--epoch", type=int, required=True, help="epoch at which every run is compared")
    ap.add_argument("--out", required=True, help="folder for gan_devices.md and gan_devices.png")
    args = ap.parse_args(argv)
    if args.epoch < 1:
        ap.error("--epoch must be >= 1")
    try:
        points = [run_point(Path(r), args.epoch) for r in args.runs]
        fp32 = run_point(Path(args.fp32), args.epoch) if args.fp32 else None
    except CurveError as exc:
        print(f"gan_devices: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    md = table(points, fp32)
    (out / "gan_devices.md").write_text(md + "\n")
    (out / "gan_devices.json").write_text(json.dumps({"points": points, "fp32": fp32}, indent=1))
    plot(points, fp32, out / "gan_devices.png")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
