"""Which node each DB and strategy worker runs on: chosen when it is created, kept after.

A worker's store is on its node's disk (``--state`` is node-local), so the worker is pinned
there (``actors.options``: Ray's node affinity, not soft) and Ray restarts it there.  The
placement is the coordinator's, durable in ``STATE/placement.json``; it changes only for a
worker created anew — a new worker of a rescale, or one whose node is gone, which then starts
from the crawl's last checkpoint (``raycrawl.storage.checkpoints``).

**Which nodes.**  If some nodes offer the custom resource :data:`STATE_RESOURCE` (the
*stateful* node group of a cluster, whose nodes the autoscaler never removes), the workers go
only there; otherwise on any live node.  They are spread evenly, the DB and the strategy
workers each on their own as far as there are nodes, a new one on the node that holds the
fewest.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

PLACEMENT = "placement.json"
STATE_RESOURCE = "raycrawl_state"  # a node group that may hold stores (`ray start --resources`)


@dataclass(frozen=True, slots=True)
class Node:
    node_id: str
    ip: str
    alive: bool
    stateful: bool = False  # offers STATE_RESOURCE


def eligible(nodes: Iterable[Node]) -> list[Node]:
    """The live nodes workers may be placed on: the stateful ones if there are any."""
    alive = [n for n in nodes if n.alive]
    return [n for n in alive if n.stateful] or alive


def place(workers: Iterable[str], nodes: Iterable[Node],
          current: Mapping[str, str]) -> dict[str, str]:
    """``worker -> node id`` for ``workers``: each keeps its node while that node is alive and
    eligible; the others go, in order, to the node holding the fewest workers (of their role
    first: ``db-worker-…`` and ``strategy-worker-…`` are spread each on its own).
    :class:`RuntimeError` when no node is eligible."""
    candidates = eligible(nodes)
    if not candidates:
        raise RuntimeError("no live node to place the crawl's workers on")
    ids = [n.node_id for n in candidates]
    placed = {w: current[w] for w in workers if current.get(w) in ids}
    by_node: Counter[str] = Counter(placed.values())
    by_role: Counter[tuple[str, str]] = Counter((_role(w), n) for w, n in placed.items())
    for worker in workers:
        if worker in placed:
            continue
        node = min(ids, key=lambda i: (by_role[(_role(worker), i)], by_node[i]))
        placed[worker] = node
        by_node[node] += 1
        by_role[(_role(worker), node)] += 1
    return placed


def _role(worker: str) -> str:
    return worker.rsplit("-", 1)[0]
