"""The whole unit (:class:`rtl.tile.TileUnit`) in the loop: Verilator model + streaming harness
(``rtl/harness/tile_harness.cpp``) as a shared library, driven through ctypes, one mini-batch per
call. Built on first use into ``build/dpu_tile_rtl/<key>`` (key: the spec and the sources'
digest; ``MCASIM_BUILD_DIR`` overrides ``build``), as :mod:`rtl.verilated` does for the lanes.
"""
from __future__ import annotations

import ctypes
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from .golden import EVENT_DTYPE
from .spec import TileSpec
from .verilated import HARNESS_DIR, ToolchainError, _tool_env, build_root, find_verilator


def _digest(ts: TileSpec) -> str:
    h = hashlib.sha256(repr(ts).encode())
    here = Path(__file__).resolve().parent
    for p in (here / "tile.py", here / "unit.py", here / "spec.py", here / "tile_verilated.py",
              HARNESS_DIR / "tile_harness.cpp"):
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def _cfg_header(ts: TileSpec, key: str) -> str:
    from .tile import STATUS_LAYOUT, chi_addr_bits, event_layout
    ev = event_layout(ts)
    aw = chi_addr_bits(ts)
    st = {k: f.offset for k, f in STATUS_LAYOUT}
    d = {
        "TILE_KEY": f'"{key}"', "T_ROWS": ts.rows, "T_COLS": ts.cols, "T_BATCH": ts.batch,
        "T_LANES": ts.lanes, "T_TAPS": ts.taps, "T_GROUPS": ts.groups, "T_X_W": ts.x_bits,
        "T_D_W": ts.delta_bits, "T_CHI_W": ts.dpu.chi_bits, "WR_ADDR_OFF": 0, "WR_ADDR_W": aw,
        "WR_DATA_OFF": aw,
        "EV_ROW_OFF": ev["row"].offset, "EV_ROW_W": ev["row"].shape.width,
        "EV_COL_OFF": ev["col"].offset, "EV_COL_W": ev["col"].shape.width,
        "EV_COUNT_OFF": ev["count"].offset, "EV_COUNT_W": ev["count"].shape.width,
        "EV_NEG_OFF": ev["neg"].offset,
        "ST_BUSY_OFF": st["busy"], "ST_PENDING_OFF": st["pending"], "ST_EVENTS_OFF": st["events"],
        "ST_PULSES_OFF": st["pulses"], "ST_PMAX_OFF": st["pmax_hits"], "ST_INCSAT_OFF": st["inc_sat"],
        "ST_BATCHES_OFF": st["batches"],
    }
    return "#pragma once\n" + "".join(f"#define {k} {v}\n" for k, v in d.items())


def build_tile_library(ts: TileSpec, verbose: bool = False) -> Path:
    from amaranth.back import verilog

    from .tile import TileUnit
    key = f"R{ts.rows}C{ts.cols}B{ts.batch}L{ts.lanes}P{ts.taps}_{_digest(ts)}"
    root = build_root() / "dpu_tile_rtl"
    final = root / key
    lib = final / "libtile.so"
    if lib.exists():
        return lib
    verilator = find_verilator()
    cxx = shutil.which(os.environ.get("CXX", "c++")) or shutil.which("g++")
    missing = [n for n, p in (("verilator", verilator), ("c++", cxx), ("make", shutil.which("make"))) if not p]
    if missing:
        raise ToolchainError(f"the Verilator tile backend needs {', '.join(missing)} (`make setup`)")
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{key}.lock", "w") as lockf:
        fcntl.flock(lockf, fcntl.LOCK_EX)
        if lib.exists():
            return lib
        work = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=root))
        (work / "tile.v").write_text(verilog.convert(TileUnit(ts), name="tile", emit_src=False))
        (work / "tile_cfg.h").write_text(_cfg_header(ts, key))
        (work / "spec.json").write_text(json.dumps(ts.to_dict(), indent=2) + "\n")
        cmd = [verilator, "--cc", "--exe", "--build", "-j", "2", "--top-module", "tile",
               "-O3", "--x-assign", "fast", "--x-initial", "fast", "--noassert",
               "-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC",
               "-CFLAGS", f"-fPIC -O2 -I{work}", "-LDFLAGS", "-shared -Wl,-Bsymbolic",
               "-MAKEFLAGS", "CFG_CXXFLAGS_PCH_I=-include",
               "-Mdir", str(work / "obj"), "-o", "libtile.so",
               str(work / "tile.v"), str(HARNESS_DIR / "tile_harness.cpp")]
        env = _tool_env(verilator)
        if cxx:
            env.setdefault("CXX", cxx)
        proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
        shutil.rmtree(Path(env["PATH"].split(os.pathsep)[1]), ignore_errors=True)
        if proc.returncode != 0 or not (work / "obj" / "libtile.so").exists():
            raise ToolchainError(f"building the Verilator tile model failed (in {work}):\n"
                                 f"{(proc.stdout + proc.stderr)[-4000:]}")
        if verbose:
            print(proc.stdout[-2000:], file=sys.stderr)
        shutil.copy2(work / "obj" / "libtile.so", work / "libtile.so")
        if final.exists():
            shutil.rmtree(final)
        os.replace(work, final)
    return lib


