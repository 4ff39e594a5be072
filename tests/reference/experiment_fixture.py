"""The ~300-user A/B fixture `tests/fixtures/experiment_300.ndjson`, defined by closed-form rules.

Per-user revenue follows from the user's index, so a test can derive every expected number of
`experiment_results` from the rules alone (no reference implementation involved). Regenerate
with `python -m tests.reference.experiment_fixture > tests/fixtures/experiment_300.ndjson`;
`test_experiment_300_fixture_matches_rules` keeps the file and the rules in step.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta

EXPERIMENT = "checkout_promo"
USERS_PER_ARM = 150
BOTH_ARMS = 3  # users exposed to both variants: excluded from each arm
START = datetime(2026, 3, 1)
WINDOW = timedelta(days=30)


def exposure_at(arm: str, i: int) -> datetime:
    return START + timedelta(minutes=7 * i + (3 if arm == "treatment" else 0))


def in_window_order(arm: str, i: int) -> tuple[timedelta, float] | None:
    """(delay after exposure, revenue) of the one order that counts, or None for a non-buyer."""
    if arm == "control":
        if i % 3 != 0:
            return None
        return timedelta(days=i % 29, hours=1), 20 + (i % 10) * 7.5
    if i % 5 not in (0, 1):
        return None
    # i % 31 == 30 lands exactly on exposure + 30 days (inclusive); 0 on the exposure instant
    return timedelta(days=i % 31), 25 + (i % 8) * 9.25


def revenues(arm: str) -> list[float]:
    """Expected per-user revenue (0 for non-buyers) of the included users of one arm."""
    out = []
    for i in range(USERS_PER_ARM):
        counted = in_window_order(arm, i)
        out.append(counted[1] if counted else 0.0)
    return out


def _ts(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def lines() -> list[str]:
    out = []
    n = 0

    def msg(user: str, at: datetime, event: str, props: dict) -> None:
        nonlocal n
        n += 1
        out.append(json.dumps({
            "type": "track", "event": event, "messageId": f"x300-{n:05d}", "userId": user,
            "timestamp": _ts(at), "properties": props,
        }))

    def order(user: str, at: datetime, revenue: float) -> None:
        msg(user, at, "Order Completed", {"order_id": f"order-{n:05d}", "revenue": revenue,
                                          "currency": "USD", "products": []})

    for arm, prefix in (("control", "c"), ("treatment", "t")):
        for i in range(USERS_PER_ARM):
            user, x = f"{prefix}{i:03d}", exposure_at(arm, i)
            msg(user, x - timedelta(minutes=1), "Product List Viewed", {"list_id": "home"})
            msg(user, x, "Experiment Viewed", {"experiment_id": EXPERIMENT, "variation_id": arm})
            counted = in_window_order(arm, i)
            if counted:
                order(user, x + counted[0], counted[1])
            if i % 4 == 0:  # one second past the window: ignored
                order(user, x + WINDOW + timedelta(seconds=1), 1000.0)
            if i % 6 == 1:  # before exposure: ignored
                order(user, x - timedelta(hours=1), 500.0)
            if i % 10 == 2:  # a repeated exposure to the same variant changes nothing
                msg(user, x + timedelta(days=2), "Experiment Viewed",
                    {"experiment_id": EXPERIMENT, "variation_id": arm})
    for j in range(BOTH_ARMS):
        user, x = f"both{j}", START + timedelta(hours=j)
        msg(user, x, "Experiment Viewed", {"experiment_id": EXPERIMENT, "variation_id": "control"})
        msg(user, x + timedelta(days=1), "Experiment Viewed",
            {"experiment_id": EXPERIMENT, "variation_id": "treatment"})
        order(user, x + timedelta(days=2), 10_000.0)
    return out


if __name__ == "__main__":
    print("\n".join(lines()))
