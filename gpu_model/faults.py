"""Device faults and endurance on the reference engine: stuck, weak and worn-out PCM devices.

A :class:`FaultConfig` (frozen, composed into :class:`~gpu_model.tile_config.TileConfig` as
``faults``) says which devices of a tile misbehave and how; its default ("none") is no fault at
all, and a tile with it runs exactly the code and random draws it ran before faults existed.

Fault kinds (docs/faults.md has the sources and the study):

* **stuck low** (RESET-stuck / open): the device reads ``stuck_low_uS`` (the preset's g_min unless
  given) whatever is done to it; SET pulses, RESETs and programming have no effect on it.
* **stuck high** (SET-stuck): the same at ``stuck_high_uS`` (the preset's g_max unless given).
* **weak**: every SET step of the device is ``weak_factor`` times the model's step (programming by
  program-and-verify still reaches its target: the verify loop compensates).

Placement: at construction, each device of the tile (both sides, every device of a multi-device
synapse) draws one uniform number from the tile's own fault stream (``FAULT_STREAM_OFFSET +
stream``, a host NumPy generator: the same placement on NumPy and CuPy); the classes are disjoint
(u < stuck_low_rate: stuck low; next stuck_high_rate: stuck high; next weak_rate: weak). No other
stream is touched: the devices' SET/RESET/read draws happen as without faults, a stuck device's
result is then overwritten by its stuck value ("apply, then pin").

During training faults appear in two ways, both decided at construction, so nothing is drawn while
training and a resumed run sees the same faults:

* **random onset**, ``onset_per_pulse``: each pulse (SET or RESET) a working device receives makes
  it fail with this probability (engineering choice of unit: per pulse, so that wear follows use;
  drawn once as a geometric lifetime in pulses per device), into ``onset_state``;
* **endurance**, ``endurance_cycles``: a device whose cycle count reaches the limit wears out into
  ``wearout_state``. A cycle is one RESET (``endurance_counts = "reset"``: every full SET/RESET
  cycle ends in one; partial SET pulses are far gentler than the melt-quench of a RESET) or every
  pulse (``"all"``: SET + RESET, the conservative reading).

Per-device SET and RESET counters are the device arrays' own ``n_set`` / ``n_reset`` (int64, one
vectorised ``+=`` per programming call). :func:`endurance_report` reads them: the most-cycled
devices, a histogram, and the projected number of epochs until the first device wears out.

Exclusion policy (``exclude``, gpu_model/synapse.py): the digital unit finds devices that do not
respond and stops using them: a check read of every device of a refreshed (or initially
programmed) synapse further than ``detect_tol_uS`` from what it was written to, or, in a verified
update, a pulsed device read above the refresh cap + ``detect_tol_uS`` before its pulses (a device
the last refresh could not RESET). An excluded device gets no pulses (the synapse's arbiter skips
it), no RESET and no programming, is no refresh trigger, and refresh writes the weight on the
synapse's working devices around the excluded devices' conductance. Counted in the events.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import numpy as np

from .presets import PresetError

FAULT_STREAM_OFFSET = 40_000        # host generator of a tile's fault placement: SeedSequence([seed, 40,000 + stream])
FAULT_READ_STREAM_OFFSET = 50_000   # backend child stream of the exclusion policy's check reads: 50,000 + stream
FAULT_STATES = ("low", "high")      # what a failing device becomes: stuck low (open) or stuck high (SET-stuck)
ENDURANCE_COUNTS = ("reset", "all") # what one endurance cycle is (module docstring)

# codes of DeviceFaults.kind
OK, STUCK_LOW, STUCK_HIGH = 0, 1, 2

# --- sources of the typical figures (docs/faults.md) ---------------------------------------------
PCM_ENDURANCE_CYCLES = 1e9
"""PCM endurance, cycles: "good endurance performance at 10^9 cycles" (J. Nanomaterials 2013,
article 195325, Table 4, "Key advantages of PCM"); the range quoted for PCM is 1e6-1e9 and more."""
PCM_ENDURANCE_LOW_CYCLES = 1e6
"""The low end of the PCM endurance range (engineering choice of a pessimistic figure, 1e6 cycles)."""
DETECT_TOL_US = 4.0
"""µS: a check read further than this from its target marks a device that does not respond.
Engineering choice: 0.3 µS verify tolerance + 5 sigma of the difference of two JAP-2018 reads at
the 9 µS refresh cap (sigma_read = 0.03 * 9 + 0.13 = 0.40 µS each, 0.57 µS for the difference) =
3.15 µS, rounded up; a stuck-high device (20 µS) is always far outside it."""


@dataclass(frozen=True)
class FaultConfig:
    """Which devices of a tile are faulty, how they fail during training, and what the digital unit
    does about it. All rates are fractions of the tile's devices (both sides, all devices per side)."""

    name: str = "none"                  # preset name (FAULT_PRESETS); "custom" after overrides is fine
    stuck_low_rate: float = 0.0         # fraction in [0, 1]: stuck at low conductance (RESET-stuck / open)
                                        # from fabrication; typical values: FAULT_PRESETS, docs/faults.md
    stuck_high_rate: float = 0.0        # fraction in [0, 1]: stuck at high conductance (SET-stuck) from fabrication
    weak_rate: float = 0.0              # fraction in [0, 1]: weak devices (SET steps x weak_factor)
    weak_factor: float = 0.5            # SET-step multiplier of a weak device, in [0, 1] (engineering choice)
    onset_per_pulse: float = 0.0        # probability in [0, 1) per pulse (SET or RESET) that a working device
                                        # fails during training (engineering choice of unit, module docstring)
    onset_state: str = "low"            # low | high: what a device failing by onset becomes
    endurance_cycles: float = 0.0       # cycles (>= 1) after which a device wears out; 0: unlimited.
                                        # PCM: 1e6-1e9 (PCM_ENDURANCE_CYCLES)
    endurance_counts: str = "reset"     # reset | all: what one endurance cycle is (module docstring)
    wearout_state: str = "high"         # low | high: what a worn-out device becomes (PCM's endurance failure
                                        # modes are stuck-SET and open: IBM, VLSI-TSA 2012; high is the
                                        # harmful one for a differential pair: engineering choice)
    stuck_low_uS: float | None = None   # µS, conductance of a stuck-low device; None: the device's g_min
    stuck_high_uS: float | None = None  # µS, conductance of a stuck-high device; None: the device's g_max
    exclude: bool = False               # the exclusion policy (module docstring)
    detect_tol_uS: float = DETECT_TOL_US  # µS (> 0): check-read distance that marks a device as not responding

    def __post_init__(self):
        def need(cond, msg):
            if not cond:
                raise PresetError(f"faults: {msg}")

        def number(v):
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

        need(isinstance(self.name, str), f"name must be a string, got {self.name!r}")
        for k in ("stuck_low_rate", "stuck_high_rate", "weak_rate", "weak_factor"):
            v = getattr(self, k)
            need(number(v) and 0 <= v <= 1, f"{k} must be a number in [0, 1], got {v!r}")
        need(self.stuck_low_rate + self.stuck_high_rate + self.weak_rate <= 1,
             f"stuck_low_rate + stuck_high_rate + weak_rate must be <= 1 (disjoint classes), got "
             f"{self.stuck_low_rate + self.stuck_high_rate + self.weak_rate:g}")
        need(number(self.onset_per_pulse) and 0 <= self.onset_per_pulse < 1,
             f"onset_per_pulse must be a number in [0, 1), got {self.onset_per_pulse!r}")
        need(self.onset_state in FAULT_STATES, f"onset_state must be one of {', '.join(FAULT_STATES)}, got {self.onset_state!r}")
        need(self.wearout_state in FAULT_STATES, f"wearout_state must be one of {', '.join(FAULT_STATES)}, got {self.wearout_state!r}")
        need(number(self.endurance_cycles) and (self.endurance_cycles == 0 or self.endurance_cycles >= 1),
             f"endurance_cycles must be 0 (unlimited) or a number >= 1 cycle, got {self.endurance_cycles!r}")
        need(self.endurance_counts in ENDURANCE_COUNTS,
             f"endurance_counts must be one of {', '.join(ENDURANCE_COUNTS)}, got {self.endurance_counts!r}")
        for k in ("stuck_low_uS", "stuck_high_uS"):
            v = getattr(self, k)
            need(v is None or (number(v) and v >= 0), f"{k} must be a number >= 0 µS (or unset: the device's range), got {v!r}")
        need(isinstance(self.exclude, bool), f"exclude must be true or false, got {self.exclude!r}")
        need(number(self.detect_tol_uS) and self.detect_tol_uS > 0, f"detect_tol_uS must be a number > 0 µS, got {self.detect_tol_uS!r}")

    @property
    def enabled(self) -> bool:
        """True when anything here changes what a tile does (a fault, a limit or the policy)."""
        return bool(self.stuck_low_rate or self.stuck_high_rate or self.weak_rate or self.onset_per_pulse
                    or self.endurance_cycles or self.exclude)

    def with_overrides(self, **kw) -> "FaultConfig":
        unknown = set(kw) - {f.name for f in fields(self)}
        if unknown:
            raise PresetError(f"unknown faults field(s): {', '.join(sorted(unknown))}")
        return replace(self, **kw)


