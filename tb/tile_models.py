"""Transaction-level models of the whole unit (:class:`rtl.tile.TileUnit`) for the scoreboard:
the golden model and deliberately broken variants that the bench must catch
(``TILE_TB_MODEL=<name>``)."""
from __future__ import annotations

import numpy as np

from rtl.golden import EVENT_DTYPE, GoldenTile, batch_sum, golden_step, scale_increment, tile_rand


class TileModel(GoldenTile):
    name = "golden"


class IncWraps(TileModel):
    """Bug: the scaled increment wraps around instead of saturating (sat_inc missing)."""
    name = "inc_wraps"

    def batch(self, x, delta, m):
        ts = self.spec
        ch = ts.chi_spec
        v = batch_sum(ts, x, delta) * int(m)
        k = ts.scale_shift
        if k:
            v = (v + (1 << (k - 1))) >> k
        half = 1 << (ch.inc_bits - 1)
        inc = (((v + half) % (2 * half)) - half).astype(np.int32)
        return self._finish(inc, np.zeros(inc.shape, bool))

    def _finish(self, inc, sat):
        ts = self.spec
        rand, self.rand_states = tile_rand(ts, self.rand_states, ts.groups)
        chi_new, p, neg = golden_step(ts.chi_spec, self.chi, inc, rand.reshape(ts.rows, ts.cols), np)
        self.chi = np.asarray(chi_new, np.int32)
        rr, cc = np.nonzero(p)
        ev = np.empty(rr.size, EVENT_DTYPE)
        ev["row"], ev["col"], ev["count"], ev["neg"] = rr, cc, p[rr, cc], neg[rr, cc]
        self.counters.add(events=rr.size, pulses=int(p.sum()), pmax_hits=int((p == ts.dpu.pmax).sum()),
                          inc_sat=int(sat.sum()), batches=1)
        return ev


class ScaleFloor(IncWraps):
    """Bug: the scale stage truncates (floor) instead of rounding half up."""
    name = "scale_floor"

    def batch(self, x, delta, m):
        ts = self.spec
        ch = ts.chi_spec
        v = (batch_sum(ts, x, delta) * int(m)) >> ts.scale_shift
        sat = (v > ch.inc_max) | (v < ch.inc_min)
        return self._finish(np.clip(v, ch.inc_min, ch.inc_max).astype(np.int32), sat)


class RandLate(IncWraps):
    """Bug: every beat takes the generators' state *after* its step (off by one beat)."""
    name = "rand_late"

    def batch(self, x, delta, m):
        ts = self.spec
        inc, sat = scale_increment(ts, batch_sum(ts, x, delta), m)
        rand, st = tile_rand(ts, self.rand_states, ts.groups + 1)
        self.rand_states = tile_rand(ts, self.rand_states, ts.groups)[1]
        chi_new, p, neg = golden_step(ts.chi_spec, self.chi, inc, rand[1:].reshape(ts.rows, ts.cols), np)
        self.chi = np.asarray(chi_new, np.int32)
        rr, cc = np.nonzero(p)
        ev = np.empty(rr.size, EVENT_DTYPE)
        ev["row"], ev["col"], ev["count"], ev["neg"] = rr, cc, p[rr, cc], neg[rr, cc]
        self.counters.add(events=rr.size, pulses=int(p.sum()), pmax_hits=int((p == ts.dpu.pmax).sum()),
                          inc_sat=int(sat.sum()), batches=1)
        return ev


class LastSampleDropped(IncWraps):
    """Bug: the batch sum leaves out the last sample of the batch (an off-by-one in B)."""
    name = "last_sample_dropped"

    def batch(self, x, delta, m):
        ts = self.spec
        x = np.array(x, copy=True)
        x[-1] = 0
        inc, sat = scale_increment(ts, batch_sum(ts, x, delta), m)
        return self._finish(inc, sat)


class EventsReversed(TileModel):
    """Bug: the events of one beat leave highest column first."""
    name = "events_reversed"

    def batch(self, x, delta, m):
        ev = super().batch(x, delta, m)
        L = self.spec.lanes
        key = ev["row"].astype(np.int64) * self.spec.cols + (ev["col"] // L) * L + (L - 1 - ev["col"] % L)
        return ev[np.argsort(key, kind="stable")]


BROKEN = {m.name: m for m in (IncWraps, ScaleFloor, RandLate, LastSampleDropped, EventsReversed)}
MODELS = {"golden": TileModel, **BROKEN}


def make_tile_model(name: str, spec) -> TileModel:
    try:
        return MODELS[name](spec)
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(MODELS)}") from None
