"""argparse types the tools share (stdlib only, Python 3.9+): numbers that must be 0 or more."""

from __future__ import annotations

import argparse
import math
from typing import Callable, Union

Number = Union[int, float]


def non_negative(kind: Callable[[str], Number]) -> Callable[[str], Number]:
    """An argparse type: the text read as ``kind`` (int or float), finite and 0 or more."""
    whole = kind is int

    def parse(text: str) -> Number:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a {'whole ' if whole else ''}number: {text!r}") from None
        if not math.isfinite(value) or value < 0:
            raise argparse.ArgumentTypeError(f"must be {'' if whole else 'a finite number, '}0 or more: {text}")
        return value

    return parse
