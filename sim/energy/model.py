"""Training energy per image: mixed-precision computational memory vs a 32-bit digital design.

The model is a pure function of a run's event counts (``sim/events.py``), its layer shapes, the
mini-batch size, the optimizer and a per-event energy table (TOML, default
``sim/energy/tables/energy_default.toml``). See ``docs/energy.md``.

Computational-memory (CM) design, per run:

* crossbar:   ``cell_reads`` x cell_read + ``dac_conversions`` x DAC + ``adc_conversions`` x
  (ADC + digital post-processing of the ADC output);
* update:     ``update_macs`` x outer-product MAC (fixed point);
* chi:        ``chi_updates`` x (chi arithmetic + read and write of one ``chi_bits`` word in the
  chi memory);
* optimizer:  ``optimizer_ops`` x op + optimizer-state read/write traffic (momentum 1, Adam 2
  state words per parameter per mini-batch);
* devices:    ``set_pulses`` x SET + ``refresh_resets`` x RESET + ``refresh_prog_pulses`` x
  programming pulse + ``refresh_verify_reads`` x verify read + ``update_verify_reads`` x verify
  read (verified updates);
* digital:    ``activations`` x activation + ``softmax_outputs`` x softmax + ``bias_updates`` x
  bias update.

32-bit digital reference on the same workload: every crossbar synapse read is an FP32 MAC
(``cell_reads`` = forward + backward MACs) with its weight fetched per the table's
``weight_fetch``; the gradient MACs (``update_macs``) in FP32; a weight read-modify-write per
weight per mini-batch; the optimizer in FP32 with its state in the weight memory; activations,
softmax and bias updates in FP32. Layers that are not analog (``kind != "analog"``) are digital
in both designs and charged at the reference's FP32 costs in both.

All figures are joules per training image (run totals divided by ``images``).
"""
from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

PJ = 1e-12

# Elementwise ops per parameter update and state words per parameter (momentum: velocity;
# Adam: first and second moments). Ops match sim.layers.Optimizer.OPS_PER_WEIGHT.
OPS_PER_WEIGHT = {"sgd": 1, "momentum": 3, "adam": 12}
STATE_WORDS = {"sgd": 0, "momentum": 1, "adam": 2}

# counters that are widths, not event counts (not scaled by run length)
WIDTH_COUNTERS = ("chi_bits",)

_NUM = "number"
_STR = "string"
SCHEMA: dict[str, dict[str, str]] = {
    "meta": {"name": _STR, "description": _STR},
    "memory": {"sram_8kb": _NUM, "sram_32kb": _NUM, "sram_1mb": _NUM, "dram": _NUM},
    "crossbar": {"cell_read_pJ": _NUM, "dac_conversion_pJ": _NUM, "adc_conversion_pJ": _NUM,
                 "adc_postprocess_pJ": _NUM},
    "pcm": {"set_pulse_pJ": _NUM, "reset_pulse_pJ": _NUM, "prog_pulse_pJ": _NUM, "verify_read_pJ": _NUM},
    "dpu": {"update_mac_pJ": _NUM, "chi_arith_pJ": _NUM, "chi_memory": _STR, "default_chi_bits": _NUM,
            "optimizer_op_pJ": _NUM, "optimizer_state_bits": _NUM, "activation_pJ": _NUM,
            "softmax_pJ": _NUM, "bias_update_pJ": _NUM},
    "digital": {"fp32_mult_pJ": _NUM, "fp32_add_pJ": _NUM, "weight_bits": _NUM, "weight_memory": _STR,
                "weight_fetch": _STR, "activation_pJ": _NUM, "softmax_pJ": _NUM, "bias_update_pJ": _NUM},
}
# The 32-bit reference's weight dataflow (issue 27): "per_mac" fetches a weight for every forward /
# backward MAC (no reuse: the worst case, overstated for convolutions whose weights serve every
# output position); "per_image": each layer's weights fetched once per image per pass (forward,
# backward), reused over the image's positions (a weight-stationary array holding one layer);
# "per_batch": once per mini-batch per pass (reused over the whole batch as well).
WEIGHT_FETCH = ("per_mac", "per_image", "per_batch")


class EnergyError(ValueError):
    """Invalid energy table or inputs."""


@dataclass(frozen=True)
class EnergyTable:
    """A validated energy table: ``sections[section][key]`` (energies in pJ, memory in pJ/bit)."""

    sections: dict
    source: str = "<dict>"

    def __getitem__(self, section: str) -> dict:
        return self.sections[section]

    @property
    def name(self) -> str:
        return self.sections["meta"]["name"]

    def replace(self, section: str, key: str, value) -> "EnergyTable":
        """A copy with one entry changed (validated)."""
        new = {s: dict(v) for s, v in self.sections.items()}
        if section not in new or key not in new[section]:
            raise EnergyError(f"energy table: unknown entry [{section}].{key}")
        new[section][key] = value
        return table_from_dict(new, source=self.source)

    def to_dict(self) -> dict:
        return {s: dict(v) for s, v in self.sections.items()}


