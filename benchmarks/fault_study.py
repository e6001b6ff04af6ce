"""Accuracy against the device-fault rate: faults present during mixed-precision training vs the
same faults under fp32-trained weights programmed once (docs/faults.md).

    python -m benchmarks.fault_study --out runs/faults [--rates 0,0.1,1,5,10] [--epochs 3]
        [--train-subset 10000] [--test-subset 2000] [--seed 0] [--data-dir D] [--modes ...]

For each fault rate r (% of all devices, split equally between stuck low and stuck high:
engineering choice, ``faults.stuck_low_rate = faults.stuck_high_rate = r / 200``) it runs

* ``train``          the MNIST MLP (configs/mlp_mnist_pcm.toml) trained on the faulty tiles;
* ``train_exclude``  the same with the exclusion policy (``faults.exclude = true``);
* ``inject``         the fp32 MLP (configs/mlp_mnist_fp32.toml, trained once for the study) programmed
                     once by program-and-verify onto tiles with the same faults (the same placement:
                     same seed and streams), read at once (no drift), w_max per layer =
                     max |W| / synapse.refresh_threshold (engineering choice: the layer's largest
                     weight at the refresh cap, so that nothing is clipped);
* ``inject_exclude`` the same with the exclusion policy (programming finds the stuck devices by its
                     check reads and writes around them).

Endurance of trained networks (issue 28: the most-cycled devices, a histogram, the projected
epochs until the first device wears out), from the devices' own counters in a run's checkpoint:

    python -m benchmarks.fault_study --combine STUDY --combine STUDY --out DIR   (mean +- std over seeds)
    python -m benchmarks.fault_study --endurance RUN [--endurance RUN ...] --out DIR
        [--limit 1e9] [--counts reset|all]

writes ``DIR/endurance.json``, ``DIR/endurance.md`` and ``DIR/endurance_<run>.png``. A run on a
subset of the training set is projected per full epoch (epochs = images trained / training-set
size).

Each row is test accuracy through the noisy crossbar reads (``task.evaluate``) after the last
epoch. Writes ``OUT/fault_study.json``, ``OUT/fault_study.md`` (the table) and
``OUT/fault_study.png``; each training keeps its run folder under ``OUT`` (metrics, checkpoint),
and a finished one (``summary.json``) is reused, so an interrupted study continues where it was.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from gpu_model.backend import make_backend
from gpu_model.faults import PCM_ENDURANCE_CYCLES, endurance_report, plot_endurance_histogram
from sim.config import load_config
from sim.data import load_dataset
from sim.nn.stores import AnalogWeights
from sim.tasks import make_task
from sim.train import Trainer

ROOT = Path(__file__).resolve().parent.parent
ARCHS = {   # network: (its committed PCM config, its committed fp32 config, dataset)
    "mlp": (ROOT / "configs" / "mlp_mnist_pcm.toml", ROOT / "configs" / "mlp_mnist_fp32.toml", "mnist"),
    "cnn": (ROOT / "configs" / "cnn_cifar10_pcm.toml", ROOT / "configs" / "cnn_cifar10_fp32.toml", "cifar10"),
}
RATES_PERCENT = (0.0, 0.1, 1.0, 5.0, 10.0)       # the sweep (issue 28)
MODES = ("train", "train_exclude", "inject", "inject_exclude")
PERCENT = 100.0
FAULT_EVENTS = ("faulty_devices", "worn_out_devices", "excluded_devices", "skipped_pulses", "fault_check_reads")


def fault_overrides(rate_pct: float, exclude: bool) -> dict:
    """[faults] keys of a study point: r % of the devices stuck, half low, half high."""
    half = rate_pct / PERCENT / 2
    kw = {"stuck_low_rate": half, "stuck_high_rate": half}
    if exclude:
        kw["exclude"] = True
    return kw if (half or exclude) else {}


def common_overrides(args) -> dict:
    return {"train": {"epochs": args.epochs, "train_subset": args.train_subset, "test_subset": args.test_subset,
                      "seed": args.seed}}


def run_training(cfg, ds, be, out: Path) -> dict:
    """Train ``cfg`` into ``out`` (reusing a finished run there); returns its summary."""
    done = out / "summary.json"
    if done.is_file():
        return json.loads(done.read_text())
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.toml").write_text(cfg.to_toml())
    t0 = time.perf_counter()
    tr = Trainer(cfg, ds, be, out, progress=False)
    summary = tr.run()
    summary["wall_seconds"] = time.perf_counter() - t0
    faults = {}                  # the tiles' fault counts (the trainer's summary sums only energy events)
    for st in tr.task.analog_stores():
        for k, v in st.tile.events.as_dict().items():
            if k in FAULT_EVENTS:
                faults[k] = faults.get(k, 0) + v
    summary["fault_events"] = faults
    done.write_text(json.dumps(summary, indent=2, default=float))
    return summary


def inject(fp32_task, args, ds, rate_pct: float, exclude: bool) -> dict:
    """The fp32 network's weights programmed once onto faulty PCM tiles; test accuracy."""
    pcm_config = ARCHS[args.arch][0]
    layers = fp32_task.store_layers()
    weights = [np.asarray(L.store.weights(), dtype=np.float32) for L in layers]
    thr = load_config(pcm_config).synapse.refresh_threshold
    w_max = [float(np.abs(w).max()) / thr for w in weights]
    ov = common_overrides(args)
    ov["synapse"] = {"w_max": w_max}
    f = fault_overrides(rate_pct, exclude)
    if f:
        ov["faults"] = f
    cfg = load_config(pcm_config, ov)
    be = make_backend("numpy", cfg.train.seed)
    task = make_task(cfg, ds, be)
    be32 = make_backend("numpy", cfg.train.seed)
    for name, net in task.networks.items():       # the digital state: biases, gains, BatchNorm statistics
        mods32 = {m.name: m for m in fp32_task.networks[name].modules()}
        for m in net.modules():
            if m is net:
                continue
            m.load_state_dict(mods32[m.name].state_dict(be32))
            for p, p32 in zip(m.params(), mods32[m.name].params()):
                if p.store is None:
                    p.value[...] = p32.value
    for L, w in zip(task.store_layers(), weights):
        if not isinstance(L.store, AnalogWeights):
            raise RuntimeError(f"{L.name}: expected an analog store")
        L.store.tile.program(w)                               # program-and-verify, once
    ev = task.evaluate()
    faults = {}
    for L in task.store_layers():
        for k, v in L.store.tile.events.as_dict().items():
            if k in FAULT_EVENTS:
                faults[k] = faults.get(k, 0) + v
    return {"test_accuracy": float(ev["test_accuracy"]), **faults}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--arch", default="mlp", choices=tuple(ARCHS), help="network (its committed configs)")
    ap.add_argument("--rates", default=",".join(f"{r:g}" for r in RATES_PERCENT), help="fault rates, % of devices")
    ap.add_argument("--modes", default=",".join(MODES), help=f"subset of {','.join(MODES)}")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--train-subset", type=int, default=10_000)
    ap.add_argument("--test-subset", type=int, default=2_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--endurance", action="append", type=Path, default=[], metavar="RUN",
                    help="report the endurance of these run folders instead of the study")
    ap.add_argument("--dataset", default=None, help="--endurance: dataset of runs without summary.json")
    ap.add_argument("--limit", type=float, default=PCM_ENDURANCE_CYCLES, help="endurance limit, cycles")
    ap.add_argument("--counts", default="reset", choices=("reset", "all"), help="what one cycle is")
    ap.add_argument("--combine", action="append", type=Path, default=[], metavar="STUDY",
                    help="mean +- std over these study folders (seeds) instead of running")
    args = ap.parse_args(argv)
    if args.endurance:
        return endurance(args, argv)
    if args.combine:
        return combine(args, argv)
    rates = [float(x) for x in args.rates.split(",") if x.strip()]
    modes = [m for m in args.modes.split(",") if m]
    bad = [m for m in modes if m not in MODES]
    if bad:
        print(f"fault_study: unknown mode(s) {', '.join(bad)}; known: {', '.join(MODES)}", file=sys.stderr)
        return 2
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    pcm_config, fp32_config, dataset = ARCHS[args.arch]
    ds = load_dataset(dataset, args.data_dir)
    res_path = out / "fault_study.json"
    results = json.loads(res_path.read_text()) if res_path.is_file() else {}
    results["command"] = "python -m benchmarks.fault_study " + " ".join(argv if argv is not None else sys.argv[1:])
    results.setdefault("points", {})
    results["arch"] = args.arch

    fp32_task = None
    if any(m.startswith("inject") for m in modes):
        cfg32 = load_config(fp32_config, common_overrides(args))
        be32 = make_backend("numpy", cfg32.train.seed)
        s32 = run_training(cfg32, ds, be32, out / "fp32")
        results["fp32_test_accuracy"] = s32["test_accuracy"]
        from sim.train import restore_trainer
        fp32_task = restore_trainer(out / "fp32", cfg32, be32, ds).task

    for rate in rates:
        for mode in modes:
            key = f"{mode}@{rate:g}"
            if key in results["points"]:
                continue
            t0 = time.perf_counter()
            exclude = mode.endswith("exclude")
            if mode.startswith("train"):
                ov = common_overrides(args)
                f = fault_overrides(rate, exclude)
                if f:
                    ov["faults"] = f
                cfg = load_config(pcm_config, ov)
                s = run_training(cfg, ds, make_backend("numpy", cfg.train.seed), out / f"{mode}_{rate:g}")
                point = {"test_accuracy": float(s["test_accuracy"]), "pulses": s["total_pulses"],
                         "refreshes": s["total_refreshes"],
                         **s.get("fault_events", {})}
            else:
                point = inject(fp32_task, args, ds, rate, exclude)
            point["seconds"] = time.perf_counter() - t0
            results["points"][key] = point
            res_path.write_text(json.dumps(results, indent=2, default=float))
            print(f"{key}: test accuracy {point['test_accuracy']:.4f} ({point['seconds']:.0f} s)", file=sys.stderr)

    write_table(results, rates, modes, out)
    return 0


