"""A query budget: images a run may send its model, counted across resumes.

The search's driver owns it (it knows, before a generation, how many images the generation
will send): one counter for the whole run, however many processes send the requests, so the
budget is global across Ray scorer actors by construction. The count is stored in every
checkpoint and continued by ``--resume``; the run folder's ledger
(:mod:`fooling.evo.store.queries`) adds what generations after the last checkpoint sent.
"""

from __future__ import annotations

__all__ = ["QueryBudget"]


class QueryBudget:
    """Images sent so far and the most that may be.

    Args:
        limit: the most images in all (``None``: no limit).
        spent: images already sent (by the run before a resume).

    Raises:
        ValueError: a negative count, or a limit below 1 (the run's config checks it first).
    """

    def __init__(self, limit: int | None, spent: int = 0) -> None:
        if spent < 0 or (limit is not None and limit < 1):
            raise ValueError(f"a query budget of {limit} with {spent} spent")
        self.limit = limit
        self.spent = spent

    def allows(self, images: int) -> bool:
        """Whether ``images`` more may be sent."""
        return self.limit is None or self.spent + images <= self.limit

    def spend(self, images: int) -> None:
        """Count ``images`` sent.

        Raises:
            ValueError: more than :meth:`allows` (a bug: the caller checks first).
        """
        if not self.allows(images):
            raise ValueError(f"{images} images over the budget ({self.spent} of {self.limit} spent)")
        self.spent += images

    def __repr__(self) -> str:
        return f"QueryBudget(spent={self.spent}, limit={self.limit})"