def default_table_path() -> Path:
    return Path(str(resources.files("sim.energy").joinpath("tables/energy_default.toml")))


def table_from_dict(d: dict, source: str = "<dict>") -> EnergyTable:
    """Validate a parsed table: every key present, no unknown keys, energies finite and >= 0."""
    where = f"energy table {source}"
    if not isinstance(d, dict):
        raise EnergyError(f"{where}: expected a table of sections")
    unknown = set(d) - set(SCHEMA)
    if unknown:
        raise EnergyError(f"{where}: unknown section(s) {', '.join(sorted(unknown))}; "
                          f"expected {', '.join(SCHEMA)}")
    out: dict[str, dict] = {}
    for sec, keys in SCHEMA.items():
        if sec not in d:
            raise EnergyError(f"{where}: missing section [{sec}]")
        body = d[sec]
        if not isinstance(body, dict):
            raise EnergyError(f"{where}: [{sec}] must be a table")
        unk = set(body) - set(keys)
        if unk:
            raise EnergyError(f"{where}: unknown key(s) in [{sec}]: {', '.join(sorted(unk))}")
        out[sec] = {}
        for key, kind in keys.items():
            if key not in body:
                raise EnergyError(f"{where}: missing key [{sec}].{key}")
            v = body[key]
            if kind == _STR:
                if not isinstance(v, str):
                    raise EnergyError(f"{where}: [{sec}].{key} must be a string, got {v!r}")
            else:
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                    raise EnergyError(f"{where}: [{sec}].{key} must be a finite number, got {v!r}")
                if v < 0:
                    raise EnergyError(f"{where}: [{sec}].{key} must be >= 0, got {v}")
            out[sec][key] = v
    mem = out["memory"]
    for sec, key in (("dpu", "chi_memory"), ("digital", "weight_memory")):
        if out[sec][key] not in mem:
            raise EnergyError(f"{where}: [{sec}].{key} = {out[sec][key]!r} is not a key of [memory] "
                              f"({', '.join(mem)})")
    if out["digital"]["weight_fetch"] not in WEIGHT_FETCH:
        raise EnergyError(f"{where}: [digital].weight_fetch must be one of {WEIGHT_FETCH}, "
                          f"got {out['digital']['weight_fetch']!r}")
    for sec, key in (("dpu", "default_chi_bits"), ("dpu", "optimizer_state_bits"), ("digital", "weight_bits")):
        if out[sec][key] <= 0:
            raise EnergyError(f"{where}: [{sec}].{key} must be > 0, got {out[sec][key]}")
    return EnergyTable(out, source=source)


def load_table(path=None) -> EnergyTable:
    """Read and validate an energy table (TOML); ``None`` is the shipped default preset."""
    p = Path(path) if path is not None else default_table_path()
    try:
        with open(p, "rb") as f:
            d = tomllib.load(f)
    except FileNotFoundError:
        raise EnergyError(f"energy table not found: {p}") from None
    except tomllib.TOMLDecodeError as exc:
        raise EnergyError(f"energy table {p}: invalid TOML: {exc}") from None
    return table_from_dict(d, source=str(p))


@dataclass
class EnergyReport:
    """Per-image training energy (J) of both designs with a breakdown by component."""

    cm: dict                       # component -> J per image, computational-memory design
    digital: dict                  # component -> J per image, 32-bit digital reference
    images: int
    table: str
    notes: list = field(default_factory=list)
    ratio_by_weight_fetch: dict = field(default_factory=dict)   # fetch mode -> ratio (same table otherwise)

    @property
    def cm_total(self) -> float:
        return float(sum(self.cm.values()))

    @property
    def digital_total(self) -> float:
        return float(sum(self.digital.values()))

    @property
    def ratio(self) -> float:
        """Digital / computational-memory energy (x better efficiency of the CM design)."""
        return self.digital_total / self.cm_total if self.cm_total > 0 else math.inf

    def as_dict(self) -> dict:
        return {"images": self.images, "table": self.table,
                "cm_J_per_image": self.cm_total, "digital_J_per_image": self.digital_total,
                "ratio": self.ratio, "cm_breakdown_J": dict(self.cm),
                "digital_breakdown_J": dict(self.digital), "notes": list(self.notes),
                "ratio_by_weight_fetch": dict(self.ratio_by_weight_fetch)}