NO_FAULTS = FaultConfig()
# Typical figures. No published per-device yield of the JAP-2018 / Joshi-2020 PCM arrays is known to
# us: the fabrication rates below are engineering choices (1 % of devices in all, split between the
# kinds); RRAM test chips are reported with ~10 % faulty devices (MDPI Electronics 10, 2427 (2021),
# its ref. 21), the upper end of the study's 0-10 % sweep.
PCM_TYPICAL = FaultConfig(
    name="pcm_typical",
    stuck_low_rate=0.004,               # engineering choice (see above)
    stuck_high_rate=0.004,              # engineering choice
    weak_rate=0.002,                    # engineering choice
    weak_factor=0.5,                    # engineering choice
    endurance_cycles=PCM_ENDURANCE_CYCLES,  # J. Nanomaterials 2013, 195325, Table 4
    wearout_state="high",               # stuck-SET: IBM, VLSI-TSA 2012 (the other mode: open)
)
PCM_LOW_ENDURANCE = replace(PCM_TYPICAL, name="pcm_low_endurance", endurance_cycles=PCM_ENDURANCE_LOW_CYCLES)
FAULT_PRESETS: dict[str, FaultConfig] = {p.name: p for p in (NO_FAULTS, PCM_TYPICAL, PCM_LOW_ENDURANCE)}


