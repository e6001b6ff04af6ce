"""Weight stores: one interface for floating-point and crossbar weights.

A layer needs three things from its weight matrix W (out x in): ``forward(x) = x W^T``,
``backward(d) = d W`` and ``apply_update(delta_w)``. :class:`FP32Weights` does them in digital
floating point (the software baseline); :class:`AnalogWeights` hands all three to one analog tile
(:class:`gpu_model.tile.AnalogTile`): MVMs on PCM crossbars, and the update through the digital
unit: delta_w (weight units) -> increments in units of epsilon -> chi accumulator -> pulse list ->
SET pulses on the devices. Dense, convolution
(im2col) and recurrent layers use the same store: they only call these three methods on 2-D batches.
"""
from __future__ import annotations

from gpu_model.backend import Backend
from gpu_model.devices import FLOAT
from gpu_model.pulses import UpdateReport
from gpu_model.tile import AnalogTile
from gpu_model.tile_config import TileConfig


class FP32Weights:
    kind = "fp32"

    def __init__(self, w0, backend: Backend):
        self.xp = backend.xp
        self.w = self.xp.asarray(w0, dtype=FLOAT).copy()

    @property
    def shape(self):
        return self.w.shape

    def forward(self, x):
        return x @ self.w.T

    def backward(self, d):
        return d @ self.w

    def apply_update(self, delta_w, rand_rng=None, cols=None):
        if cols is None:
            self.w += delta_w
        else:
            self.w[:, cols] += delta_w
        return UpdateReport()

    def weights(self):
        return self.w

    def state_dict(self, be):
        return {"w": be.asnumpy(self.w)}

    def load_state_dict(self, st):
        self.w[...] = self.xp.asarray(st["w"])


class AnalogWeights:
    """W on PCM crossbar tiles: a weight store around one :class:`gpu_model.tile.AnalogTile`.

    The tile does everything below this store (the reads, the digital unit with chi, the verify
    feedback and the DPU, the device array; docs/analog.md); layers only see forward, backward
    and apply_update. Verified updates (``synapse.verified_update``): the digital unit reads every
    device it pulses before and after its pulses and returns (asked - measured) to chi with the
    next update (:mod:`gpu_model.digital_unit`); ``verify_gain`` < 1 returns only that share;
    ``verify_anti_windup`` returns nothing for a synapse whose refresh hit the edge of its range
    (without it the part beyond the range comes back every update and winds up; docs/analog.md).
    """

    kind = "analog"

    def __init__(self, w0, backend: Backend, config: TileConfig, stream: int):
        self.be, self.xp = backend, backend.xp
        out_f, in_f = w0.shape
        self.tile = AnalogTile(config, out_f, in_f, backend, stream=stream, w0=w0)

    @property
    def shape(self):
        return self.tile.shape

    @property
    def epsilon_w(self) -> float:
        """Weight units per pulse (beta * epsilon_uS)."""
        return self.tile.epsilon_w

    @property
    def inc_saturated(self) -> int:
        return self.tile.digital.inc_saturated

    @property
    def chi(self):
        """The digital unit's chi (integer, units of epsilon / chi_scale; rows x columns)."""
        return self.tile.digital.chi

    def forward(self, x):
        return self.tile.forward(x)

    def backward(self, d):
        return self.tile.backward(d)

    def apply_update(self, delta_w, rand_rng, cols=None) -> UpdateReport:
        """delta_w (weight units) -> chi (units of epsilon) -> pulses -> devices (the tile's update).

        ``cols``: optional column subset that ``delta_w`` covers (the other columns have a zero
        update, which leaves chi unchanged and sends no pulse).
        """
        return self.tile.update(delta_w, rand_rng, cols)

    def weights(self):
        return self.tile.weights()

    def state_dict(self, be):
        return self.tile.state_dict()

    def load_state_dict(self, st):
        self.tile.load_state_dict(st)