def _layer_sizes(layers) -> tuple[int, int, int, int, int, int]:
    """(analog weights, analog weights with a backward MVM, digital weights, digital fwd MACs/image,
    digital bwd MACs/image, biases). The first layer needs no backward MVM. A conv layer's
    ``vectors_per_image`` (output positions: one matrix read per im2col patch) multiplies its MACs."""
    n_an = n_an_bwd = n_dig = dig_fwd = dig_bwd = n_b = 0
    for i, L in enumerate(layers):
        try:
            n = int(L["in"]) * int(L["out"])
            n_b += int(L["out"])
            vpi = int(L.get("vectors_per_image", 1))
        except (KeyError, TypeError, ValueError):
            raise EnergyError(f"layer {i}: needs integer 'in' and 'out', got {L!r}") from None
        if vpi < 1:
            raise EnergyError(f"layer {i}: vectors_per_image must be >= 1, got {vpi}")
        if L.get("kind", "analog") == "analog":
            n_an += n
            if i > 0:
                n_an_bwd += n
        else:
            n_dig += n
            dig_fwd += n * vpi
            if i > 0:                     # the first layer's input error is not needed
                dig_bwd += n * vpi
    return n_an, n_an_bwd, n_dig, dig_fwd, dig_bwd, n_b


def estimate(events: dict, images: int, layers: list, table: EnergyTable,
             batch_size: int, optimizer: str = "sgd", devices_per_side: int = 1) -> EnergyReport:
    """Per-image training energy of both designs (pure function of counts and table).

    ``devices_per_side``: N of multi-device synapses; ``cell_reads`` counts device pairs read (N
    per synapse), so the synapse reads (= the reference's MACs) are cell_reads / N.
    ``ratio_by_weight_fetch`` of the report gives the ratio under every ``WEIGHT_FETCH`` mode
    (the table's other entries unchanged), so no figure rests on the reference's worst case."""
    rep = _estimate(events, images, layers, table, batch_size, optimizer, devices_per_side)
    for mode in WEIGHT_FETCH:
        r = rep if mode == table["digital"]["weight_fetch"] else _estimate(
            events, images, layers, table.replace("digital", "weight_fetch", mode), batch_size,
            optimizer, devices_per_side)
        rep.ratio_by_weight_fetch[mode] = r.ratio
    return rep