def get_fault_preset(name: str) -> FaultConfig:
    try:
        return FAULT_PRESETS[name]
    except KeyError:
        raise PresetError(f"faults: unknown preset {name!r}; known: {', '.join(FAULT_PRESETS)}") from None


def stuck_levels(cfg: FaultConfig, preset) -> tuple[float, float]:
    """(low, high) µS of stuck devices for device model ``preset`` (None fields: its g_min / g_max)."""
    lo = preset.g_min if cfg.stuck_low_uS is None else float(cfg.stuck_low_uS)
    hi = preset.g_max if cfg.stuck_high_uS is None else float(cfg.stuck_high_uS)
    return lo, hi


class DeviceFaults:
    """The fault state of one :class:`~gpu_model.devices.PCMArray` (backend arrays, flat like it).

    ``kind`` (int8: OK, STUCK_LOW, STUCK_HIGH), ``pin`` (float32 µS, the stuck value where kind != OK),
    ``set_scale`` (float32 SET-step multiplier; None without weak devices), ``life`` (int64 pulses
    until random onset; None without onset), ``excluded`` (bool, the exclusion policy's marks).
    Counts: ``n_stuck`` (devices not responding now), ``n_worn`` (by endurance), ``n_onset``.
    """

    STATE_FIELDS = ("kind", "pin", "set_scale", "life", "excluded")

    def __init__(self, cfg: FaultConfig, preset, xp, size: int, u, life):
        self.cfg, self.xp = cfg, xp
        lo, hi = stuck_levels(cfg, preset)
        self.levels = {"low": (STUCK_LOW, lo), "high": (STUCK_HIGH, hi)}
        a, b, c = cfg.stuck_low_rate, cfg.stuck_low_rate + cfg.stuck_high_rate, \
            cfg.stuck_low_rate + cfg.stuck_high_rate + cfg.weak_rate
        kind = np.where(u < a, STUCK_LOW, np.where(u < b, STUCK_HIGH, OK)).astype(np.int8)
        pin = np.where(kind == STUCK_LOW, lo, np.where(kind == STUCK_HIGH, hi, 0.0)).astype(np.float32)
        self.kind, self.pin = xp.asarray(kind), xp.asarray(pin)
        self.set_scale = None
        if cfg.weak_rate > 0:
            weak = (u >= b) & (u < c)
            self.set_scale = xp.asarray(np.where(weak, cfg.weak_factor, 1.0).astype(np.float32))
        self.life = xp.asarray(life) if life is not None else None
        self.excluded = xp.zeros(size, dtype=bool)
        self.n_stuck = int((kind != OK).sum())
        self.n_worn = 0
        self.n_onset = 0
        self.endurance = float(cfg.endurance_cycles)

    def pin_all(self, arr) -> None:
        """Put every stuck device of ``arr`` at its stuck value (no drift: nu = 0)."""
        xp = self.xp
        dead = xp.flatnonzero(self.kind != OK)
        if dead.shape[0]:
            arr.g_prog[dead] = self.pin[dead]
            arr.nu[dead] = 0.0

    def after_write(self, arr, idx) -> None:
        """After devices ``idx`` of ``arr`` were pulsed, RESET or programmed: wear-out and random
        onset of the written devices (their counters against their limits), then pin the stuck
        ones back to their stuck values. Vectorised over ``idx``."""
        xp, cfg = self.xp, self.cfg
        if idx is None or idx.shape[0] == 0:
            return
        kind = self.kind[idx]
        if self.endurance or self.life is not None:
            ok = kind == OK
            if self.endurance:
                cycles = arr.n_reset[idx] if cfg.endurance_counts == "reset" else arr.n_reset[idx] + arr.n_set[idx]
                worn = ok & (cycles >= self.endurance)
                self._fail(idx, worn, cfg.wearout_state)
                self.n_worn += int(worn.sum())
                ok &= ~worn
            if self.life is not None:
                onset = ok & (arr.n_reset[idx] + arr.n_set[idx] >= self.life[idx])
                self._fail(idx, onset, cfg.onset_state)
                self.n_onset += int(onset.sum())
            kind = self.kind[idx]
        dead = kind != OK
        if bool(dead.any()):
            d = idx[dead]
            arr.g_prog[d] = self.pin[d]
            arr.nu[d] = 0.0

    def _fail(self, idx, mask, state: str) -> None:
        n = int(mask.sum())
        if not n:
            return
        code, g = self.levels[state]
        d = idx[mask]
        self.kind[d] = code
        self.pin[d] = g
        self.n_stuck += n

    # --- checkpoints --------------------------------------------------------------------------
    def state_dict(self, be) -> dict:
        out = {f: be.asnumpy(getattr(self, f)) for f in self.STATE_FIELDS if getattr(self, f) is not None}
        out["counts"] = np.array([self.n_stuck, self.n_worn, self.n_onset], dtype=np.int64)
        return out

    def load_state_dict(self, st: dict, prefix: str) -> None:
        xp = self.xp
        for f in self.STATE_FIELDS:
            if getattr(self, f) is not None and f"{prefix}{f}" in st:
                getattr(self, f)[...] = xp.asarray(st[f"{prefix}{f}"])
        if f"{prefix}counts" in st:
            self.n_stuck, self.n_worn, self.n_onset = (int(v) for v in np.asarray(st[f"{prefix}counts"]))


