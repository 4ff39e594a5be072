/*
description: >
  Mixpanel's frequentist experiment readout per (experiment, variant). Exposure is the user's first
  `Experiment Viewed` (or `$experiment_started`) in range; users exposed to more than one variant
  are excluded (excluded_users counts them per variant they saw). A variant is a row when an
  included user saw it: one that only excluded users saw has no row and is never the control.
  Revenue and purchases count from exposure to exposure + experiment_window_days inclusive.
  p-values: two-sided z-tests (Welch-type standard error for ARPU, pooled for conversion),
  computed in SQL. The control row carries nulls in uplift, p-values and CI.
unique_key: [experiment, variant]
tags: [recipe, experiment]
*/
with exposed as (
    select experiment, variant, user_key, is_included, revenue, purchased
    from {{ ref('derived_experiment_users') }}
),

excluded as (
    select experiment, variant, count(*) as excluded_users
    from exposed
    where not is_included
    group by experiment, variant
),

user_outcomes as (
    select experiment, variant, user_key, revenue, purchased
    from exposed
    where is_included
),

variants as (
    -- the variants some included user saw
    select distinct experiment, variant from user_outcomes
),

per_variant as (
    select
        v.experiment,
        v.variant,
        count(o.user_key) as users,
        coalesce(max(x.excluded_users), 0) as excluded_users,
        cast(coalesce(sum(o.purchased), 0) as bigint) as purchasers,  -- not a 128-bit sum
        coalesce(sum(o.revenue), 0) as revenue,
        avg(o.revenue) as arpu,
        {{ var_samp('o.revenue') }} as revenue_variance
    from variants as v
    left join user_outcomes as o on v.experiment = o.experiment and v.variant = o.variant
    left join excluded as x on v.experiment = x.experiment and v.variant = x.variant
    group by v.experiment, v.variant
),

control_choice as (
    select
        experiment,
        variant as control_variant
    from (
        select
            experiment,
            variant,
            row_number() over (
                partition by experiment
                order by
                    case
                        {% if var('control_variant') -%}
                        when variant = {{ var('control_variant') }} then 0
                        {% endif -%}
                        when variant = 'control' then 1
                        else 2
                    end,
                    variant
            ) as preference
        from variants
    ) as ranked
    where preference = 1
),

compared as (
    select
        t.*,
        t.variant = cc.control_variant as is_control,
        cc.control_variant,
        {{ safe_div('t.purchasers', 't.users') }} as conversion_rate,
        c.arpu as control_arpu,
        t.arpu - c.arpu as arpu_diff,
        sqrt(t.revenue_variance / nullif(t.users, 0) + c.revenue_variance / nullif(c.users, 0))
            as arpu_se,
        {{ safe_div('t.purchasers', 't.users') }} - {{ safe_div('c.purchasers', 'c.users') }}
            as conversion_diff,
        sqrt(
            {{ safe_div('t.purchasers + c.purchasers', 't.users + c.users') }}
            * (1 - {{ safe_div('t.purchasers + c.purchasers', 't.users + c.users') }})
            * ({{ safe_div(1, 't.users') }} + {{ safe_div(1, 'c.users') }})
        ) as conversion_se
    from per_variant as t
    inner join control_choice as cc on t.experiment = cc.experiment
    inner join per_variant as c on c.experiment = cc.experiment and c.variant = cc.control_variant
),

tested as (
    select
        *,
        case when not is_control then arpu_diff / nullif(arpu_se, 0) end as arpu_z,
        case when not is_control then conversion_diff / nullif(conversion_se, 0) end
            as conversion_z
    from compared
),

normal_tails as (
    -- p = erfc(x) with x = |z| / sqrt(2); erfc's t = 1 / (1 + 0.5 * x) computed here once
    select
        *,
        {{ two_sided_p_x('arpu_z') }} as arpu_x,
        {{ erfc_t(two_sided_p_x('arpu_z')) }} as arpu_t,
        {{ two_sided_p_x('conversion_z') }} as conversion_x,
        {{ erfc_t(two_sided_p_x('conversion_z')) }} as conversion_t
    from tested
)

select
    experiment,
    variant,
    is_control,
    users,
    excluded_users,
    purchasers,
    conversion_rate,
    revenue,
    arpu,
    case when not is_control then arpu / nullif(control_arpu, 0) - 1 end as arpu_uplift,
    {{ erfc('arpu_x', 'arpu_t') }} as arpu_p_value,
    {{ erfc('conversion_x', 'conversion_t') }} as conversion_p_value,
    case when arpu_z is not null then arpu_diff - 1.959964 * arpu_se end as arpu_ci_low,
    case when arpu_z is not null then arpu_diff + 1.959964 * arpu_se end as arpu_ci_high,
    control_variant,
    arpu_diff,
    arpu_se
from normal_tails