def _estimate(events: dict, images: int, layers: list, table: EnergyTable,
              batch_size: int, optimizer: str, devices_per_side: int) -> EnergyReport:
    if not isinstance(images, int) or isinstance(images, bool) or images <= 0:
        raise EnergyError(f"images must be a positive integer, got {images!r}")
    if not isinstance(batch_size, int) or batch_size <= 0:
        raise EnergyError(f"batch_size must be a positive integer, got {batch_size!r}")
    if optimizer not in OPS_PER_WEIGHT:
        raise EnergyError(f"optimizer must be one of {', '.join(OPS_PER_WEIGHT)}, got {optimizer!r}")
    if not layers:
        raise EnergyError("layers must be a non-empty list")
    ev = {k: v for k, v in events.items()}
    bad = [k for k, v in ev.items() if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0]
    if bad:
        raise EnergyError(f"event counts must be non-negative numbers: {', '.join(sorted(bad))}")

    def c(name):
        return float(ev.get(name, 0))

    t = table
    cx, pcm, dpu, dg, mem = t["crossbar"], t["pcm"], t["dpu"], t["digital"], t["memory"]
    n_an, n_an_bwd, n_dig, dig_fwd, dig_bwd, n_b = _layer_sizes(layers)
    n_w = n_an + n_dig
    notes = []

    # mini-batches: every analog weight gets one chi update per mini-batch (exact); else from images
    if n_an > 0 and c("chi_updates") > 0:
        n_batches = c("chi_updates") / n_an
    else:
        n_batches = images / batch_size
    # split update MACs between analog and digital layers (update_macs = B x n_w per batch)
    upd_an = c("update_macs") * (n_an / n_w) if n_w else 0.0
    upd_dig = c("update_macs") - upd_an

    fp_mac = (dg["fp32_mult_pJ"] + dg["fp32_add_pJ"]) * PJ
    w_bit = mem[dg["weight_memory"]] * PJ
    wb = dg["weight_bits"]
    chi_bits = int(ev.get("chi_bits", 0)) or int(dpu["default_chi_bits"])
    if not int(ev.get("chi_bits", 0)):
        notes.append(f"chi_bits not in the counts: using the table's default_chi_bits = {chi_bits}")
    chi_bit = mem[dpu["chi_memory"]] * PJ
    state_words = STATE_WORDS[optimizer]
    param_updates = n_batches * (n_w + n_b)   # parameters updated per run
    ops = c("optimizer_ops")

    # digital layers (non-analog), identical in both designs: FP32 MACs + per-MAC weight reads
    dig_macs = images * (dig_fwd + dig_bwd) + upd_dig
    if dg["weight_fetch"] == "per_image":   # each digital weight once per image per pass
        n_dig_bwd = sum(int(L["in"]) * int(L["out"]) for i, L in enumerate(layers)
                        if i > 0 and L.get("kind", "analog") != "analog")
        dig_reads = min(images * (n_dig + n_dig_bwd), images * (dig_fwd + dig_bwd))
    else:
        dig_reads = (images if dg["weight_fetch"] == "per_mac" else n_batches) * (dig_fwd + dig_bwd)
    dig_layers = dig_macs * fp_mac + dig_reads * wb * w_bit + n_batches * n_dig * 2 * wb * w_bit

    # --- computational-memory design ------------------------------------------------------------
    cm = {
        "crossbar reads": c("cell_reads") * cx["cell_read_pJ"] * PJ,
        "DAC": c("dac_conversions") * cx["dac_conversion_pJ"] * PJ,
        "ADC + post-processing": c("adc_conversions") * (cx["adc_conversion_pJ"] + cx["adc_postprocess_pJ"]) * PJ,
        "update MACs": upd_an * dpu["update_mac_pJ"] * PJ,
        "chi memory": c("chi_updates") * 2 * chi_bits * chi_bit,
        "chi arithmetic": c("chi_updates") * dpu["chi_arith_pJ"] * PJ,
        "optimizer": ops * dpu["optimizer_op_pJ"] * PJ
        + param_updates * state_words * 2 * dpu["optimizer_state_bits"] * chi_bit,
        "SET pulses": c("set_pulses") * pcm["set_pulse_pJ"] * PJ,
        "update verify reads": c("update_verify_reads") * pcm["verify_read_pJ"] * PJ,
        "refresh": (c("refresh_resets") * pcm["reset_pulse_pJ"] + c("refresh_prog_pulses") * pcm["prog_pulse_pJ"]
                    + c("refresh_verify_reads") * pcm["verify_read_pJ"]) * PJ,
        "activations + softmax": (c("activations") * dpu["activation_pJ"]
                                  + c("softmax_outputs") * dpu["softmax_pJ"]) * PJ,
        "bias updates": c("bias_updates") * dpu["bias_update_pJ"] * PJ,
    }
    if c("fault_check_reads"):   # the exclusion policy's check reads (docs/faults.md): one device read each
        cm["fault check reads"] = c("fault_check_reads") * pcm["verify_read_pJ"] * PJ
    if n_dig:
        cm["digital layers"] = dig_layers

    # --- 32-bit digital reference ---------------------------------------------------------------
    mvm_macs = c("cell_reads") / devices_per_side   # forward + backward synapse reads = MACs
    if dg["weight_fetch"] == "per_mac":
        w_reads = mvm_macs
    elif dg["weight_fetch"] == "per_image":   # once per layer per image for each pass
        w_reads = min(images * (n_an + n_an_bwd), mvm_macs)
    else:   # once per mini-batch for the forward pass and once for the backward pass
        w_reads = min(n_batches * (n_an + n_an_bwd), mvm_macs)
    digital = {
        "forward/backward MACs": mvm_macs * fp_mac,
        "weight reads": w_reads * wb * w_bit,
        "gradient MACs": upd_an * fp_mac,
        "weight update (read-modify-write)": n_batches * n_an * 2 * wb * w_bit,
        "optimizer": ops * fp_mac + param_updates * state_words * 2 * wb * w_bit,
        "activations + softmax": (c("activations") * dg["activation_pJ"] + c("softmax_outputs") * dg["softmax_pJ"]) * PJ,
        "bias updates": c("bias_updates") * dg["bias_update_pJ"] * PJ,
    }
    if n_dig:
        digital["digital layers"] = dig_layers

    # forward vectors per training image: one per analog dense layer, one per position of a conv
    fwd_per_image = sum(int(L.get("vectors_per_image", 1)) for L in layers if L.get("kind", "analog") == "analog")
    if fwd_per_image and c("fwd_vectors") > images * fwd_per_image * 1.001:
        extra = c("fwd_vectors") / fwd_per_image - images
        notes.append(f"the counts hold ~{extra:,.0f} forward passes beyond the {images:,} training images "
                     "(evaluation?); both designs are charged for them")
    cm = {k: v / images for k, v in cm.items()}
    digital = {k: v / images for k, v in digital.items()}
    return EnergyReport(cm=cm, digital=digital, images=images, table=t.name, notes=notes)


def estimate_summary(summary: dict, table: EnergyTable) -> EnergyReport:
    """:func:`estimate` on a run's ``summary.json`` content."""
    missing = [k for k in ("events", "images_trained", "layers") if k not in summary]
    if missing:
        raise EnergyError(f"summary.json lacks {', '.join(missing)}")
    return estimate(summary["events"], int(summary["images_trained"]), summary["layers"], table,
                    batch_size=int(summary.get("batch_size", 1)), optimizer=summary.get("optimizer", "sgd"),
                    devices_per_side=int(summary.get("devices_per_side", 1)))
