-- derived_user_segments: compiled for redshift from derived_user_segments.sql
/*
description: >
  Segment membership for the over-time relations: every user_key with a message, flagged when in
  the cohort of the target category (var target_category, else the recommended category).
  Derived from the marts dim_users, cohort_non_converted and category_opportunities for
  arpu_timeseries and category_conversion_timeseries; not a SPEC relation.
unique_key: user_key
tags: [cohort]
*/
WITH target AS (
  SELECT
    category
  FROM "category_opportunities"
  WHERE
    is_target
), chosen AS (
  SELECT
    category
  FROM target
), cohort AS (
  SELECT DISTINCT
    c.user_key
  FROM "cohort_non_converted" AS c
  INNER JOIN chosen
    ON c.category = chosen.category
)
SELECT
  u.user_key,
  NOT cohort.user_key IS NULL AS is_cohort
FROM "dim_users" AS u
LEFT JOIN cohort
  ON u.user_key = cohort.user_key
