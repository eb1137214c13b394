"""Which node each worker runs on (raycrawl.coordinator.placement), without Ray."""

import pytest

from raycrawl.coordinator.placement import Node, place

WORKERS = ["strategy-worker-0", "strategy-worker-1", "db-worker-0", "db-worker-1"]


def test_workers_are_spread_each_role_on_its_own_and_keep_their_node():
    nodes = [Node("a", "10.0.0.1", True), Node("b", "10.0.0.2", True)]
    placed = place(WORKERS, nodes, {})
    assert sorted(placed[w] for w in WORKERS[:2]) == ["a", "b"]
    assert sorted(placed[w] for w in WORKERS[2:]) == ["a", "b"]
    third = place([*WORKERS, "db-worker-2"], [*nodes, Node("c", "10.0.0.3", True)], placed)
    assert {w: third[w] for w in WORKERS} == placed  # nobody moves
    assert third["db-worker-2"] == "c"  # the node holding fewest


def test_a_worker_of_a_dead_node_goes_to_a_live_one_and_only_it_moves():
    nodes = [Node("a", "", True), Node("b", "", True), Node("c", "", True)]
    placed = place(WORKERS, nodes, {})
    lost = placed["db-worker-1"]
    nodes = [n if n.node_id != lost else Node(lost, "", False) for n in nodes]
    again = place(WORKERS, nodes, placed)
    assert again["db-worker-1"] != lost
    assert {w: n for w, n in again.items() if w != "db-worker-1"} == {
        w: n for w, n in placed.items() if w != "db-worker-1" and n != lost} | {
        w: again[w] for w, n in placed.items() if n == lost and w != "db-worker-1"}
    assert all(n != lost for n in again.values())


def test_only_the_stateful_group_holds_workers_when_there_is_one():
    nodes = [Node("head", "", True), Node("s1", "", True, stateful=True),
             Node("fetch", "", True), Node("s2", "", True, stateful=True)]
    assert set(place(WORKERS, nodes, {}).values()) == {"s1", "s2"}
    with pytest.raises(RuntimeError, match="no live node"):
        place(WORKERS, [Node("a", "", False)], {})
