"""Extents against a model: the plain set of bytes present."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from mkwfs.content.extents import Extents

SPACE = 64
ranges = st.lists(
    st.tuples(st.integers(0, SPACE), st.integers(0, SPACE)).map(lambda r: (min(r), max(r))),
    max_size=12,
)
spans = st.tuples(st.integers(0, SPACE), st.integers(0, SPACE)).map(lambda r: (min(r), max(r)))


def model(added: list[tuple[int, int]]) -> set[int]:
    return {b for s, e in added for b in range(s, e)}


def test_merging_examples() -> None:
    extents = Extents([(10, 20), (30, 40)])
    extents.add(20, 30)
    assert extents.ranges == [(10, 40)]
    extents.add(0, 5)
    extents.add(5, 5)
    assert extents.ranges == [(0, 5), (10, 40)]
    assert extents.total == 35
    assert extents.first_gap(0, 50) == (5, 10)
    assert extents.first_gap(12, 38) is None
    assert extents.first_gap(38, 50) == (40, 50)


@given(ranges)
def test_ranges_are_sorted_disjoint_and_exact(added: list[tuple[int, int]]) -> None:
    extents = Extents(added)
    result = extents.ranges
    for (_, e1), (s2, _) in pairwise(result):
        assert e1 < s2  # disjoint and not touching: touching ones merge
    assert all(s < e for s, e in result)
    assert model(result) == model(added)
    assert extents.total == len(model(added))


@given(ranges, spans)
def test_queries_agree_with_the_model(added: list[tuple[int, int]], span: tuple[int, int]) -> None:
    extents = Extents(added)
    present = model(added)
    start, end = span
    missing = [b for b in range(start, end) if b not in present]
    assert extents.covers(start, end) == (not missing)
    gap = extents.first_gap(start, end)
    if not missing:
        assert gap is None
    else:
        assert gap is not None
        gap_start, gap_end = gap
        assert gap_start == missing[0]
        assert all(b not in present for b in range(gap_start, gap_end))
        assert gap_end == end or gap_end in present
    for offset in range(SPACE + 1):
        until = extents.present_until(offset)
        assert all(b in present for b in range(offset, until))
        assert until not in present
        if offset not in present:
            nxt = extents.missing_until(offset, SPACE + 5)
            assert all(b not in present for b in range(offset, nxt))
            assert nxt == SPACE + 5 or nxt in present
            since = extents.missing_since(offset, 3)
            assert since == 3 or since - 1 in present
            assert since >= 3
            assert all(b not in present for b in range(since, offset + 1))
