"""``Score``: a metric value that remembers why it is NaN.

Plugins' metric functions return it so that a batch evaluation can record why a value is
undefined (a silent reference, a single class, too few members) instead of crashing or losing
the reason. This module imports only the standard library.
"""

from __future__ import annotations

import math

__all__ = ["Score"]


class Score(float):
    """A metric value that remembers why it is NaN.

    Behaves as a plain ``float`` everywhere (arithmetic, formatting, comparisons, JSON);
    ``reason`` is ``None`` for a defined value and a short explanation when the metric is
    undefined for its input (the value is then NaN).
    """

    __slots__ = ("reason",)

    def __new__(cls, value: float, reason: str | None = None) -> Score:
        self = super().__new__(cls, value)
        self.reason = reason
        return self

    @classmethod
    def undefined(cls, reason: str) -> Score:
        """A NaN score with its reason."""
        return cls(math.nan, reason)

    def __repr__(self) -> str:
        value = float.__repr__(self)
        return value if self.reason is None else f"Score({value}, reason={self.reason!r})"

    __str__ = float.__repr__

    def __reduce__(self):  # __slots__ on a float subclass needs this to pickle the reason too
        return (type(self), (float(self), self.reason))
