"""The bundled sample, built the way a newcomer builds it, tells the recipe's story."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.built import Built
from support.project import ProjectHarness

from runner import seed


@pytest.fixture(scope="module")
def built(sample_built_by_context: Built, tmp_path_factory: pytest.TempPathFactory
          ) -> ProjectHarness:
    result = sample_built_by_context.outcome  # nothing ingested: the build loaded seeds/ itself
    assert result.seeded and result.success, [r for r in result.results if r.error]
    project = sample_built_by_context.copy(tmp_path_factory.mktemp("sample") / "project")
    project.build_result = result  # type: ignore[attr-defined]
    return project


def test_fresh_build_loads_the_sample_and_reports_duplicates(built: ProjectHarness) -> None:
    result = built.build_result  # type: ignore[attr-defined]
    loads = built.rows("raw_loads")
    assert len(loads) == 1
    assert loads[0]["lines_read"] == loads[0]["loaded"] + loads[0]["rejected"]
    assert loads[0]["rejected"] >= 5  # the planted bad lines
    assert result.duplicates_removed > 0
    assert result.messages_loaded == loads[0]["loaded"]
    run_results = json.loads((built.root / "target" / "run_results.json").read_text())
    assert {r["model"] for r in run_results["results"]} >= {"stg_events", "experiment_results"}
    assert all(r["status"] == "success" for r in run_results["results"])


def test_home_supplies_is_the_recommended_category(built: ProjectHarness) -> None:
    rows = built.rows("category_opportunities", order_by="rank, category")
    assert len(rows) == len(seed.CATEGORIES) == 8
    top = rows[0]
    assert (top["category"], top["rank"], top["is_target"]) == ("Home Supplies", 1, True)
    assert top["low_conversion"] and top["high_price"]
    by_name = {r["category"]: r for r in rows}
    # Entertainment: the lowest conversion, close to 40%; Home Supplies close behind
    lowest = min(rows, key=lambda r: r["conversion_rate"])
    assert lowest["category"] == "Entertainment"
    assert 0.35 <= by_name["Entertainment"]["conversion_rate"] <= 0.45
    assert by_name["Entertainment"]["conversion_rate"] < by_name["Home Supplies"]["conversion_rate"]
    assert by_name["Home Supplies"]["conversion_rate"] <= 0.47
    # the average item price is close to $460 everywhere
    assert all(440 <= r["avg_item_price"] <= 480 for r in rows)
    # Home Supplies is the second most ordered category
    assert by_name["Home Supplies"]["order_rank"] == 2


def test_cohort_and_promotion_lift(sample_built_with_promo: Built, tmp_path: Path) -> None:
    assert sample_built_with_promo.outcome.success  # built with promo_start=seed.PROMO_START
    project = sample_built_with_promo.copy(tmp_path / "project")
    cohort = project.rows("cohort_non_converted")
    home = [r for r in cohort if r["category"] == "Home Supplies"]
    assert len(home) > 100
    assert all(r["last_viewed_at"].date().isoformat() < seed.PROMO_START for r in home)
    assert sum(r["email"] is not None for r in home) > len(home) / 2  # identified users
    monthly = [r for r in project.rows("category_conversion_timeseries")
               if r["grain"] == "month" and r["segment"] == "cohort"
               and r["category"] == "Home Supplies"]
    before = [r for r in monthly if r["period_start"].isoformat() < seed.PROMO_START[:7]]
    after = [r for r in monthly if r["period_start"].isoformat()[:7] == seed.PROMO_START[:7]]
    assert before and after
    rate_before = sum(r["purchasers"] for r in before) / sum(r["viewers"] for r in before)
    rate_after = sum(r["purchasers"] for r in after) / sum(r["viewers"] for r in after)
    assert rate_after > rate_before + 0.1


def test_experiment_promo_arm_lifts_arpu(built: ProjectHarness) -> None:
    rows = {r["variant"]: r for r in built.rows("experiment_results")
            if r["experiment"] == seed.EXPERIMENT}
    assert set(rows) == {"control", "promo"}
    control, promo = rows["control"], rows["promo"]
    assert control["is_control"] and not promo["is_control"]
    assert control["arpu_p_value"] is None
    assert promo["arpu_uplift"] > 0.05
    assert promo["arpu_p_value"] < 0.05
    assert promo["arpu_ci_low"] > 0
    assert control["excluded_users"] > 0 and promo["excluded_users"] > 0
