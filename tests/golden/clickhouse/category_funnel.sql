-- category_funnel: compiled for clickhouse from category_funnel.sql
/*
description: >
  Mixpanel's default funnel per category (ordered, uniques, category held constant): viewers who
  entered, purchasers who converted within the window, and the median seconds to convert.
unique_key: category
tags: [recipe]
*/
WITH per_category AS (
  SELECT
    category,
    COUNT(*) AS viewers,
    COUNT(converted_at) AS purchasers,
    quantileExactInclusive(DATE_DIFF(MICROSECOND, entered_at, converted_at) / 1000000.0) AS median_time_to_convert_s
  FROM "derived_funnel_users"
  GROUP BY
    category
)
SELECT
  category,
  viewers,
  purchasers,
  (
    CAST(purchasers AS Nullable(Float64)) / nullIf(CAST(viewers AS Nullable(Float64)), 0)
  ) AS conversion_rate,
  median_time_to_convert_s
FROM per_category
