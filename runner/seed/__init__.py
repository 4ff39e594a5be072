"""Deterministic generator of the sample Segment e-commerce event stream.

Everything is generated in DuckDB SQL (no per-event Python) from hash-based pseudo-randomness,
``h(key, stream) = hash(hash(seed, stream, key))``, so the same ``(events, seed)`` always gives
the same bytes, whatever the number of threads. The data plants the story of the Mixpanel ARPU
recipe (see ``seeds/README.md``): eight categories priced alike, Home Supplies and Entertainment
converting worst, a promotion on Home Supplies from ``PROMO_START`` that lifts the
non-converted cohort, and an A/B test ``home_supplies_promo`` with a real ARPU lift.

By job: ``catalogue.py`` holds what the sample is made of and the rates it plants;
``tables.py`` the SQL of its behaviour (users to ``final``, one row per message);
``messages.py`` the SQL of each message's JSON text and the bad lines; ``write.py`` the file.
"""

from runner.seed.catalogue import (
    CATEGORIES,
    CONTROL_VARIANT,
    CONVERSION_WINDOW_DAYS,
    CURRENCY,
    END_DATE,
    EXPERIMENT,
    EXPERIMENT_NAME,
    EXPERIMENT_WINDOW_DAYS,
    PROMO_START,
    START_DATE,
    TARGET_CATEGORY,
    TREATMENT_VARIANT,
)
from runner.seed.write import SeedStats, generate

__all__ = [
    "CATEGORIES", "CONTROL_VARIANT", "CONVERSION_WINDOW_DAYS", "CURRENCY", "END_DATE",
    "EXPERIMENT", "EXPERIMENT_NAME", "EXPERIMENT_WINDOW_DAYS", "PROMO_START", "START_DATE",
    "TARGET_CATEGORY", "TREATMENT_VARIANT", "SeedStats", "generate",
]
