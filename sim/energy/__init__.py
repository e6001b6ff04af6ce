"""Energy model: training energy per image, computational memory vs a 32-bit digital design.

``model`` holds the pure function of a run's event counts and a per-event table (``tables/``);
``cli`` is ``mcasim energy``. See ``docs/energy.md``.
"""
from .model import (OPS_PER_WEIGHT, PJ, STATE_WORDS, WIDTH_COUNTERS, EnergyError, EnergyReport,  # noqa: F401
                    EnergyTable, default_table_path, estimate, estimate_summary, load_table,
                    table_from_dict)
