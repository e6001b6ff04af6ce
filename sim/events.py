"""Energy-relevant event counts of a training run (cheap integer counters).

Training fills one :class:`EventCounts` per run; it is written to ``summary.json`` under
``"events"`` (totals over the whole run) together with ``"images_trained"`` and ``"layers"``
(list of {"name", "in", "out", "kind"}). The energy model (``sim/energy.py``) is a pure function
of these counts and a per-event energy table.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass
class EventCounts:
    # crossbar (analog) side — summed over layers
    fwd_vectors: int = 0          # input vectors applied in forward MVMs
    bwd_vectors: int = 0          # error vectors applied in backward (transposed) MVMs
    cell_reads: int = 0           # synapse (device-pair) reads: rows x cols per vector
    dac_conversions: int = 0      # input DAC conversions
    adc_conversions: int = 0      # output ADC conversions
    # digital update path
    update_macs: int = 0          # outer-product multiply-accumulates (batch x out x live inputs per batch)
    chi_updates: int = 0          # chi read-modify-writes (one per synapse with a live input per mini-batch)
    optimizer_ops: int = 0        # elementwise optimizer operations (SGD 1, momentum 3, Adam ~12 per weight)
    # "live" inputs: with plain SGD an input that is zero over the whole mini-batch gives a zero
    # update column, which the digital unit skips (no MAC, no chi access); momentum/Adam touch all.
    # Test-set evaluation MVMs are not training events and are not counted.
    chi_bits: int = 0             # width of one stored chi word (bits), for memory traffic
    # devices
    set_pulses: int = 0           # training SET pulses
    refreshes: int = 0            # pairs refreshed
    refresh_resets: int = 0       # RESET pulses during refresh
    refresh_prog_pulses: int = 0  # program-and-verify programming pulses during refresh
    refresh_verify_reads: int = 0 # verify (and pre-refresh) reads during refresh
    update_verify_reads: int = 0  # verified updates: pulsed device read before + after; refreshed synapse after
    # device faults (gpu_model/faults.py; all 0 without a [faults] section). The first four are the
    # tiles' state at the end of the run (summed over tiles), the last a cumulative count
    faulty_devices: int = 0       # devices not responding (stuck from fabrication, worn out, failed)
    worn_out_devices: int = 0     # of them: worn out at the endurance limit
    excluded_devices: int = 0     # found not responding by the digital unit and excluded (faults.exclude)
    skipped_pulses: int = 0       # pulses not sent: every device of that side of the synapse excluded
    fault_check_reads: int = 0    # device reads of the exclusion policy's checks (priced as verify reads)
    # digital activations and loss
    activations: int = 0          # nonlinear activation evaluations (forward) + derivatives (backward)
    softmax_outputs: int = 0      # softmax/loss outputs computed
    bias_updates: int = 0         # digital bias updates

    def add(self, **kw):
        for k, v in kw.items():
            setattr(self, k, getattr(self, k) + int(v))

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "EventCounts":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown event counters: {', '.join(sorted(unknown))}")
        return cls(**{k: int(v) for k, v in d.items()})
