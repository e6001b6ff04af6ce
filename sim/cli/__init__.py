"""The ``mcasim`` command line."""
from __future__ import annotations

import argparse
import importlib
import sys

# sub-command -> (module, help). Each module defines add_arguments(parser) and run(args) -> int.
COMMANDS = {
    "train": ("sim.cli.train", "train a network with the mixed-precision scheme"),
    "evaluate": ("sim.cli.evaluate", "re-read a trained run after drift and report accuracy vs time"),
    "device-curve": ("sim.cli.device_curve", "characterise a PCM preset: G vs pulse number, drift"),
    "bench": ("sim.cli.bench", "micro-benchmarks (e.g. `mcasim bench dpu`)"),
    "energy": ("sim.energy.cli", "training energy per image: computational memory vs 32-bit digital"),
    "report": ("sim.cli.report", "Markdown table of runs from their summary files"),
    "sweep": ("sim.sweep.cli", "many runs (grid, zip, random search, seeds) on Ray or one after another"),
}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="mcasim", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    for name, (mod, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_)
        try:
            importlib.import_module(mod).add_arguments(p)
        except ModuleNotFoundError as exc:
            if exc.name is None or not (mod == exc.name or mod.startswith(exc.name + ".")):
                raise
            p.set_defaults(_missing=mod)
        p.set_defaults(_module=mod)
    return ap


def main(argv=None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    args._argv = list(sys.argv[1:] if argv is None else argv)
    if getattr(args, "_missing", None):
        ap.error(f"command {args.command!r} is not available in this build")
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
