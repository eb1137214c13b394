"""The ``max_pages`` budget, exact under every fault: allowances held by the DB workers.

Each DB worker holds an *allowance* in its own store: how many of its URLs may hold budget, a
URL holding it from its lease until it is done (a retry queued again gives it back).  A cut
takes at most ``allowance - held`` URLs, where ``held`` is the worker's URLs done plus leased:
both durable counts of its queue.  No call is made per batch, and nothing in flight can be
lost with a process.

The coordinator moves budget between workers with :class:`BudgetPlanner`, from the
allowances the workers report: it grows the allowance of a worker that has work queued and
little allowance left, and shrinks to what it holds the allowance of a worker with nothing
queued; a shrink never goes below what the worker holds when it applies it.  It only ever
hands out what no worker is allowed (``max_pages`` minus the sum of the allowances), and a
shrink is applied before the budget it frees is handed out again, so the allowances never sum
to more than ``max_pages``.  A grow carries an id: applied twice (a call Ray repeated after the
worker restarted), it counts once.  The coordinator keeps nothing: a restarted one reads the
allowances again.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgpack

from raycrawl.storage.store import Store

_KEY = b"a"  # a -> (allowance, id of the last grow applied)


class Allowance:
    """A DB worker's share of the page budget, durable in its store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        raw = store.get(_KEY)
        value, grant = msgpack.unpackb(raw) if raw else (0, "")
        self.value, self.last_grant = int(value), str(grant)

    def _save(self, value: int, grant: str) -> None:
        wb = self.store.batch()
        wb.put(_KEY, msgpack.packb((value, grant)))
        self.store.write(wb)
        self.value, self.last_grant = value, grant

    def grow(self, amount: int, grant: str) -> int:
        """Add ``amount`` unless grow ``grant`` was applied already; durable on return.
        Returns the allowance."""
        if grant != self.last_grant:
            self._save(self.value + amount, grant)
        return self.value

    def shrink(self, to: int, held: int) -> int:
        """Lower the allowance to ``to``, never below ``held``; durable on return.  Returns
        the allowance."""
        target = max(to, held)
        if target < self.value:
            self._save(target, self.last_grant)
        return self.value


@dataclass(frozen=True, slots=True)
class Move:
    """One change of a worker's allowance: grow by ``amount`` or shrink to ``to``."""

    worker: int
    amount: int = 0  # > 0: a grow
    to: int | None = None  # not None: a shrink


@dataclass(frozen=True, slots=True)
class Share:
    """What the planner needs to know of one DB worker."""

    allowance: int
    held: int  # URLs done or leased
    queued: int
    in_flight: int


class BudgetPlanner:
    """Decides the next allowance moves from the workers' shares (pure)."""

    def __init__(self, max_pages: int, step: int) -> None:
        self.max_pages = max_pages
        self.step = step  # a grow gives this much (two batches), the last of the budget less

    def unassigned(self, shares: list[Share]) -> int:
        return self.max_pages - sum(s.allowance for s in shares)

    def left(self, shares: list[Share]) -> int:
        """Page fetches not yet made or in progress."""
        return self.max_pages - sum(s.held for s in shares)

    def plan(self, shares: list[Share]) -> list[Move]:
        """Shrinks first (they free budget only once applied: the planner sees it on the next
        pass), then grows from what no worker is allowed."""
        moves: list[Move] = []
        free = self.unassigned(shares)
        hungry = [i for i, s in enumerate(shares)
                  if s.queued > 0 and s.allowance - s.held < self.step // 2]
        for i, s in enumerate(shares):
            if s.queued == 0 and s.in_flight == 0 and s.allowance > s.held:
                moves.append(Move(i, to=s.held))
        for i in hungry:
            amount = min(self.step, free)
            if amount <= 0:
                break
            moves.append(Move(i, amount=amount))
            free -= amount
        return moves
