"""The coordinator's decisions without Ray: restart, budget, finish, status."""

import json

from raycrawl.api import read_out_status, read_status
from raycrawl.config import CrawlConfig
from raycrawl.coordinator.budget import Allowance, BudgetPlanner, Move, Share
from raycrawl.coordinator.control import CrawlControl
from raycrawl.coordinator.phases import Phase, Verdict
from raycrawl.coordinator.reports import CrawlStatus, DBWorkerReport, StrategyWorkerReport
from raycrawl.storage.assignment import Role, read_assignment


def config(tmp_path, **kw):
    return CrawlConfig(out=str(tmp_path / "out"), crawl_id="c1", **kw)


def idle(activity=1, queued=0, running=True, **kw):
    return DBWorkerReport(queued=queued, queued_at_gate=queued, activity=activity,
                          running=running, **kw)


def test_a_restarted_coordinator_adopts_the_phase(tmp_path):
    cfg = config(tmp_path, max_pages=10)
    first = CrawlControl(cfg, generation=1)
    assert not first.adopted and first.phase is Phase.STARTING
    manifest = json.loads((tmp_path / "out" / "state" / "manifest.json").read_text())
    assert manifest["generation"] == 1
    assert not (tmp_path / "out" / "_crawl").exists()  # the state is in OUT/state already
    assignment = read_assignment(str(tmp_path / "out" / "state"))
    assert assignment.epoch == 1 and assignment.workers == {Role.DB: 1, Role.STRATEGY: 1}
    first.set_phase(Phase.RUNNING)
    again = CrawlControl(cfg, generation=1)  # Ray restarted it: same generation
    assert again.adopted and again.phase is Phase.RUNNING
    again.set_phase(Phase.STOPPED)
    again.renew_lease()  # ended: the lease is let go, a resume need not wait for it
    resumed = CrawlControl(cfg, generation=2)  # a resume is a new generation
    assert not resumed.adopted and resumed.phase is Phase.STARTING


def test_the_planner_never_allows_more_than_max_pages():
    planner = BudgetPlanner(max_pages=300, step=256)
    shares = [Share(0, 0, queued=50, in_flight=0), Share(0, 0, queued=900, in_flight=0)]
    moves = planner.plan(shares)
    assert moves == [Move(0, amount=256), Move(1, amount=44)]  # first come, the rest after
    shares = [Share(256, 50, queued=0, in_flight=0), Share(44, 44, queued=800, in_flight=1)]
    # worker 0 ran out of work: shrunk to what it holds; its spare is handed out once the
    # shrink shows in its report, never in the same pass
    assert planner.plan(shares) == [Move(0, to=50)]
    shares = [Share(50, 50, 0, 0), Share(44, 44, 800, 1)]
    assert planner.plan(shares) == [Move(1, amount=206)]
    assert planner.left([Share(50, 50, 0, 0), Share(250, 120, 5, 1)]) == 130


def test_an_allowance_is_durable_idempotent_per_grant_and_never_below_held(store):
    a = Allowance(store)
    assert a.grow(100, "g1") == 100 and a.grow(100, "g1") == 100  # repeated: counted once
    assert a.grow(50, "g2") == 150
    assert a.shrink(10, held=40) == 40  # never below what its URLs hold
    assert Allowance(store).value == 40 and Allowance(store).last_grant == "g2"


def test_step_restarts_stopped_loops_and_finishes_on_two_quiet_snapshots(tmp_path):
    control = CrawlControl(config(tmp_path))
    control.set_phase(Phase.RUNNING)
    sw = (StrategyWorkerReport(),)
    status = control.status((idle(5), idle(7, running=False)), sw)
    step = control.step(status, controls_pending=0)
    assert step.restart == (1,) and step.verdict is Verdict.CONTINUE and step.end is None
    step = control.step(control.status((idle(5), idle(7)), sw), controls_pending=0)
    assert step.restart == () and step.end == (Phase.FINISHED, "no work left")


def test_nothing_happens_unless_running(tmp_path):
    control = CrawlControl(config(tmp_path))
    control.set_phase(Phase.PAUSED)
    status = control.status((idle(running=False),), (StrategyWorkerReport(),))
    for _ in range(3):
        step = control.step(status, 0)
        assert step.restart == () and step.end is None


def test_restarted_while_draining_ends_the_way_it_was_ending(tmp_path):
    cfg = config(tmp_path)
    control = CrawlControl(cfg)
    control.set_phase(Phase.RUNNING)
    control.begin_end(Phase.FINISHED, "max pages reached")
    again = CrawlControl(cfg)  # died while the DB workers drained
    assert again.phase is Phase.STOPPING
    step = again.step(again.status((idle(),), (StrategyWorkerReport(),)), 0)
    assert step.end == (Phase.FINISHED, "max pages reached")


def test_status_sums_the_workers_and_round_trips_through_the_status_file(tmp_path):
    cfg = config(tmp_path)
    control = CrawlControl(cfg)
    db = (idle(done_total=3, errors=1, error_kinds={"timeout": 1}, in_flight=1),
          idle(done_total=4, errors=2, error_kinds={"timeout": 1, "robots": 1}, queued=5))
    status = control.status(db, (StrategyWorkerReport(pages_crawled=7),), force_write=True)
    assert (status.fetched, status.errors, status.queued, status.in_flight_batches) == (
        7, 3, 5, 1)
    assert status.error_kinds == {"timeout": 2, "robots": 1}
    assert status["fetched"] == 7 and status.get("phase") == "starting"  # reads as a mapping
    back = read_status(cfg.state_dir)
    assert isinstance(back, CrawlStatus) and back == status
    assert back.db_workers[1]["queued"] == 5 and back.strategy_workers[0].pages_crawled == 7


