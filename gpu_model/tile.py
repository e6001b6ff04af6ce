"""The analog tile: one weight matrix on PCM crossbars, built from one :class:`TileConfig`.

Stages (each a typed interface; docs/analog.md has the picture):

| stage | object | interface |
| --- | --- | --- |
| read | :class:`AnalogTile` (DAC -> noisy MVM -> ADC) | ``forward(x)``, ``backward(d)`` |
| digital unit | :func:`~gpu_model.digital_unit.make_digital_unit`: ``DigitalUnit`` (chi, verify feedback, DPU golden/RTL) or ``WholeUnitDigital`` (tile-golden/tile-rtl) | ``step(update) -> PulseList`` |
| device array | chosen by engine and backend (:mod:`gpu_model.engines`) | ``apply(PulseList) -> UpdateReport``, ``weights()``, ``read_variance()`` |
| events | :class:`TileEvents` (read, pulse, refresh and verify counts) | ``events`` |

Physical layout: a weight matrix W (out_features x in_features) is stored transposed on the
crossbar: inputs drive the rows (in_features), outputs are read on the columns (out_features). A
matrix larger than one tile (``max_rows`` x ``max_cols``) is split into a grid of tiles; the
forward pass sums the ADC outputs of the row tiles digitally, the backward pass those of the
column tiles.

Read noise without a noisy copy of W per vector: with independent Gaussian conductance noise of
variance V (weight units^2) per synapse, the output noise of one MVM is Gaussian with variance
(x^2) @ V^T — one extra matmul per batch gives it exactly in distribution.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from .backend import Backend, rng_state, set_rng_state
from .devices import FLOAT
from .digital_unit import TILE_DPU_KINDS, make_digital_unit
from .engines import make_device_array
from .presets import PresetError
from .pulses import UpdateReport
from .sampling import standard_normal
from .tile_config import SynapseConfig, TileConfig

READ_STREAM_OFFSET = 10_000     # backend child stream of a tile's crossbar read noise: 10,000 + stream
CHECKPOINT_LAYOUT = 2           # version of AnalogTile.state_dict's layout (1: the weight-store dict of
                                # the AnalogMatrix/AnalogWeights chain, before the tile)


@dataclass
class TileEvents:
    """Cumulative event counts of one tile (what the energy model reads)."""

    fwd_vectors: int = 0          # input vectors of forward MVMs
    bwd_vectors: int = 0          # error vectors of backward (transposed) MVMs
    cell_reads: int = 0           # device-pair reads: rows x cols x devices per side per vector
    dac_conversions: int = 0
    adc_conversions: int = 0
    set_pulses: int = 0           # training SET pulses
    refreshes: int = 0            # synapses refreshed
    refresh_resets: int = 0       # RESET pulses of refreshes
    refresh_prog_pulses: int = 0  # program-and-verify attempts of refreshes
    refresh_verify_reads: int = 0
    update_verify_reads: int = 0  # verified updates: reads of pulsed devices (+1 per refreshed synapse)
    init_prog_pulses: int = 0     # program-and-verify attempts of initial programming
    init_verify_reads: int = 0
    inc_saturated: int = 0        # updates clipped to the DPU's increment range
    # device faults (gpu_model/faults.py; all 0 without faults)
    faulty_devices: int = 0       # devices not responding now (stuck from fabrication, worn out, failed)
    worn_out_devices: int = 0     # of them: worn out at the endurance limit
    excluded_devices: int = 0     # found not responding by the digital unit and excluded (faults.exclude)
    skipped_pulses: int = 0       # pulses not sent: every device of that side of the synapse excluded
    fault_check_reads: int = 0    # check reads of the exclusion policy (after refreshes and programming)

    def as_dict(self) -> dict:
        return asdict(self)


READ_EVENTS = ("fwd_vectors", "bwd_vectors", "cell_reads", "dac_conversions", "adc_conversions")


class AnalogTile:
    """A weight matrix (out_features x in_features) on PCM crossbar tiles with DAC/ADC, its
    digital unit and its device array, all from one :class:`TileConfig`.

    ``stream``: the tile's random-stream number (reads: ``READ_STREAM_OFFSET + stream``; devices
    and verify reads: see :mod:`gpu_model.engines`). ``w0``: initial weights, programmed at once.
    """

    def __init__(self, config: TileConfig, out_features: int, in_features: int, backend: Backend, *,
                 stream: int = 0, t: float = 0.0, w0=None):
        if not isinstance(config, TileConfig):
            raise TypeError(f"AnalogTile needs a TileConfig, got {type(config).__name__}")
        if out_features < 1 or in_features < 1:
            raise ValueError(f"matrix shape must be positive, got {out_features}x{in_features}")
        self.config = config
        self.out_features, self.in_features = int(out_features), int(in_features)
        self.shape = (self.out_features, self.in_features)
        self.tile = config.converters
        self.be = backend
        self.xp = backend.xp
        self.stream = int(stream)
        self.rng = backend.child_rng(READ_STREAM_OFFSET + stream)
        # a preset without read noise (ideal devices) draws nothing, whatever the caller asks
        self.read_noise = config.read_noise
        if config.dpu_kind in TILE_DPU_KINDS and backend.name != "numpy":
            raise PresetError(f"tile: dpu_kind {config.dpu_kind!r} (the whole unit, WholeUnitDigital) runs on "
                              f"the NumPy backend only (its units hold chi and draw their rounding bits on "
                              f"the host); use the numpy backend (mcasim train --backend numpy), got "
                              f"{backend.name!r}")
        self.devices = make_device_array(config, self.shape, backend, stream, t)
        # DigitalUnit (golden | rtl) or the whole unit WholeUnitDigital (tile-golden | tile-rtl)
        self.digital = make_digital_unit(self.shape, config, backend, self.devices.epsilon_w, stream)
        self.updates = 0              # update steps so far (keys the fused engine's draws)
        # tile grid: row blocks over in_features (crossbar rows), column blocks over out_features
        tp = self.tile
        self.row_blocks = [(s, min(s + tp.max_rows, in_features)) for s in range(0, in_features, tp.max_rows)]
        self.col_blocks = [(s, min(s + tp.max_cols, out_features)) for s in range(0, out_features, tp.max_cols)]
        self._reads = {k: 0 for k in READ_EVENTS}
        # the fused engine reads through the compiled crossbar read (gpu_model/kernels/crossbar_read.py):
        # the same float32 operations and the tile's own normals, so the same outputs bit for bit
        self._fused_read = None
        if config.engine == "fused" and backend.name == "numpy":
            from .kernels.crossbar_read import ReadWork, tile_read
            self._fused_read, self._read_work = tile_read, ReadWork()
        self.count_events = True   # False: MVMs that are not training work (evaluation) go uncounted
        # engines whose tile states load_state_dict converts to this tile's engine (gpu_model/convert.py;
        # opt-in: a state of another engine is otherwise refused)
        self.convert_from: tuple = ()
        if w0 is not None:
            self.program(w0)

    @property
    def n_tiles(self) -> int:
        return len(self.row_blocks) * len(self.col_blocks)

    @property
    def w_max(self) -> float:
        return self.devices.w_max

    @property
    def epsilon_w(self) -> float:
        """Weight units per pulse (beta * epsilon_uS)."""
        return self.devices.epsilon_w

    @property
    def events(self) -> TileEvents:
        """The tile's cumulative event counts (reads, pulses, refreshes, verify reads)."""
        c = self.devices.counters
        return TileEvents(**self._reads, set_pulses=c.set_pulses, refreshes=c.refreshes,
                          refresh_resets=c.refresh_resets, refresh_prog_pulses=c.refresh_prog_pulses,
                          refresh_verify_reads=c.refresh_verify_reads,
                          update_verify_reads=c.update_verify_reads, init_prog_pulses=c.init_prog_pulses,
                          init_verify_reads=c.init_verify_reads, inc_saturated=self.digital.inc_saturated,
                          **self._fault_events())

    def _fault_events(self) -> dict:
        """The device-fault fields of :class:`TileEvents` (engines without faults: none, all 0)."""
        counts = getattr(self.devices, "fault_counts", None)
        if counts is None or getattr(self.devices, "faults", None) is None:
            return {}
        f, c = counts(), self.devices.counters
        return {"faulty_devices": f["stuck"], "worn_out_devices": f["worn_out"],
                "excluded_devices": c.excluded_devices, "skipped_pulses": c.skipped_pulses,
                "fault_check_reads": c.fault_check_reads}

    # --- converters -----------------------------------------------------------------------------
    def _dac(self, x):
        """Scale each vector (row of x) to [-1, 1] and quantise; returns (x_n, scale (B,1))."""
        xp, tp = self.xp, self.tile
        if tp.dac_scaling == "max":
            xn = xp.abs(x)                           # fresh array: reused below for x / s
            s = xn.max(axis=1, keepdims=True)
            s[s == 0] = 1.0                          # an all-zero vector: any scale reads zero
            xp.divide(x, s, out=xn)                  # |x| <= s, so |x/s| <= 1 exactly: no clip needed
        else:
            s = xp.full((x.shape[0], 1), tp.dac_fixed_scale, dtype=FLOAT)
            xn = x / s                               # fresh array: the steps below work in place
            xp.clip(xn, -1.0, 1.0, out=xn)           # clip to [-1, 1]
        if tp.quantize:
            half = (tp.dac_levels - 1) // 2          # 2^b - 1 levels: integers -half..half
            xn *= half
            xp.rint(xn, out=xn)
            xn /= half
        return xn.astype(FLOAT, copy=False), s

    def _adc(self, yn, backward: bool = False):
        """Clip normalised outputs to [-range, range] and quantise (2^b - 1 levels).

        range: ``adc_range`` forward, ``backward_range`` for the transposed pass."""
        xp, tp = self.xp, self.tile
        if not tp.quantize:
            return yn
        r = tp.backward_range if backward else tp.adc_range
        half = (tp.adc_levels - 1) // 2
        xp.clip(yn, -r, r, out=yn)                   # clip to [-r, r], in place (yn is the MVM's own array;
                                                     # one pass: ~2x cheaper than maximum + minimum on NumPy)
        yn *= half / r
        xp.rint(yn, out=yn)
        yn *= r / half
        return yn

    def _mvm(self, x, w, var, transpose: bool):
        """One tile's analog MVM in normalised units, with read noise, before the ADC."""
        xp = self.xp
        xn, s = self._dac(x)
        y = xn @ (w if transpose else w.T)
        if self.read_noise:
            xp.multiply(xn, xn, out=xn)              # x^2 in place (xn is the DAC's own array)
            v = xn @ (var if transpose else var.T)   # output variance (x^2) @ V^T
            xp.sqrt(v, out=v)
            v *= standard_normal(xp, self.rng, y.shape, FLOAT, self.tile.noise_sampler)
            y += v
        wm = self.devices.w_max
        y /= wm
        out = self._adc(y, backward=transpose)
        out *= wm * s
        return out

    @staticmethod
    def _check(x, n: int, what: str):
        if x.ndim != 2 or x.shape[1] != n:
            raise ValueError(f"{what} must have shape (batch, {n}), got {tuple(x.shape)}")

    def _count(self, direction: str, b: int, dac_per_vector: int, adc_per_vector: int):
        """Event counts of ``b`` vectors through the whole matrix (every cell read once each)."""
        if not self.count_events:
            return
        ev = self._reads
        ev[direction] += b
        ev["cell_reads"] += b * self.out_features * self.in_features * self.devices.n_dev   # device pairs read
        ev["dac_conversions"] += b * dac_per_vector
        ev["adc_conversions"] += b * adc_per_vector

    # --- public MVMs ----------------------------------------------------------------------------
    def forward(self, x):
        """y = W x for a batch ``x`` of shape (B, in_features); returns (B, out_features)."""
        self._check(x, self.in_features, "forward input")
        if self._fused_read is not None:
            out = self._fused_read(self, x, False, work=self._read_work)
            self._count("fwd_vectors", x.shape[0], self.in_features, self.out_features * len(self.row_blocks))
            return out
        w, var = self.devices.weights(), self.devices.read_variance()
        out = None
        for r0, r1 in self.row_blocks:
            part = self._mvm(x[:, r0:r1], w[:, r0:r1], var[:, r0:r1], transpose=False)
            out = part if out is None else out + part
        self._count("fwd_vectors", x.shape[0], self.in_features, self.out_features * len(self.row_blocks))
        return out

    def backward(self, d):
        """z = W^T d for a batch ``d`` of shape (B, out_features); returns (B, in_features)."""
        self._check(d, self.out_features, "backward input")
        if self._fused_read is not None:
            out = self._fused_read(self, d, True, work=self._read_work)
            self._count("bwd_vectors", d.shape[0], self.out_features, self.in_features * len(self.col_blocks))
            return out
        w, var = self.devices.weights(), self.devices.read_variance()
        out = None
        for c0, c1 in self.col_blocks:
            part = self._mvm(d[:, c0:c1], w[c0:c1, :], var[c0:c1, :], transpose=True)
            out = part if out is None else out + part
        self._count("bwd_vectors", d.shape[0], self.out_features, self.in_features * len(self.col_blocks))
        return out

    def explicit_forward(self, x):
        """Reference: y from one explicit noisy read of W per input vector (slow; for tests)."""
        self._check(x, self.in_features, "explicit_forward input")
        xp = self.xp
        rows = []
        for i in range(x.shape[0]):
            w_read = self.devices.read_weights(self.updates)
            out = None
            for r0, r1 in self.row_blocks:
                xn, s = self._dac(x[i:i + 1, r0:r1])
                y = xn @ w_read[:, r0:r1].T
                part = self._adc(y / self.devices.w_max) * (self.devices.w_max * s)
                out = part if out is None else out + part
            rows.append(out)
        return xp.concatenate(rows, axis=0)

    # --- update: digital unit -> pulse list -> devices ------------------------------------------
    def program(self, w_target, tolerance_uS: float | None = None) -> None:
        """Initial programming of weights ``w_target`` (out x in, weight units) onto the devices."""
        self.devices.program(self.xp.asarray(w_target, dtype=FLOAT), tolerance_uS)

    def update(self, delta_w, rand_rng=None, cols=None) -> UpdateReport:
        """One mini-batch update: delta_w (weight units) -> chi -> pulses -> devices.

        ``rand_rng``: the trainer's generator for stochastic-rounding bits (reference engine;
        the fused engine keys them by the update step). ``cols``: optional column subset that
        ``delta_w`` covers (the others get a zero update).
        """
        s = self.config.synapse
        pulses = self.digital.step(delta_w, rand_rng, cols, step=self.updates)
        report = self.devices.apply(pulses, step=self.updates, verify=s.verified_update,
                                    verify_read_noise=self.read_noise)
        self.digital.absorb(report)
        self.updates += 1
        return report

    def weights(self):
        """Noise-free weights (weight units, out x in) at the current time (drift included)."""
        return self.devices.weights()

    def conductances(self):
        """(G+, G-) drifted conductances (µS), each (devices_per_side, out, in)."""
        return self.devices.conductances()

    @property
    def t(self) -> float:
        """The tile's clock (s): time since the devices' fabrication state."""
        return self.devices.t

    def advance(self, dt: float) -> None:
        self.devices.advance(dt)

    def set_time(self, t: float) -> None:
        self.devices.set_time(t)

    # --- state for checkpoints ------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"layout": CHECKPOINT_LAYOUT, "engine": self.config.engine, "updates": self.updates,
                "reads": dict(self._reads), "read_rng": rng_state(self.rng),
                "digital": self.digital.state_dict(), "devices": self.devices.state_dict()}

    def load_state_dict(self, st: dict) -> None:
        if st.get("layout") != CHECKPOINT_LAYOUT:
            raise ValueError(f"tile state of layout {st.get('layout', 1)}; this mcasim reads layout "
                             f"{CHECKPOINT_LAYOUT} (re-make the run from its command)")
        if st["engine"] != self.config.engine and st["engine"] in self.convert_from:
            from .convert import convert_tile_state
            st = convert_tile_state(st, self)
        if st["engine"] != self.config.engine:
            raise ValueError(f"tile state was made by engine {st['engine']!r}, this tile runs "
                             f"{self.config.engine!r} (set tile.engine = {st['engine']!r} to resume it)")
        self.updates = int(st["updates"])
        self._reads.update(st["reads"])
        set_rng_state(self.rng, st["read_rng"])
        self.digital.load_state_dict(st["digital"])
        self.devices.load_state_dict(st["devices"])


def AnalogMatrix(out_features: int, in_features: int, preset, tile, backend: Backend, *, w_max: float,  # noqa: N802
                 stream: int = 0, t: float = 0.0, engine: str = "reference", **synapse) -> AnalogTile:
    """An :class:`AnalogTile` from the pieces of its config (tests and benchmarks): ``preset`` the
    device model, ``tile`` the converters, ``synapse`` the :class:`SynapseConfig` fields."""
    cfg = TileConfig(device=preset, synapse=SynapseConfig(w_max=w_max, **synapse), converters=tile,
                     engine=engine)
    return AnalogTile(cfg, out_features, in_features, backend, stream=stream, t=t)
