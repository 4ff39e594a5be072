"""An independent, plain-Python implementation of SPEC.md sections 1 and 2.

It shares no code with `runner/` or `models/`: it exists so that tests can compare the product's
relations with numbers computed a second, simpler way.
"""

from .spec_impl import compute

__all__ = ["compute"]
