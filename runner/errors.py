"""One small error hierarchy; the CLI maps each class to an exit code and one line of text."""

from __future__ import annotations

from pathlib import Path


class ArpuError(Exception):
    """Root of every error a user can cause or fix. `exit_code` is what the CLI returns."""

    exit_code = 1

    def __init__(self, message: str, *, location: str | None = None) -> None:
        self.message = message
        self.location = location
        super().__init__(f"{location}: {message}" if location else message)


class ConfigError(ArpuError):
    """`arpu.yml`, a model header, vars or a selector is wrong (exit 2)."""

    exit_code = 2


class UsageError(ArpuError):
    """The command line asks for something impossible (exit 2)."""

    exit_code = 2


class CompileError(ArpuError):
    """A model does not render or parse; carries the model file, line, column and snippet."""

    def __init__(
        self,
        message: str,
        *,
        path: Path | str,
        line: int | None = None,
        column: int | None = None,
        snippet: str | None = None,
    ) -> None:
        location = str(path)
        if line is not None:
            location += f":{line}"
            if column is not None:
                location += f":{column}"
        self.snippet = snippet
        super().__init__(message, location=location)


class ExecutionError(ArpuError):
    """The warehouse rejected a model's compiled SQL; names the model and the compiled file."""

    def __init__(
        self, message: str, *, model: str, compiled_path: Path | str | None = None
    ) -> None:
        self.model = model
        where = f"model {model}" + (f" ({compiled_path})" if compiled_path else "")
        super().__init__(message, location=where)


class IngestError(ArpuError):
    """A whole input file cannot be read (missing, unreadable); bad lines never raise."""

    exit_code = 2


# optional dependencies: the module a target imports -> the extra that installs it
EXTRAS = {"psycopg": "postgres", "psycopg_binary": "postgres", "pyspark": "spark",
          "py4j": "spark"}
ALSO_NEEDS = {"spark": " (and Java 17)"}  # what an extra needs beside its packages


def missing_extra(exc: ModuleNotFoundError) -> UsageError | None:
    """A target's optional dependency is not installed: say which extra installs it."""
    module = (exc.name or "").split(".")[0]
    extra = EXTRAS.get(module)
    if extra is None:
        return None
    also = ALSO_NEEDS.get(extra, "")
    return UsageError(f"the {extra} target needs {module}, which is not installed: "
                      f"pip install 'arpu[{extra}]'{also}")
