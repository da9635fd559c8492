"""Claims a tutorial's prose makes, checked on the numbers the tutorial computed.

A notebook calls :func:`claim` right after the cell whose numbers back a sentence of its prose:

    claim("stage3_beats_stage1", "the last stage beats stage 1 at PCK@0.1", last > first,
          f"{first:.3f} -> {last:.3f}")

It prints one line, ``✓ holds: ...`` or ``✗ does NOT hold in this run: ...`` with the evidence,
so a learner sees the number beside the sentence, and records the result in :data:`CLAIMS`.
The test suite runs every notebook in its quick mode and requires each of its claims to be
recorded and to hold, so a change that breaks a notebook's story fails ``make test``. With other
settings (``QUICK = False``, another seed, your own model) a claim may not hold; the notebook
says so and carries on.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Claim:
    """One checked sentence: its ``key``, the ``text`` as the prose states it, whether it
    ``holds`` for the numbers of this run, and the ``evidence`` (those numbers, as text)."""

    key: str
    text: str
    holds: bool
    evidence: str = ""

    def __str__(self) -> str:
        verdict = "✓ holds" if self.holds else "✗ does NOT hold in this run"
        return f"{verdict}: {self.text}" + (f" ({self.evidence})" if self.evidence else "")


#: Claims recorded in this Python process, by key (re-running a cell replaces its claim).
CLAIMS: dict[str, Claim] = {}


def claim(key: str, text: str, holds, evidence: str = "") -> None:
    """Record (in :data:`CLAIMS`, as a :class:`Claim`) and print whether the sentence ``text``
    holds (``holds``, anything truthy) for this run's numbers (``evidence``). Never raises on a
    failed claim, and returns nothing, so a cell may end with it without echoing a value."""
    c = Claim(str(key), str(text), bool(holds), str(evidence))
    CLAIMS[c.key] = c
    print(c)


def recorded() -> list[dict]:
    """The recorded claims as plain dicts (for the test suite and for saving)."""
    return [asdict(c) for c in CLAIMS.values()]


def exceeds(a: float, b: float, n: int, z: float = 2.0) -> bool:
    """Whether the proportion ``a`` exceeds ``b`` by more than ``z`` standard errors of their
    difference, each a share of ``n`` counted items (joints, people): the rule notebooks use for
    "better than", so that a difference within sampling error is never called one. The binomial
    error of two independent shares is used; for paired shares (the same joints at two stages)
    it is conservative."""
    se = math.sqrt(max(a * (1 - a), 1e-12) / n + max(b * (1 - b), 1e-12) / n)
    return a - b > z * se


def indistinguishable(a: float, b: float, n: int, z: float = 2.0) -> bool:
    """Whether neither share ``exceeds`` the other: the test behind "no measurable change"."""
    return not exceeds(a, b, n, z) and not exceeds(b, a, n, z)
