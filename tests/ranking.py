"""Compare a ranked result list with an oracle's, allowing the orders of tied scores to differ.

Two engines may order points with equal scores (or scores equal up to float32 rounding)
differently, and a limit or offset may cut a run of tied points anywhere. So: scores must
match position by position; ids must match position by position where a score is not tied;
a run of tied scores inside the window must hold the same ids in any order; the last run
(which the limit may have cut) and, with an offset, the first are checked by score only.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


def _runs(scores: list[float], rel: float, abs_: float) -> list[range]:
    out: list[range] = []
    start = 0
    for i in range(1, len(scores) + 1):
        if i == len(scores) or scores[i] != pytest.approx(scores[i - 1], rel=rel, abs=abs_):
            out.append(range(start, i))
            start = i
    return out


def assert_same_ranking(got: list[Any], want: list[Any], *, offset: int = 0, rel: float = 1e-4,
                        abs: float = 1e-5) -> None:  # noqa: A002 - pytest.approx's name
    """``got``/``want``: objects with ``id`` and ``score`` (qdrant-client ScoredPoints)."""
    assert len(got) == len(want), ([p.id for p in got], [p.id for p in want])
    want_scores = [p.score for p in want]
    assert [p.score for p in got] == pytest.approx(want_scores, rel=rel, abs=abs)
    runs = _runs(want_scores, rel, abs)
    for n, run in enumerate(runs):
        if n == len(runs) - 1 or (n == 0 and offset):
            continue  # may be cut: tied with points outside the window
        g, w = [got[i].id for i in run], [want[i].id for i in run]
        assert sorted(map(str, g)) == sorted(map(str, w)), (run, [p.id for p in got],
                                                            [p.id for p in want])


def paired(got: list[Any], want: list[Any]) -> Iterator[tuple[Any, Any]]:
    """(hit, the oracle's hit with the same id), for the ids both returned: a point tied with
    one the oracle's limit cut has no partner (its score is checked by assert_same_ranking)."""
    oracle = {w.id: w for w in want}
    for g in got:
        if (w := oracle.get(g.id)) is not None:
            yield g, w
