"""The typed values that travel between a tile's stages (digital unit -> device array).

* :class:`PulseList` — what the digital unit asks of the devices for one update: the synapses that
  get pulses (flat indices into the tile's out x in matrix, ascending) and their signed counts
  (positive: G+ side, weight up; negative: G- side, weight down). Arrays of the tile's backend.
* :class:`UpdateReport` — what the device array did with it: pulses applied, pairs refreshed and,
  for a verified update, what the digital unit measured (:class:`VerifyReadout`).

Nothing travels in dicts: a field that one engine cannot fill is ``None`` and documented here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PulseList:
    """Signed SET-pulse counts for some synapses of one tile (one mini-batch update).

    idx:    int64 flat synapse indices (row-major over out x in), unique and ascending; the order
            fixes the order of the reference engine's random draws.
    counts: signed integer pulse counts, same length; never 0 after :meth:`nonzero`.
    """

    idx: Any
    counts: Any

    @property
    def n(self) -> int:
        """Synapses in the list."""
        return int(self.idx.shape[0])

    def nonzero(self, xp) -> "PulseList":
        """The same list without zero counts (integer counts checked)."""
        c = self.counts
        if c.dtype.kind == "f":
            if not bool(xp.all(c == xp.rint(c))):
                raise ValueError("pulse counts must be integers (got non-integer floats)")
            c = c.astype("int64")
        elif c.dtype.kind not in "iu":
            raise TypeError(f"pulse counts must be an integer array, got dtype {c.dtype}")
        keep = c != 0
        if bool(keep.all()):
            return PulseList(self.idx, c)
        return PulseList(self.idx[keep], c[keep])


@dataclass(frozen=True)
class VerifyReadout:
    """A verified update's measurement, per pulsed synapse (same order as the PulseList's idx).

    idx:      the synapses that received pulses (ascending);
    counts:   their signed pulse counts;
    measured: their measured weight change (weight units): the pulsed device read before and after
              its pulses, plus, for a refreshed synapse, what its re-programming did to W;
    capped:   True where the synapse was refreshed and its refresh write hit the refresh cap (the
              weight sits at the edge of what the synapse can hold);
    refreshed: True where the synapse was refreshed by this update (None: not reported).
    """

    idx: Any
    counts: Any
    measured: Any
    capped: Any
    refreshed: Any = None


@dataclass(frozen=True)
class UpdateReport:
    """What one :class:`PulseList` did on a device array.

    set_pulses: SET pulses applied (int); refreshes: synapses refreshed (int);
    verify: the measurement of a verified update, else None;
    skipped_pulses: pulses not sent because every device of that side of the synapse was excluded
    (device faults' exclusion policy, gpu_model/faults.py; 0 without it);
    excluded: devices this update found not responding and excluded (0 without the policy).
    """

    set_pulses: int = 0
    refreshes: int = 0
    verify: VerifyReadout | None = None
    skipped_pulses: int = 0
    excluded: int = 0
