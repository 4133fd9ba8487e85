"""Coalescing: calls made in the same moment by many records become one bulk call."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from twoway.kit.batching import Batcher

T = TypeVar("T")
R = TypeVar("R")


class Coalescer(Batcher[T, R]):
    """`submit(x)` waits for `bulk([x, ...])`, run once for everything submitted in the same turn of the loop
    (up to `limit` items a call; more make more calls at once).

    With `raise_errors`, a result that is an exception is raised to its own submitter only.
    """

    def __init__(self, bulk: Callable[[list[T]], Awaitable[list[R]]], *, raise_errors: bool = False,
                 limit: int = 200) -> None:
        super().__init__(bulk, size=limit, raise_errors=raise_errors, task_name="coalesce")
