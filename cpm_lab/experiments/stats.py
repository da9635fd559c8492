"""Paired comparisons over seeds, and the verdict a claim gets from them.

Runs with the same seed share their initial weights and training images under every strategy,
so two strategies are compared seed by seed: the differences ``d_i = a_i - b_i`` and an interval
for their mean. A claim in the paper's direction (``a > b``) is **"reproduced"** only when the
whole interval lies above zero and at least ``MIN_SEEDS`` seeds were paired; anything else (an
interval that straddles zero, one on the wrong side, too few seeds) is **"not established"**.
A tie is never a success.

Intervals (``method``):

* ``"t"`` (default): ``mean(d) ± t_{(1+c)/2, n-1} * sd(d) / sqrt(n)``, Student's t interval of
  the mean difference; it assumes the differences are roughly normal, and with 5-10 seeds it is
  the honest choice (the bootstrap's percentiles are too narrow for so few values).
* ``"bootstrap"``: the percentile interval of the mean over ``n_boot`` resamples of the
  differences (with replacement, a seeded generator), for many seeds or skewed differences.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

#: The fewest paired seeds a claim can be "reproduced" on.
MIN_SEEDS = 5
REPRODUCED, NOT_ESTABLISHED = "reproduced", "not established"
METHODS = ("t", "bootstrap")


@dataclass(frozen=True)
class PairedDifference:
    """The mean of paired differences a - b with its interval, and the verdict for "a > b"
    (or "a < b", ``direction``).

    Attributes:
        mean, low, high: mean difference and its ``confidence`` interval (nan below 2 seeds).
        n: paired seeds; wins: seeds where the difference has the claimed sign.
        verdict: ``"reproduced"`` or ``"not established"``; why: one line saying why.
    """

    mean: float
    low: float
    high: float
    n: int
    wins: int
    confidence: float
    method: str
    direction: str
    verdict: str
    why: str

    @property
    def reproduced(self) -> bool:
        return self.verdict == REPRODUCED

    def text(self, digits: int = 3) -> str:
        """E.g. ``"+0.031 [+0.012, +0.050] (95% t interval, 5/5 seeds)"``."""
        f = f"{{:+.{digits}f}}"
        interval = f"[{f.format(self.low)}, {f.format(self.high)}]" if math.isfinite(self.low) else "[n/a]"
        return (f"{f.format(self.mean)} {interval} ({self.confidence:.0%} {self.method} interval, "
                f"{self.wins}/{self.n} seeds)")


def paired_values(a, b) -> np.ndarray:
    """The differences a - b, paired by index when both are pandas Series (seeds missing from
    either side, or NaN, are dropped), else by position."""
    if isinstance(a, pd.Series) and isinstance(b, pd.Series):
        d = (a - b).dropna()
        return d.to_numpy(dtype=float)
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired values must be two 1-D sequences of one length; got shapes {a.shape} and {b.shape}")
    d = a - b
    return d[np.isfinite(d)]


def interval(d: Sequence[float], confidence: float = 0.95, method: str = "t", n_boot: int = 10_000,
             seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high) of the mean of ``d`` (module docstring); low = high = nan below 2 values."""
    from scipy import stats

    if method not in METHODS:
        raise ValueError(f"unknown interval method {method!r}; choose one of {METHODS}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    d = np.asarray(d, dtype=float)
    mean = float(d.mean()) if len(d) else float("nan")
    if len(d) < 2:
        return mean, float("nan"), float("nan")
    if method == "t":
        half = stats.t.ppf((1 + confidence) / 2, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
        return mean, mean - float(half), mean + float(half)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(1)
    lo, hi = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
    return mean, float(lo), float(hi)


def compare_paired(a, b, direction: str = "greater", confidence: float = 0.95, method: str = "t",
                   min_seeds: int = MIN_SEEDS, n_boot: int = 10_000, seed: int = 0) -> PairedDifference:
    """Is ``a`` greater (``direction="greater"``) or less (``"less"``) than ``b``, seed by seed?

    ``a`` and ``b`` are per-seed values (Series indexed by seed, or sequences in seed order).
    "reproduced" needs at least ``min_seeds`` pairs and an interval entirely on the claimed side
    of zero.
    """
    if direction not in ("greater", "less"):
        raise ValueError(f"direction must be 'greater' or 'less', got {direction!r}")
    d = paired_values(a, b)
    mean, low, high = interval(d, confidence, method, n_boot, seed)
    sign = 1 if direction == "greater" else -1
    wins = int((sign * d > 0).sum())
    side = "above" if sign > 0 else "below"
    if len(d) < min_seeds:
        verdict, why = NOT_ESTABLISHED, f"only {len(d)} paired seed(s); at least {min_seeds} are needed"
    elif (low > 0) if sign > 0 else (high < 0):
        verdict, why = REPRODUCED, f"the {confidence:.0%} interval lies {side} zero"
    elif (high < 0) if sign > 0 else (low > 0):
        verdict, why = NOT_ESTABLISHED, f"the {confidence:.0%} interval lies on the OTHER side of zero: reversed"
    else:
        verdict, why = NOT_ESTABLISHED, f"the {confidence:.0%} interval includes zero: a tie within seed noise"
    return PairedDifference(mean, low, high, len(d), wins, confidence, method, direction, verdict, why)