def test_a_storage_error_ends_the_crawl_naming_the_store(tmp_path):
    control = CrawlControl(config(tmp_path))
    control.set_phase(Phase.RUNNING)
    broken = idle(storage_error="store /s/db-worker-1: write failed: IO error: No space")
    step = control.step(control.status((idle(), broken), (StrategyWorkerReport(),)), 0)
    assert step.end == (Phase.FAILED, "storage error: store /s/db-worker-1: write failed: "
                                      "IO error: No space")
    sw = StrategyWorkerReport(storage_error="store /s/strategy-worker-0: write failed: x")
    step = control.step(control.status((idle(),), (sw,)), 0)
    assert step.end is not None and "strategy-worker-0" in step.end[1]


def test_a_stall_is_found_after_stall_s_logged_and_counted_once(tmp_path):
    clock = [1000.0]
    control = CrawlControl(config(tmp_path), clock=lambda: clock[0])
    control.set_phase(Phase.RUNNING)
    sw = (StrategyWorkerReport(),)

    def step(**reasons):
        worker = idle(queued=sum(reasons.values()), activity=int(clock[0]),
                      queued_by_reason=reasons)
        return control.step(control.status((worker,), sw), 0)

    assert step(politeness=3, ready=2).stall == ""  # a delay will pass: no stall
    clock[0] += 30
    assert step(politeness=3).stall == ""
    assert step(ready=2, parked=1).stall == ""  # it begins
    clock[0] += 9
    assert step(ready=2, parked=1).stall == ""
    clock[0] += 2
    stall = step(ready=2, parked=1).stall
    assert stall == "stalled for 10 s: 3 URLs queued (parked 1, ready 2), nothing in flight"
    clock[0] += 20
    assert step(ready=2, parked=1).stall == ""  # counted once
    assert control.status((idle(),), sw).stalls == 1
    assert step(paused=2).stall == ""  # a paused worker waits on purpose


def test_the_state_files_are_copied_to_out_and_a_failed_copy_does_not_end_the_crawl(tmp_path):
    """With the state folder elsewhere than OUT/state (an OUT on object storage, say), the
    manifest, phase and status are copied to OUT/_crawl for readers on any machine; a copy
    that fails is written again with the next change, and the crawl goes on."""
    cfg = config(tmp_path, state=str(tmp_path / "state"))
    control = CrawlControl(cfg)
    control.set_phase(Phase.RUNNING)
    control.status((idle(),), (StrategyWorkerReport(),), force_write=True)
    copy = tmp_path / "out" / "_crawl"
    assert json.loads((copy / "manifest.json").read_text())["config"]["state"] == cfg.state
    assert json.loads((copy / "coordinator.json").read_text())["phase"] == "running"
    assert read_out_status(str(tmp_path / "out")).phase is Phase.RUNNING
    for name in ("manifest.json", "coordinator.json", "status.json"):
        (copy / name).unlink()
    copy.rmdir()
    copy.write_text("not a folder")  # every copy now fails
    control.set_phase(Phase.PAUSED)
    step = control.step(control.status((idle(),), (StrategyWorkerReport(),), force_write=True), 0)
    assert control.save_error == "" and step.end is None and control.copy_failed
    copy.unlink()
    control.set_phase(Phase.RUNNING)  # the next change is copied again
    assert json.loads((copy / "coordinator.json").read_text())["phase"] == "running"
    assert not control.copy_failed


def test_a_db_worker_being_retired_is_not_started_again_once_drained(tmp_path):
    """A rescale drains the DB worker it retires (it pauses), then ends it: a pass that
    started it again would have it lend its fetch workers to a peer's batch that its end then
    cuts off, and the requests in flight would be sent twice."""
    control = CrawlControl(config(tmp_path))
    control.set_phase(Phase.RUNNING)
    sw = (StrategyWorkerReport(),)
    drained = control.status((idle(5), idle(0, running=False)), sw)
    control.retiring.add(1)
    assert control.step(drained, controls_pending=1).restart == ()
    control.retiring.discard(1)  # ended; a later rescale may bring worker 1 back
    assert control.step(drained, controls_pending=1).restart == (1,)


def test_run_for_counts_from_when_the_crawl_begins_running_not_from_its_start(tmp_path):
    clock = [1000.0]
    cfg = config(tmp_path, recrawl_after_s=2.0, run_for_s=8.0)
    control = CrawlControl(cfg, clock=lambda: clock[0])
    sw = (StrategyWorkerReport(),)
    clock[0] += 7  # the workers took 7 s to start (a loaded machine)
    control.set_phase(Phase.RUNNING)
    clock[0] += 7.9
    assert control.step(control.status((idle(queued=3),), sw), 0).end is None
    assert control.status((idle(queued=3),), sw).elapsed_s == 7.9
    clock[0] += 0.1
    assert control.step(control.status((idle(queued=3),), sw), 0).end == (
        Phase.FINISHED, "ran for 8 s")
    control.set_phase(Phase.PAUSED)
    clock[0] += 5
    control.set_phase(Phase.RUNNING)  # a resume from a pause does not restart the clock
    assert control.status((idle(),), sw).elapsed_s == 13.0
    again = CrawlControl(cfg, clock=lambda: clock[0])  # restarted by Ray: same clock
    assert again.adopted and again.started == control.started
