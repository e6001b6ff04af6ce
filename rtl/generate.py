"""Generate Verilog for the DPU (``make verilog`` -> ``python -m rtl.generate --out build/verilog``).

Writes ``<name>.v`` (the unit), ``<name>_synth_top.v`` (the unit in its serial-I/O wrapper, with
``--wrapper``) and ``<name>.json`` (spec, latency and bit map of the packed ports, read by the
harness builder and handy for anyone wiring the unit up).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from .spec import DPUSpec


def spec_from_args(args) -> DPUSpec:
    kw = {f.name: getattr(args, f.name) for f in dataclasses.fields(DPUSpec)
          if getattr(args, f.name, None) is not None}
    return DPUSpec(**kw)


def add_spec_arguments(ap: argparse.ArgumentParser) -> None:
    for f in dataclasses.fields(DPUSpec):
        typ = str if f.name == "rounding" else int
        ap.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=typ, default=None,
                        help=f"DPUSpec.{f.name} (default {f.default!r})")


def port_map(spec: DPUSpec) -> dict:
    """Bit offsets/widths of every per-lane field inside the packed ``i``/``o`` payloads."""
    from .unit import lane_in_layout, lane_out_layout

    def fields(layout):
        return {name: {"offset": fld.offset, "width": fld.shape.width, "signed": fld.shape.signed}
                for name, fld in layout}

    li, lo = lane_in_layout(spec), lane_out_layout(spec)
    return {"lanes": spec.lanes,
            "in": {"lane_width": li.size, "fields": fields(li)},
            "out": {"lane_width": lo.size, "fields": fields(lo)}}


def convert_unit(spec: DPUSpec, name: str = "dpu") -> str:
    from amaranth.back import verilog

    from .unit import DPUUnit
    return verilog.convert(DPUUnit(spec), name=name, emit_src=False)


def convert_wrapper(spec: DPUSpec, name: str = "top", io_bits: int = 8) -> str:
    from amaranth.back import verilog

    from .unit import SerialWrapper
    return verilog.convert(SerialWrapper(spec, io_bits), name=name, emit_src=False)


def describe(spec: DPUSpec) -> dict:
    from .unit import LATENCY
    return {"spec": spec.to_dict(), "latency": LATENCY, "ports": port_map(spec)}


def write(spec: DPUSpec, out: Path, name: str = "dpu", wrapper: bool = False) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    files = {"verilog": out / f"{name}.v", "json": out / f"{name}.json"}
    files["verilog"].write_text(convert_unit(spec, name))
    files["json"].write_text(json.dumps(describe(spec), indent=2) + "\n")
    if wrapper:
        files["wrapper"] = out / f"{name}_synth_top.v"
        files["wrapper"].write_text(convert_wrapper(spec, "top"))
    return files


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rtl.generate", description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("build/verilog"))
    ap.add_argument("--name", default="dpu")
    ap.add_argument("--no-wrapper", action="store_true", help="skip the serial-I/O synthesis top")
    add_spec_arguments(ap)
    args = ap.parse_args(argv)
    spec = spec_from_args(args)
    files = write(spec, args.out, args.name, wrapper=not args.no_wrapper)
    for f in files.values():
        print(f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