def endurance(args, argv) -> int:
    """Endurance reports of trained runs (module docstring)."""
    from sim.train import load_checkpoint
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    reports, lines = {}, []
    for run in args.endurance:
        summ = json.loads((run / "summary.json").read_text()) if (run / "summary.json").is_file() else {}
        name = summ.get("dataset") or args.dataset
        if name is None:
            print(f"fault_study: {run} has no summary.json; say --dataset", file=sys.stderr)
            return 2
        cfg = load_config(run / "config.toml")
        ds = load_dataset(name, args.data_dir)
        be = make_backend("numpy", cfg.train.seed)
        task = make_task(cfg, ds, be)
        st = load_checkpoint(run)
        task.load_state_dict(st["task"])
        images = st.get("images", summ.get("images_trained", 0))
        n_train = len(ds.y_train) if hasattr(ds, "y_train") else len(ds.train)   # images, or characters (LSTM)
        epochs = images / n_train if images else st.get("epoch", 0)
        layers = {L.name: L.store.tile.devices for L in task.store_layers() if isinstance(L.store, AnalogWeights)}
        rep = endurance_report(layers, epochs=epochs, limit=args.limit, counts=args.counts)
        rep["run"] = str(run)
        ev = {}
        for L in task.store_layers():
            if isinstance(L.store, AnalogWeights):
                for k, v in L.store.tile.events.as_dict().items():
                    if k in FAULT_EVENTS:
                        ev[k] = ev.get(k, 0) + v
        rep["fault_events"] = ev
        reports[str(run)] = rep
        plot_endurance_histogram(rep, out / f"endurance_{run.name}.png")
        top = rep["top"][0] if rep["top"] else {}
        lines.append(f"| {run} | {epochs:.3g} | {rep['devices']:,} | {rep['max_cycles']:,} | "
                     f"{top.get('layer', '')} {top.get('side', '')}{top.get('device', '')} "
                     f"({top.get('row', '')}, {top.get('col', '')}) | {rep['epochs_to_first_wearout']:.3g} | "
                     f"{ev.get('faulty_devices', 0):,} | {ev.get('excluded_devices', 0):,} |")
    cmd = "python -m benchmarks.fault_study " + " ".join(argv if argv is not None else sys.argv[1:])
    (out / "endurance.json").write_text(json.dumps({"command": cmd, "reports": reports}, indent=2, default=float))
    head = [f"`{cmd}`", "", f"limit {args.limit:g} cycles ({args.counts})", "",
            "| run | epochs (full-set equivalents) | devices | most cycles | most-cycled device | "
            "projected epochs to the first wear-out | faulty devices | excluded |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    (out / "endurance.md").write_text("\n".join(head + lines) + "\n")
    print("\n".join(head + lines))
    return 0


def combine(args, argv) -> int:
    """Mean +- std (over seeds) of finished studies: ``OUT/fault_study_combined.{md,png}``."""
    studies = [json.loads((d / "fault_study.json").read_text()) for d in args.combine]
    rates = [float(x) for x in args.rates.split(",") if x.strip()]
    modes = [m for m in args.modes.split(",") if m]
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    cmd = "python -m benchmarks.fault_study " + " ".join(argv if argv is not None else sys.argv[1:])

    def stats(key):
        xs = [100 * st["points"][key]["test_accuracy"] for st in studies if key in st["points"]]
        return (float(np.mean(xs)), float(np.std(xs, ddof=1)) if len(xs) > 1 else 0.0, len(xs)) if xs else None

    lines = [f"`{cmd}`", "", f"mean ± std over {len(studies)} studies ({', '.join(map(str, args.combine))})", "",
             "| fault rate (% of devices) | " + " | ".join(modes) + " |", "|" + " --- |" * (len(modes) + 1)]
    for r in rates:
        cells = []
        for m in modes:
            v = stats(f"{m}@{r:g}")
            cells.append(f"{v[0]:.2f} ± {v[1]:.2f}" if v else "")
        lines.append(f"| {r:g} | " + " | ".join(cells) + " |")
    f32 = [100 * st["fp32_test_accuracy"] for st in studies if "fp32_test_accuracy" in st]
    if f32:
        lines += ["", f"fp32 (no devices): {np.mean(f32):.2f} ± {np.std(f32, ddof=1) if len(f32) > 1 else 0:.2f} %"]
    (out / "fault_study_combined.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    xs = [max(r, 0.01) for r in rates]
    for m in modes:
        v = [stats(f"{m}@{r:g}") or (np.nan, 0.0, 0) for r in rates]
        ax.errorbar(xs, [a for a, _, _ in v], yerr=[b for _, b, _ in v], fmt="o-", capsize=3, label=m)
    if f32:
        ax.axhline(np.mean(f32), color="k", lw=0.8, ls=":", label="fp32")
    ax.set_xscale("log")
    ax.set_xlabel("stuck devices (% of all; 0 drawn at 0.01)")
    ax.set_ylabel("test accuracy (%)")
    ax.legend(fontsize=7)
    ax.set_title(f"{studies[0].get('arch', 'mlp').upper()}: mean ± std of {len(studies)} seeds", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "fault_study_combined.png", dpi=120)
    plt.close(fig)
    return 0


def write_table(results: dict, rates, modes, out: Path) -> None:
    pts = results["points"]
    head = "| fault rate (% of devices) | " + " | ".join(modes) + " |"
    lines = [f"`{results['command']}`", "", head, "|" + " --- |" * (len(modes) + 1)]
    for r in rates:
        cells = [f"{100 * pts[f'{m}@{r:g}']['test_accuracy']:.2f}" if f"{m}@{r:g}" in pts else "" for m in modes]
        lines.append(f"| {r:g} | " + " | ".join(cells) + " |")
    if "fp32_test_accuracy" in results:
        lines += ["", f"fp32 (no devices): {100 * results['fp32_test_accuracy']:.2f} %"]
    (out / "fault_study.md").write_text("\n".join(lines) + "\n")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:        # pragma: no cover
        return
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    xs = [max(r, 0.01) for r in rates]          # 0 % drawn at 0.01 % on the log axis
    for m in modes:
        ys = [100 * pts[f"{m}@{r:g}"]["test_accuracy"] if f"{m}@{r:g}" in pts else np.nan for r in rates]
        ax.plot(xs, ys, "o-", label=m)
    if "fp32_test_accuracy" in results:
        ax.axhline(100 * results["fp32_test_accuracy"], color="k", lw=0.8, ls=":", label="fp32")
    ax.set_xscale("log")
    ax.set_xlabel("stuck devices (% of all; 0 drawn at 0.01)")
    ax.set_ylabel("test accuracy (%)")
    ax.legend(fontsize=7)
    ax.set_title(f"{results.get('arch', 'mlp').upper()}: faults in training vs programmed after fp32", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "fault_study.png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
