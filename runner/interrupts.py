"""Whether a Ctrl-C may still stop the command. Once a build has published (its relations are
the ones BI tools read now), it runs to its end: the CLI's Ctrl-C handler (runner/cli.py) lets
it, since stopping then could only report `Interrupted` for a build that published (a second
Ctrl-C still ends the process at once, as a kill would). A Ctrl-C before that point abandons the
build and leaves the published relations as they were. Only the CLI reads it."""

from __future__ import annotations

import threading

_published = threading.Event()


def building() -> None:
    """A build starts: until it publishes, a Ctrl-C stops it."""
    _published.clear()


def published() -> None:
    """The build's relations are published: from here the command runs to its end."""
    _published.set()


def past_publish() -> bool:
    return _published.is_set()
