"""``experiments.stats``: paired intervals over seeds and the "reproduced" / "not established"
verdict, on hand-made paired data with known answers."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from cpm_lab.experiments.stats import compare_paired, interval, paired_values


def test_t_interval_matches_the_textbook_formula():
    d = np.array([0.02, 0.05, 0.01, 0.04, 0.03])
    mean, low, high = interval(d)
    half = sps.t.ppf(0.975, 4) * d.std(ddof=1) / math.sqrt(5)  # t_{0.975,4} = 2.776
    assert mean == pytest.approx(0.03) and low == pytest.approx(0.03 - half) and high == pytest.approx(0.03 + half)
    assert half == pytest.approx(2.7764451 * 0.0158113883 / math.sqrt(5), rel=1e-6)


def test_a_consistent_gain_in_every_seed_is_reproduced():
    base = np.array([0.50, 0.61, 0.55, 0.47, 0.58, 0.52])
    c = compare_paired(base + [0.03, 0.05, 0.02, 0.04, 0.03, 0.04], base)
    assert c.reproduced and c.verdict == "reproduced" and c.low > 0 and c.wins == 6 and c.n == 6
    assert c.text().startswith("+0.035 [+") and "95% t interval, 6/6 seeds" in c.text()


def test_a_tie_is_not_established():
    a = [0.80, 0.70, 0.75, 0.72, 0.78]
    b = [0.70, 0.80, 0.75, 0.78, 0.72]
    c = compare_paired(a, b)
    assert c.mean == pytest.approx(0.0) and c.low < 0 < c.high
    assert c.verdict == "not established" and "includes zero" in c.why and not c.reproduced


def test_a_reversal_and_too_few_seeds_are_not_established():
    rev = compare_paired([0.1, 0.2, 0.15, 0.12, 0.18], [0.3, 0.35, 0.32, 0.31, 0.36])
    assert rev.verdict == "not established" and "OTHER side" in rev.why
    assert compare_paired([0.3, 0.35, 0.32, 0.31, 0.36], [0.1, 0.2, 0.15, 0.12, 0.18], direction="less").why == rev.why
    few = compare_paired([0.9, 0.91, 0.92], [0.1, 0.11, 0.1])  # huge gap, but 3 seeds
    assert few.low > 0 and few.verdict == "not established" and "only 3 paired seed(s)" in few.why
    assert compare_paired([0.9, 0.91, 0.92], [0.1, 0.11, 0.1], min_seeds=3).reproduced


def test_pairing_is_by_seed_for_series():
    a = pd.Series([0.5, 0.6, 0.7, np.nan], index=[3, 1, 2, 0])
    b = pd.Series([0.4, 0.45, 0.65, 0.1, 0.2], index=[1, 3, 2, 0, 9])
    np.testing.assert_allclose(sorted(paired_values(a, b)), sorted([0.5 - 0.45, 0.6 - 0.4, 0.7 - 0.65]))
    with pytest.raises(ValueError, match="one length"):
        paired_values([1, 2], [1, 2, 3])


def test_bootstrap_is_seeded_and_close_to_t_for_many_seeds():
    rng = np.random.default_rng(1)
    d = rng.normal(0.02, 0.01, 40)
    m1, lo1, hi1 = interval(d, method="bootstrap", seed=3)
    assert (m1, lo1, hi1) == interval(d, method="bootstrap", seed=3)
    _, lo_t, hi_t = interval(d)
    assert abs(lo1 - lo_t) < 0.002 and abs(hi1 - hi_t) < 0.002
    with pytest.raises(ValueError, match="method"):
        interval(d, method="jackknife")
