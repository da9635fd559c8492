"""argparse ``type=`` converters shared by every ``cpm-lab`` command: a bad value becomes one
clear ``argparse`` error line naming what was expected."""
from __future__ import annotations

import argparse
import math


def _int_at_least(minimum: int, what: str):
    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {what}, got {value}")
        return value
    return convert


#: An integer >= 1.
positive_int = _int_at_least(1, "a positive integer")
#: An integer >= 0.
nonneg_int = _int_at_least(0, "an integer >= 0")


def key_value(text: str) -> tuple[str, object]:
    """``"name=value"`` -> (name, value); the value is read as JSON (numbers, true/false, null,
    quoted strings) and otherwise kept as a string."""
    import json

    name, sep, raw = text.partition("=")
    if not sep or not name.strip() or not raw.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, e.g. trunk_channels=32; got {text!r}")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw.strip()
    return name.strip(), value


def positive_float(text: str) -> float:
    """A finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return value
