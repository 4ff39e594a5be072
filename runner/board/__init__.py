"""`arpu dashboard`: one self-contained HTML file (plotly.js inlined, no network) over the
published relations: funnel, opportunities, ARPU over time, conversion over time, the experiment
readout and the cohort.

By job: `data.py` reads the relations (`board_summary` holds what the page shows besides the
SPEC's relations) and the vars each was built with; `figures.py` draws the Plotly figures;
`text.py` writes the numbers, notes and header; `page.py` fills `template.html`.

The page describes the build it draws: its labels (conversion window, promotion start, target)
come from the vars each relation was published with (`arpu_build_info`), not from the vars
`arpu dashboard` was given; when those differ, or the relations were built with different
vars, the page says so."""

from runner.board.page import DashboardSummary, render_dashboard, script_json

__all__ = ["DashboardSummary", "render_dashboard", "script_json"]
