"""The quality gate's types, at the bottom: what is checked and what came of it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SEVERITIES = ("error", "warn")
MAX_EXAMPLES = 5
UNEXPECTED_ROWS = "unexpected_rows"
GX_SEVERITY = {"error": "critical", "warn": "warning"}


@dataclass
class ExpectationSpec:
    """One expectation of one relation, before it is handed to GX."""

    relation: str
    type: str  # a GX expectation (`expect_...`) or `unexpected_rows`
    kwargs: dict[str, Any] = field(default_factory=dict)
    severity: str = "error"
    description: str = ""
    origin: str = "default"  # `default` or `<file>:<line>` where it was declared
    requires: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        """Human-readable and unique within a relation: `expect_column_values_to_be_unique(id)`."""
        if self.type == UNEXPECTED_ROWS:
            return f"{UNEXPECTED_ROWS}({self.description})"
        args: list[str] = []
        for key in ("column", "column_A", "column_B"):
            if key in self.kwargs:
                args.append(str(self.kwargs[key]))
        args.extend(str(c) for c in self.kwargs.get("column_list", []))
        for key, value in self.kwargs.items():
            if key not in ("column", "column_A", "column_B", "column_list"):
                args.append(f"{key}={short(value)}")
        return f"{self.type}({', '.join(args)})"


@dataclass
class ExpectationResult:
    relation: str
    expectation: str  # ExpectationSpec.name
    severity: str  # "error" | "warn"
    success: bool
    observed: str  # observed value, human readable
    failing_examples: list[dict[str, Any]] = field(default_factory=list)  # up to 5 rows
    seconds: float = 0.0  # the relation's validation time, shared by its expectations
    exception: str | None = None  # the check itself could not run (bad SQL, missing column)

    @property
    def is_error(self) -> bool:
        """A failed `error` expectation: the model fails and its descendants are skipped."""
        return not self.success and self.severity == "error"

    @property
    def is_warning(self) -> bool:
        return not self.success and self.severity == "warn"


def short(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple, set)):
        return "[" + ", ".join(short(v) for v in value) + "]"
    return str(value)

