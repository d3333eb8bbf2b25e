"""What a model YAML's top-level numeric keys accept (``ema:``, ``class_gain:``, ``o2m:``, ``bn_eps:`` ...).

YAML reads ``true``/``false`` as Python booleans, which are ints to ``isinstance``; a key that takes a number refuses
them, so ``class_gain: true`` fails with the key's message instead of training with gain 1.
"""

from __future__ import annotations

from typing import Any


def is_number(value: Any) -> bool:
    """An int or a float, not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_count(value: Any) -> bool:
    """An int >= 1, not a bool."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1
