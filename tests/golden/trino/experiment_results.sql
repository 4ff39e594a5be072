-- experiment_results: compiled for trino from experiment_results.sql
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
WITH exposed AS (
  SELECT
    experiment,
    variant,
    user_key,
    is_included,
    revenue,
    purchased
  FROM "derived_experiment_users"
), excluded AS (
  SELECT
    experiment,
    variant,
    COUNT(*) AS excluded_users
  FROM exposed
  WHERE
    NOT is_included
  GROUP BY
    experiment,
    variant
), user_outcomes AS (
  SELECT
    experiment,
    variant,
    user_key,
    revenue,
    purchased
  FROM exposed
  WHERE
    is_included
), variants AS (
  /* the variants some included user saw */
  SELECT DISTINCT
    experiment,
    variant
  FROM user_outcomes
), per_variant AS (
  SELECT
    v.experiment,
    v.variant,
    COUNT(o.user_key) AS users,
    COALESCE(MAX(x.excluded_users), 0) AS excluded_users,
    CAST(COALESCE(SUM(o.purchased), 0) AS BIGINT) AS purchasers, /* not a 128-bit sum */
    COALESCE(SUM(o.revenue), 0) AS revenue,
    AVG(o.revenue) AS arpu,
    VARIANCE(o.revenue) AS revenue_variance
  FROM variants AS v
  LEFT JOIN user_outcomes AS o
    ON v.experiment = o.experiment AND v.variant = o.variant
  LEFT JOIN excluded AS x
    ON v.experiment = x.experiment AND v.variant = x.variant
  GROUP BY
    v.experiment,
    v.variant
), control_choice AS (
  SELECT
    experiment,
    variant AS control_variant
  FROM (
    SELECT
      experiment,
      variant,
      ROW_NUMBER() OVER (
        PARTITION BY experiment
        ORDER BY CASE WHEN variant = 'control' THEN 1 ELSE 2 END, variant
      ) AS preference
    FROM variants
  ) AS ranked
  WHERE
    preference = 1
), compared AS (
  SELECT
    t.*,
    t.variant = cc.control_variant AS is_control,
    cc.control_variant,
    (
      CAST(t.purchasers AS DOUBLE) / NULLIF(CAST(t.users AS DOUBLE), 0)
    ) AS conversion_rate,
    c.arpu AS control_arpu,
    t.arpu - c.arpu AS arpu_diff,
    SQRT(
      CAST(t.revenue_variance AS DOUBLE) / NULLIF(t.users, 0) + CAST(c.revenue_variance AS DOUBLE) / NULLIF(c.users, 0)
    ) AS arpu_se,
    (
      CAST(t.purchasers AS DOUBLE) / NULLIF(CAST(t.users AS DOUBLE), 0)
    ) - (
      CAST(c.purchasers AS DOUBLE) / NULLIF(CAST(c.users AS DOUBLE), 0)
    ) AS conversion_diff,
    SQRT(
      (
        CAST(t.purchasers + c.purchasers AS DOUBLE) / NULLIF(CAST(t.users + c.users AS DOUBLE), 0)
      ) * (
        1 - (
          CAST(t.purchasers + c.purchasers AS DOUBLE) / NULLIF(CAST(t.users + c.users AS DOUBLE), 0)
        )
      ) * (
        (
          CAST(1 AS DOUBLE) / NULLIF(CAST(t.users AS DOUBLE), 0)
        ) + (
          CAST(1 AS DOUBLE) / NULLIF(CAST(c.users AS DOUBLE), 0)
        )
      )
    ) AS conversion_se
  FROM per_variant AS t
  INNER JOIN control_choice AS cc
    ON t.experiment = cc.experiment
  INNER JOIN per_variant AS c
    ON c.experiment = cc.experiment AND c.variant = cc.control_variant
), tested AS (
  SELECT
    *,
    CASE WHEN NOT is_control THEN CAST(arpu_diff AS DOUBLE) / NULLIF(arpu_se, 0) END AS arpu_z,
    CASE
      WHEN NOT is_control
      THEN CAST(conversion_diff AS DOUBLE) / NULLIF(conversion_se, 0)
    END AS conversion_z
  FROM compared
), normal_tails AS (
  /* p = erfc(x) with x = |z| / sqrt(2); erfc's t = 1 / (1 + 0.5 * x) computed here once */
  SELECT
    *,
    CAST(ABS(arpu_z) AS DOUBLE) / SQRT(2.0) AS arpu_x,
    CAST(1.0 AS DOUBLE) / (
      1.0 + 0.5 * (
        CAST(ABS(arpu_z) AS DOUBLE) / SQRT(2.0)
      )
    ) AS arpu_t,
    CAST(ABS(conversion_z) AS DOUBLE) / SQRT(2.0) AS conversion_x,
    CAST(1.0 AS DOUBLE) / (
      1.0 + 0.5 * (
        CAST(ABS(conversion_z) AS DOUBLE) / SQRT(2.0)
      )
    ) AS conversion_t
  FROM tested
)
SELECT
  experiment,
  variant,
  is_control,
  users,
  excluded_users,
  purchasers,
  conversion_rate,
  revenue,
  arpu,
  CASE
    WHEN NOT is_control
    THEN CAST(arpu AS DOUBLE) / NULLIF(control_arpu, 0) - 1
  END AS arpu_uplift,
  CASE
    WHEN arpu_x > 26
    THEN 0.0
    WHEN arpu_t * EXP(
      -arpu_x * arpu_x - 1.26551223 + arpu_t * (
        1.00002368 + arpu_t * (
          0.37409196 + arpu_t * (
            0.09678418 + arpu_t * (
              -0.18628806 + arpu_t * (
                0.27886807 + arpu_t * (
                  -1.13520398 + arpu_t * (
                    1.48851587 + arpu_t * (
                      -0.82215223 + arpu_t * 0.17087277
                    )
                  )
                )
              )
            )
          )
        )
      )
    ) > 1.0
    THEN 1.0
    ELSE arpu_t * EXP(
      -arpu_x * arpu_x - 1.26551223 + arpu_t * (
        1.00002368 + arpu_t * (
          0.37409196 + arpu_t * (
            0.09678418 + arpu_t * (
              -0.18628806 + arpu_t * (
                0.27886807 + arpu_t * (
                  -1.13520398 + arpu_t * (
                    1.48851587 + arpu_t * (
                      -0.82215223 + arpu_t * 0.17087277
                    )
                  )
                )
              )
            )
          )
        )
      )
    )
  END AS arpu_p_value,
  CASE
    WHEN conversion_x > 26
    THEN 0.0
    WHEN conversion_t * EXP(
      -conversion_x * conversion_x - 1.26551223 + conversion_t * (
        1.00002368 + conversion_t * (
          0.37409196 + conversion_t * (
            0.09678418 + conversion_t * (
              -0.18628806 + conversion_t * (
                0.27886807 + conversion_t * (
                  -1.13520398 + conversion_t * (
                    1.48851587 + conversion_t * (
                      -0.82215223 + conversion_t * 0.17087277
                    )
                  )
                )
              )
            )
          )
        )
      )
    ) > 1.0
    THEN 1.0
    ELSE conversion_t * EXP(
      -conversion_x * conversion_x - 1.26551223 + conversion_t * (
        1.00002368 + conversion_t * (
          0.37409196 + conversion_t * (
            0.09678418 + conversion_t * (
              -0.18628806 + conversion_t * (
                0.27886807 + conversion_t * (
                  -1.13520398 + conversion_t * (
                    1.48851587 + conversion_t * (
                      -0.82215223 + conversion_t * 0.17087277
                    )
                  )
                )
              )
            )
          )
        )
      )
    )
  END AS conversion_p_value,
  CASE WHEN NOT arpu_z IS NULL THEN arpu_diff - 1.959964 * arpu_se END AS arpu_ci_low,
  CASE WHEN NOT arpu_z IS NULL THEN arpu_diff + 1.959964 * arpu_se END AS arpu_ci_high,
  control_variant,
  arpu_diff,
  arpu_se
FROM normal_tails
