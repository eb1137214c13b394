"""The coordinator's decisions without Ray: restart, budget, finish, status."""

import json

from raycrawl.api import read_status
from raycrawl.config import CrawlConfig
from raycrawl.frontier.control import Phase, Verdict
from raycrawl.frontier.coordination import Budget, CrawlControl
from raycrawl.frontier.reports import CrawlStatus, DBWorkerReport, StrategyWorkerReport


def config(tmp_path, **kw):
    return CrawlConfig(out=str(tmp_path / "out"), crawl_id="c1", **kw)


def idle(activity=1, queued=0, running=True, **kw):
    return DBWorkerReport(queued=queued, queued_at_gate=queued, activity=activity,
                          running=running, **kw)


def test_a_restarted_coordinator_adopts_the_phase_and_recounts_the_budget(tmp_path):
    cfg = config(tmp_path, max_pages=10)
    first = CrawlControl(cfg, generation=1)
    assert not first.adopted and first.phase is Phase.STARTING
    manifest = json.loads((tmp_path / "out" / "state" / "manifest.json").read_text())
    assert manifest["generation"] == 1 and len(manifest["db_workers"]) == 1
    first.set_phase(Phase.RUNNING)
    assert first.budget.acquire(4) == 4
    again = CrawlControl(cfg, generation=1)  # Ray restarted it: same generation
    assert again.adopted and again.phase is Phase.RUNNING
    assert not again.budget.known
    again.budget.recount([idle(done_total=3, leased_urls=2), idle(done_total=1)])
    assert again.budget.known and again.budget.left == 4
    resumed = CrawlControl(cfg, generation=2)  # a resume is a new generation
    assert not resumed.adopted and resumed.phase is Phase.STARTING


def test_budget_grants_exactly_the_limit():
    b = Budget(5)
    assert [b.acquire(2), b.acquire(2), b.acquire(2), b.acquire(2)] == [2, 2, 1, 0]
    b.release(1)  # a short cut, or a URL queued for a retry
    assert b.left == 1 and b.acquire(3) == 1
    unlimited = Budget(None)
    assert unlimited.acquire(100) == 100 and unlimited.left is None


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
