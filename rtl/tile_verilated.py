"""The whole unit (:class:`rtl.tile.TileUnit`) in the loop: Verilator model + streaming harness
(``rtl/harness/tile_harness.cpp``) as a shared library, driven through ctypes, one mini-batch per
call. Built on first use into ``build/dpu_tile_rtl/<key>`` (key: the spec, the build flags and the
sources' digest; ``MCASIM_BUILD_DIR`` overrides ``build``; ``MCASIM_BUILD_JOBS`` the compile jobs,
default 2), as :mod:`rtl.verilated` does for the lanes.
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


#: Verilator's options for the model (part of the build key: a change rebuilds)
VERILATOR_FLAGS = ("-O3", "--x-assign", "fast", "--x-initial", "fast", "--noassert")
#: the C++ compiler's options for the model and the harness (part of the build key)
CXX_FLAGS = "-O2"


def _digest(ts: TileSpec) -> str:
    h = hashlib.sha256(repr((ts, VERILATOR_FLAGS, CXX_FLAGS, EVENT_DTYPE.descr)).encode())
    here = Path(__file__).resolve().parent
    for p in (here / "tile.py", here / "unit.py", here / "spec.py", here / "tile_verilated.py",
              HARNESS_DIR / "tile_harness.cpp"):
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def _cfg_header(ts: TileSpec, key: str) -> str:
    from .tile import STATUS_LAYOUT, chi_addr_bits, event_layout
    ev = event_layout(ts)
    aw = chi_addr_bits(ts)
    if [EVENT_DTYPE[k] for k in ("row", "col", "count", "neg")] != [np.dtype(np.int32)] * 3 + [np.dtype(np.bool_)]:
        raise ValueError(f"tile harness writes int32 row/col/count and a bool neg, EVENT_DTYPE is {EVENT_DTYPE}")
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
        # the harness writes events as EVENT_DTYPE records (no conversion on the Python side)
        "EVR_SIZE": EVENT_DTYPE.itemsize, **{f"EVR_{k.upper()}": EVENT_DTYPE.fields[k][1]
                                             for k in ("row", "col", "count", "neg")},
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
        jobs = os.environ.get("MCASIM_BUILD_JOBS", "2")
        cmd = [verilator, "--cc", "--exe", "--build", "-j", jobs, "--top-module", "tile",
               *VERILATOR_FLAGS, "-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC",
               "-CFLAGS", f"-fPIC {CXX_FLAGS} -I{work}", "-LDFLAGS", "-shared -Wl,-Bsymbolic",
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
        for pch in (work / "obj").glob("*.gch"):      # precompiled headers: ~140 MB, not needed
            pch.unlink()
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
        # per-batch buffers are allocated once and passed as plain addresses (the ndpointer checks
        # and the event conversion cost more than a tenth of a lone batch's simulation otherwise)
        lib.tile_batch.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint32,
                                   ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p]
        lib.tile_evals_per_cycle.restype = ctypes.c_int
        #: Verilator evaluations per clock cycle of the batch loop (1, or 2 where the model's
        #: previous-clock member is not found: see rtl/harness/tile_harness.cpp)
        self.evals_per_cycle = int(lib.tile_evals_per_cycle())
        self._lib = lib
        self._h = ctypes.c_void_p(lib.tile_new())
        ts = spec
        self._x = np.zeros((ts.batch, ts.cols), np.int32)
        self._d = np.zeros((ts.batch, ts.rows), np.int32)
        self._ev = np.empty(ts.rows * ts.cols, EVENT_DTYPE)
        self._cyc = np.zeros(1, np.uint64)
        self._args = (self._x.ctypes.data, self._d.ctypes.data, self._ev.ctypes.data,
                      self._ev.size, self._cyc.ctypes.data)
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
        np.copyto(self._x, np.reshape(x, (ts.batch, ts.cols)), casting="unsafe")
        np.copyto(self._d, np.reshape(delta, (ts.batch, ts.rows)), casting="unsafe")
        xp, dp, evp, cap, cycp = self._args
        n = self._lib.tile_batch(self._h, xp, dp, int(m), evp, cap, cycp)
        if n < 0:
            raise RuntimeError(f"tile harness: batch failed ({n})")
        self.last_batch_cycles = int(self._cyc[0])
        return self._ev[:n].copy()
