"""Table-driven tests of the three-way merge of one record."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from twoway.sync.merge import Conflict, merge

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
EARLIER, LATER = T0, T0 + timedelta(seconds=5)
BASE = {"name": "Ann", "email": "ann@x.io"}


@pytest.mark.parametrize(("case", "ours", "theirs", "merged"), [
    ("nothing changed", BASE, BASE, BASE),
    ("only theirs changed", BASE, {**BASE, "name": "Anna"}, {**BASE, "name": "Anna"}),
    ("only ours changed", {**BASE, "email": "a@y.io"}, BASE, {**BASE, "email": "a@y.io"}),
    ("both changed to the same", {**BASE, "name": "Anna"}, {**BASE, "name": "Anna"}, {**BASE, "name": "Anna"}),
    ("different fields on each side", {**BASE, "name": "Anna"}, {**BASE, "email": "a@y.io"},
     {"name": "Anna", "email": "a@y.io"}),
])
def test_merge_without_conflict(case: str, ours: dict, theirs: dict, merged: dict) -> None:
    result = merge(BASE, ours, theirs, ours_changed_at=EARLIER, theirs_changed_at=LATER)
    assert result.merged == merged, case
    assert result.conflicts == [], case


@pytest.mark.parametrize(("policy", "ours_at", "theirs_at", "winner"), [
    ("newer_wins", LATER, EARLIER, "ours"),
    ("newer_wins", EARLIER, LATER, "theirs"),
    ("newer_wins", T0, T0, "theirs"),  # a tie goes to theirs
    ("newer_wins", None, LATER, "theirs"),
    ("newer_wins", LATER, None, "ours"),
    ("newer_wins", None, None, "theirs"),
    ("ours_wins", EARLIER, LATER, "ours"),
    ("theirs_wins", LATER, EARLIER, "theirs"),
])
def test_conflict_is_resolved_by_policy(policy: str, ours_at: datetime | None, theirs_at: datetime | None,
                                        winner: str) -> None:
    result = merge(BASE, {**BASE, "name": "Ours"}, {**BASE, "name": "Theirs"},
                   ours_changed_at=ours_at, theirs_changed_at=theirs_at, policy=policy)  # type: ignore[arg-type]
    expected = "Ours" if winner == "ours" else "Theirs"
    assert result.merged == {**BASE, "name": expected}
    assert result.conflicts == [Conflict("name", "Ann", "Ours", "Theirs", winner)]  # type: ignore[arg-type]


def test_missing_base_treats_every_difference_as_a_conflict() -> None:
    result = merge({}, {"name": "Ours", "email": "same@x.io"}, {"name": "Theirs", "email": "same@x.io"},
                   ours_changed_at=LATER, theirs_changed_at=EARLIER)
    assert result.merged == {"name": "Ours", "email": "same@x.io"}
    assert [c.field for c in result.conflicts] == ["name"]
    assert result.conflicts[0].base is None


def test_a_field_missing_on_one_side_reads_as_empty() -> None:
    result = merge({"name": "Ann", "email": ""}, {"name": "Ann"}, {"name": "Ann", "email": "new@x.io"})
    assert result.merged == {"name": "Ann", "email": "new@x.io"}


def test_changes_for_ours_lists_only_what_differs() -> None:
    ours = {**BASE, "name": "Anna"}
    result = merge(BASE, ours, {**BASE, "email": "a@y.io"})
    assert result.changes_for_ours(ours) == {"email": "a@y.io"}


def test_conflicts_are_independent_per_field() -> None:
    result = merge(BASE, {"name": "O1", "email": "o@x.io"}, {"name": "T1", "email": "ann@x.io"},
                   ours_changed_at=EARLIER, theirs_changed_at=LATER)
    assert result.merged == {"name": "T1", "email": "o@x.io"}
    assert [c.field for c in result.conflicts] == ["name"]