def place_faults(cfg: FaultConfig, preset, backend, stream: int, arrays) -> list[DeviceFaults]:
    """One :class:`DeviceFaults` per device array of ``arrays`` (a tile's G+ then G- arrays), placed
    from the tile's own host generator (``FAULT_STREAM_OFFSET + stream``; module docstring)."""
    rng = np.random.default_rng(np.random.SeedSequence([int(backend.seed), FAULT_STREAM_OFFSET + int(stream)]))
    out = []
    for arr in arrays:
        u = rng.random(arr.size)
        life = rng.geometric(cfg.onset_per_pulse, arr.size).astype(np.int64) if cfg.onset_per_pulse > 0 else None
        f = DeviceFaults(cfg, preset, backend.xp, arr.size, u, life)
        arr.faults = f
        f.pin_all(arr)
        out.append(f)
    return out


# --- endurance: what the counters say ------------------------------------------------------------
def cycle_counts(devices, counts: str = "reset"):
    """Per-device endurance cycles of a device array (DifferentialSynapses): host int64 array of
    shape (2, devices_per_side, rows, cols), side 0 = G+, 1 = G-. ``counts``: "reset" (RESET
    pulses) or "all" (SET + RESET pulses), as :attr:`FaultConfig.endurance_counts`."""
    if counts not in ENDURANCE_COUNTS:
        raise ValueError(f"counts must be one of {', '.join(ENDURANCE_COUNTS)}, got {counts!r}")
    n_set, n_reset = devices.device_counts()
    be = devices.be
    c = be.asnumpy(n_reset) if counts == "reset" else be.asnumpy(n_reset) + be.asnumpy(n_set)
    return np.asarray(c, dtype=np.int64)


