-- derived_experiment_users: compiled for snowflake from derived_experiment_users.sql
/*
description: >
  Per experiment, variant and user exposed to it in range: whether the user saw only this
  variant of the experiment (is_included), their first exposure to the experiment, and for an
  included user the revenue and whether they ordered from exposure to exposure +
  experiment_window_days inclusive (revenue 0 for a non-buyer). What experiment_results reads;
  not a SPEC relation.
# delete+insert by user: a user's exposures and outcome read only that user's messages and orders
materialized: incremental
incremental_strategy: delete+insert
unique_key: [experiment, variant, user_key]
touched_by: user_key
touched_keys: "
select user_key from "int_event_users" where updated_load > 0
union
select previous_user_key as user_key from "int_event_users"
where updated_load > 0 and previous_user_key is not null union
select user_key from "int_orders" where updated_load > 0
union
select previous_user_key as user_key from "int_orders"
where updated_load > 0 and previous_user_key is not null"
tags: [experiment]
*/
WITH exposure_events AS (
  SELECT
    user_key,
    event_ts,
    CASE
      WHEN event_name = 'Experiment Viewed'
      THEN COALESCE(
        CASE
          WHEN TRIM(
            JSON_EXTRACT_PATH_TEXT(properties, 'experiment_id'),
            (
              ' ' || CHR(  9) || CHR(  10) || CHR(  11) || CHR(  12) || CHR(  13)
            )
          ) <> ''
          THEN JSON_EXTRACT_PATH_TEXT(properties, 'experiment_id')
        END,
        CASE
          WHEN TRIM(
            JSON_EXTRACT_PATH_TEXT(properties, 'experiment_name'),
            (
              ' ' || CHR(  9) || CHR(  10) || CHR(  11) || CHR(  12) || CHR(  13)
            )
          ) <> ''
          THEN JSON_EXTRACT_PATH_TEXT(properties, 'experiment_name')
        END
      )
      ELSE CASE
        WHEN TRIM(
          JSON_EXTRACT_PATH_TEXT(properties, '["Experiment name"]'),
          (
            ' ' || CHR(  9) || CHR(  10) || CHR(  11) || CHR(  12) || CHR(  13)
          )
        ) <> ''
        THEN JSON_EXTRACT_PATH_TEXT(properties, '["Experiment name"]')
      END
    END AS experiment,
    CASE
      WHEN event_name = 'Experiment Viewed'
      THEN COALESCE(
        CASE
          WHEN TRIM(
            JSON_EXTRACT_PATH_TEXT(properties, 'variation_id'),
            (
              ' ' || CHR(  9) || CHR(  10) || CHR(  11) || CHR(  12) || CHR(  13)
            )
          ) <> ''
          THEN JSON_EXTRACT_PATH_TEXT(properties, 'variation_id')
        END,
        CASE
          WHEN TRIM(
            JSON_EXTRACT_PATH_TEXT(properties, 'variation_name'),
            (
              ' ' || CHR(  9) || CHR(  10) || CHR(  11) || CHR(  12) || CHR(  13)
            )
          ) <> ''
          THEN JSON_EXTRACT_PATH_TEXT(properties, 'variation_name')
        END
      )
      ELSE CASE
        WHEN TRIM(
          JSON_EXTRACT_PATH_TEXT(properties, '["Variant name"]'),
          (
            ' ' || CHR(  9) || CHR(  10) || CHR(  11) || CHR(  12) || CHR(  13)
          )
        ) <> ''
        THEN JSON_EXTRACT_PATH_TEXT(properties, '["Variant name"]')
      END
    END AS variant
  FROM "stg_events"
  WHERE
    message_type = 'track'
    AND event_name IN ('Experiment Viewed', '$experiment_started')
    AND TRUE
    AND TRUE
), exposures AS (
  SELECT
    *
  FROM exposure_events
  WHERE
    NOT experiment IS NULL AND NOT variant IS NULL
), per_user AS (
  SELECT
    experiment,
    user_key,
    COUNT(DISTINCT variant) AS variants_seen,
    MIN(event_ts) AS exposed_at
  FROM exposures
  GROUP BY
    experiment,
    user_key
), seen AS (
  SELECT DISTINCT
    experiment,
    variant,
    user_key
  FROM exposures
), outcomes AS (
  SELECT
    u.experiment,
    u.user_key,
    COALESCE(SUM(o.revenue), 0) AS revenue,
    CASE WHEN COUNT(o.order_id) > 0 THEN 1 ELSE 0 END AS purchased
  FROM per_user AS u
  LEFT JOIN "fct_orders" AS o
    ON o.user_key = u.user_key
    AND o.ordered_at >= u.exposed_at
    AND o.ordered_at <= (
      u.exposed_at + INTERVAL '30 DAY'
    )
  WHERE
    u.variants_seen = 1
  GROUP BY
    u.experiment,
    u.user_key
)
SELECT
  s.experiment,
  s.variant,
  s.user_key,
  u.variants_seen = 1 AS is_included,
  u.exposed_at,
  o.revenue,
  o.purchased
FROM seen AS s
INNER JOIN per_user AS u
  ON s.experiment = u.experiment AND s.user_key = u.user_key
LEFT JOIN outcomes AS o
  ON s.experiment = o.experiment AND s.user_key = o.user_key
