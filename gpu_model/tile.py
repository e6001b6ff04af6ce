"""Crossbar tiles: forward y = W x and backward z = W^T d from noisy conductance reads.

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

from .backend import Backend
from .devices import FLOAT
from .presets import PCMPreset, TilePreset
from .sampling import standard_normal
from .synapse import DifferentialSynapses


class AnalogMatrix:
    """A weight matrix (out_features x in_features) on PCM crossbar tiles with DAC/ADC."""

    def __init__(self, out_features: int, in_features: int, preset: PCMPreset, tile: TilePreset,
                 backend: Backend, *, w_max: float, epsilon_uS: float | None = None,
                 refresh_threshold: float = 0.9, refresh_tolerance_uS: float | None = None,
                 read_noise: bool = True, common_mode_uS: float = 0.0, devices_per_side: int = 1,
                 stream: int = 0, t: float = 0.0):
        if out_features < 1 or in_features < 1:
            raise ValueError(f"matrix shape must be positive, got {out_features}x{in_features}")
        self.out_features, self.in_features = int(out_features), int(in_features)
        self.tile = tile
        self.be = backend
        self.xp = backend.xp
        self.rng = backend.child_rng(10_000 + stream)
        # a preset without read noise (ideal devices) draws nothing, whatever the caller asks
        self.read_noise = bool(read_noise) and preset.read_noise_model != "none"
        self.syn = DifferentialSynapses((out_features, in_features), preset, backend, w_max=w_max,
                                        epsilon_uS=epsilon_uS, refresh_threshold=refresh_threshold,
                                        refresh_tolerance_uS=refresh_tolerance_uS,
                                        common_mode_uS=common_mode_uS, devices_per_side=devices_per_side,
                                        stream=stream, t=t)
        # tile grid: row blocks over in_features (crossbar rows), column blocks over out_features
        self.row_blocks = [(s, min(s + tile.max_rows, in_features)) for s in range(0, in_features, tile.max_rows)]
        self.col_blocks = [(s, min(s + tile.max_cols, out_features)) for s in range(0, out_features, tile.max_cols)]
        self.events = {"fwd_vectors": 0, "bwd_vectors": 0, "cell_reads": 0,
                       "dac_conversions": 0, "adc_conversions": 0}
        self.count_events = True   # False: MVMs that are not training work (evaluation) go uncounted

    @property
    def n_tiles(self) -> int:
        return len(self.row_blocks) * len(self.col_blocks)

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
        wm = self.syn.w_max
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
        ev = self.events
        ev[direction] += b
        ev["cell_reads"] += b * self.out_features * self.in_features * self.syn.n_dev   # device pairs read
        ev["dac_conversions"] += b * dac_per_vector
        ev["adc_conversions"] += b * adc_per_vector

    # --- public MVMs ----------------------------------------------------------------------------
    def forward(self, x):
        """y = W x for a batch ``x`` of shape (B, in_features); returns (B, out_features)."""
        self._check(x, self.in_features, "forward input")
        w, var = self.syn.weights(), self.syn.read_variance()
        out = None
        for r0, r1 in self.row_blocks:
            part = self._mvm(x[:, r0:r1], w[:, r0:r1], var[:, r0:r1], transpose=False)
            out = part if out is None else out + part
        self._count("fwd_vectors", x.shape[0], self.in_features, self.out_features * len(self.row_blocks))
        return out

    def backward(self, d):
        """z = W^T d for a batch ``d`` of shape (B, out_features); returns (B, in_features)."""
        self._check(d, self.out_features, "backward input")
        w, var = self.syn.weights(), self.syn.read_variance()
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
            w_read = self.syn.read_weights()
            out = None
            for r0, r1 in self.row_blocks:
                xn, s = self._dac(x[i:i + 1, r0:r1])
                y = xn @ w_read[:, r0:r1].T
                part = self._adc(y / self.syn.w_max) * (self.syn.w_max * s)
                out = part if out is None else out + part
            rows.append(out)
        return xp.concatenate(rows, axis=0)