_I32P = np.ctypeslib.ndpointer(dtype=np.int32, flags="C_CONTIGUOUS")
_U32P = np.ctypeslib.ndpointer(dtype=np.uint32, flags="C_CONTIGUOUS")


class VerilatedTile:
    """The Verilator model of the whole unit: ``load_chi``, ``dump_chi``, ``load_seed``,
    ``clear``, ``batch(x, delta, m) -> events`` (EVENT_DTYPE), ``counters()``, ``cycles``."""

    def __init__(self, spec: TileSpec, verbose: bool = False):
        self.spec = spec
        self.path = build_tile_library(spec, verbose)
        lib = ctypes.CDLL(str(self.path))
        lib.tile_new.restype = ctypes.c_void_p
        lib.tile_free.argtypes = [ctypes.c_void_p]
        lib.tile_cycles.restype = ctypes.c_uint64
        lib.tile_cycles.argtypes = [ctypes.c_void_p]
        lib.tile_seed.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
        lib.tile_clear.argtypes = [ctypes.c_void_p]
        lib.tile_status.argtypes = [ctypes.c_void_p, _U32P]
        lib.tile_load_chi.restype = lib.tile_dump_chi.restype = ctypes.c_int64
        lib.tile_load_chi.argtypes = [ctypes.c_void_p, _I32P]
        lib.tile_dump_chi.argtypes = [ctypes.c_void_p, _I32P]
        lib.tile_batch.restype = ctypes.c_int64
        lib.tile_batch.argtypes = [ctypes.c_void_p, _I32P, _I32P, ctypes.c_uint32, _I32P,
                                   ctypes.c_int64, ctypes.POINTER(ctypes.c_uint64)]
        self._lib = lib
        self._h = ctypes.c_void_p(lib.tile_new())
        self.last_batch_cycles = 0
        self.load_seed(0)

    @property
    def cycles(self) -> int:
        return int(self._lib.tile_cycles(self._h))

    def close(self):
        if getattr(self, "_h", None):
            self._lib.tile_free(self._h)
            self._h = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def load_seed(self, seed: int):
        self._lib.tile_seed(self._h, int(seed) & 0xFFFFFFFF)

    def clear(self):
        self._lib.tile_clear(self._h)

    def load_chi(self, chi):
        c = np.ascontiguousarray(np.asarray(chi).reshape(-1), dtype=np.int32)
        if c.size != self.spec.rows * self.spec.cols:
            raise ValueError(f"chi must have {self.spec.rows * self.spec.cols} entries")
        if self._lib.tile_load_chi(self._h, c) < 0:
            raise RuntimeError("tile harness: chi load stalled")

    def dump_chi(self) -> np.ndarray:
        out = np.empty(self.spec.rows * self.spec.cols, np.int32)
        if self._lib.tile_dump_chi(self._h, out) < 0:
            raise RuntimeError("tile harness: chi dump stalled")
        return out.reshape(self.spec.rows, self.spec.cols)

    def counters(self) -> dict:
        out = np.zeros(5, np.uint32)
        self._lib.tile_status(self._h, out)
        return dict(zip(("events", "pulses", "pmax_hits", "inc_sat", "batches"), map(int, out)))

    def batch(self, x, delta, m: int) -> np.ndarray:
        ts = self.spec
        x = np.ascontiguousarray(x, dtype=np.int32).reshape(ts.batch, ts.cols)
        d = np.ascontiguousarray(delta, dtype=np.int32).reshape(ts.batch, ts.rows)
        cap = ts.rows * ts.cols
        ev = np.empty(4 * cap, np.int32)
        cyc = ctypes.c_uint64(0)
        n = self._lib.tile_batch(self._h, x, d, int(m), ev, cap, ctypes.byref(cyc))
        if n < 0:
            raise RuntimeError(f"tile harness: batch failed ({n})")
        self.last_batch_cycles = int(cyc.value)
        raw = ev[:4 * n].reshape(n, 4)
        out = np.empty(n, EVENT_DTYPE)
        out["row"], out["col"], out["count"], out["neg"] = raw[:, 0], raw[:, 1], raw[:, 2], raw[:, 3] != 0
        return out