def endurance_report(layers, epochs: float, limit: float = PCM_ENDURANCE_CYCLES, counts: str = "reset",
                     top: int = 10, bins: int = 20) -> dict:
    """Endurance of a trained network's tiles, from the devices' own counters.

    ``layers``: ``{name: device array}`` (a tile's ``.devices``); ``epochs``: epochs trained so far
    (> 0); ``limit``: endurance in cycles. Returns a JSON-ready dict: per layer and overall the
    most-cycled devices (layer, side +/-, device k, row, col, cycles), a histogram of cycles per
    device (log-spaced bin edges from 1 to the largest count; the zero count separately), the mean
    cycles per device per epoch, and ``epochs_to_first_wearout`` = (limit - max cycles) / (max
    cycles per epoch), the projection for the most-cycled device at its own rate so far (inf
    where no device has cycled)."""
    if not epochs > 0:
        raise ValueError(f"epochs must be > 0, got {epochs}")
    out = {"limit_cycles": float(limit), "counts": counts, "epochs": float(epochs), "layers": {}}
    rows = []
    allc = []
    for name, dev in layers.items():
        c = cycle_counts(dev, counts)
        flat = c.reshape(-1)
        allc.append(flat)
        k = min(top, flat.size)
        best = np.argpartition(-flat, k - 1)[:k] if k else np.array([], dtype=np.int64)
        best = best[np.argsort(-flat[best], kind="stable")]
        side, d, r, col = np.unravel_index(best, c.shape)
        mx = int(flat.max()) if flat.size else 0
        per_epoch = mx / epochs
        lay = {"devices": int(flat.size), "max_cycles": mx, "mean_cycles": float(flat.mean()) if flat.size else 0.0,
               "epochs_to_first_wearout": (max(limit - mx, 0.0) / per_epoch) if per_epoch > 0 else math.inf,
               "top": [{"layer": name, "side": "+" if s == 0 else "-", "device": int(dd), "row": int(rr),
                        "col": int(cc), "cycles": int(flat[b])} for s, dd, rr, cc, b in zip(side, d, r, col, best)]}
        out["layers"][name] = lay
        rows += lay["top"]
    every = np.concatenate(allc) if allc else np.zeros(0, dtype=np.int64)
    mx = int(every.max()) if every.size else 0
    edges = np.unique(np.round(np.logspace(0, math.log10(max(mx, 1)) + 1e-9, bins + 1))).astype(np.int64)
    edges[-1] = max(edges[-1], mx) + 1
    hist, _ = np.histogram(every[every > 0], bins=edges)
    per_epoch = mx / epochs
    out.update(max_cycles=mx, zero_cycle_devices=int((every == 0).sum()), devices=int(every.size),
               histogram={"edges": edges.tolist(), "counts": hist.tolist()},
               top=sorted(rows, key=lambda x: -x["cycles"])[:top],
               epochs_to_first_wearout=(max(limit - mx, 0.0) / per_epoch) if per_epoch > 0 else math.inf)
    return out


def plot_endurance_histogram(report: dict, path) -> None:
    """The histogram of :func:`endurance_report` as a PNG (log-log), the limit marked."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    h = report["histogram"]
    edges, counts = np.asarray(h["edges"]), np.asarray(h["counts"])
    fig, ax = plt.subplots(figsize=(5, 3.2))
    if counts.size:
        ax.stairs(counts, edges, fill=True)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(f"cycles per device ({report['counts']})")
    ax.set_ylabel("devices")
    ax.set_title(f"max {report['max_cycles']} after {report['epochs']:g} epochs; "
                 f"first wear-out in ~{report['epochs_to_first_wearout']:.3g} epochs", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
