"""Revisits without Ray: the due-time policy, the queue's time index, the strategy's ``at``,
conditional fetches and sitemap parsing."""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import math
import statistics
import time
import zlib
from datetime import UTC, datetime

import pytest

from raycrawl.config import CrawlConfig
from raycrawl.db_worker.politeness import HostSlots
from raycrawl.db_worker.queue import FrontierQueue
from raycrawl.db_worker.revisits import RevisitPolicy, Visit
from raycrawl.errors import ConfigError
from raycrawl.fetch.options import FetchOptions
from raycrawl.fetch.sitemaps import MAX_URLS, BadSitemap, parse, parse_lastmod
from raycrawl.formats import schemas
from raycrawl.formats.entry import Entry
from raycrawl.models import Request, URLState
from raycrawl.strategy import CrawlingStrategy
from raycrawl.testing.changingweb import ChangingWeb
from raycrawl.testing.synthweb import Link
from raycrawl.urls import url_info
from tests.inprocess import fetch_feed

T0 = 1_700_000_000.0
GROW, SHRINK = 1.4, 0.8  # the defaults (Nutch's rates)


def at(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def entry(i: int = 1, host: str = "a.com", **kw) -> Entry:
    # crc32, not hash(): salted per process (see tests/test_queue.py's entry)
    fingerprint = 1000 + i + zlib.crc32(host.encode()) * 10_000
    return Entry(f"http://{host}/{i}", fingerprint, host, 0, 0, 1.0, **kw)


def policy(**settings) -> RevisitPolicy:
    return RevisitPolicy(CrawlConfig(**settings))


# -- when a URL is due again ---------------------------------------------------------------

def test_a_fixed_interval_counts_from_the_fetch_and_carries_what_the_visit_saw():
    nxt = policy(recrawl_after_s=30).next_visit(
        entry(), Visit(200, None, at(T0), True, '"e1"', "lm", b"d"))
    assert nxt is not None
    assert (nxt.visit, nxt.not_before, nxt.etag, nxt.last_modified, nxt.digest) == (
        2, T0 + 30, '"e1"', "lm", b"d")
    assert nxt.fetched_s == T0 and nxt.attempts == 0 and nxt.crashes == 0


def test_no_interval_no_revisit_and_final_errors_are_never_revisited():
    assert policy().next_visit(entry(), Visit(200, None, at(T0), True)) is None
    p = policy(recrawl_after_s=10)
    for kind in ("robots", "trap", "host-budget", "quarantined", "fetch-task-failed"):
        assert p.next_visit(entry(), Visit(None, kind, at(T0), True)) is None, kind
    # A failure the next visit may not meet is revisited, keeping the last answer's validators.
    old = entry(visit=3, etag='"x"', last_modified="lm", digest=b"d")
    nxt = p.next_visit(old, Visit(None, "timeout", at(T0), False))
    assert nxt is not None and (nxt.visit, nxt.etag, nxt.digest) == (4, '"x"', b"d")


def test_a_follows_age_is_the_urls_own_fixed_interval_and_a_strategys_at_wins():
    p = policy(recrawl_after_s=100, adaptive=True)
    own = entry(interval_s=7.0)
    nxt = p.next_visit(own, Visit(200, None, at(T0), True))
    assert nxt is not None and nxt.not_before == T0 + 7.0  # not adapted
    assert policy().next_visit(own, Visit(200, None, at(T0), True)).not_before == T0 + 7.0
    nxt = p.next_visit(entry(), Visit(200, None, at(T0), True), override=T0 + 5)
    assert nxt is not None and nxt.not_before == T0 + 5
    assert policy().next_visit(entry(), Visit(200, None, at(T0), True), T0 + 5) is not None


def test_adaptive_shrinks_on_change_grows_without_and_stays_in_bounds():
    p = policy(recrawl_after_s=100, adaptive=True, recrawl_min_s=50, recrawl_max_s=150)
    first = p.next_visit(entry(), Visit(200, None, at(T0), True))
    assert first.adapted_s is None and first.not_before == T0 + 100  # nothing observed yet
    changed = p.next_visit(entry(visit=2), Visit(200, None, at(T0), True))
    same = p.next_visit(entry(visit=2), Visit(304, None, at(T0), False))
    assert changed.adapted_s == 100 * SHRINK and changed.not_before == T0 + 100 * SHRINK
    assert same.adapted_s == 100 * GROW
    low = entry(visit=3, adapted_s=55.0)
    assert p.next_visit(low, Visit(200, None, at(T0), True)).adapted_s == 50
    high = entry(visit=3, adapted_s=140.0)
    assert p.next_visit(high, Visit(200, None, at(T0), False)).adapted_s == 150
    # A fetch that got no answer says nothing of change: the interval stays.
    assert p.next_visit(low, Visit(None, "timeout", at(T0), False)).adapted_s == 55.0
    assert CrawlConfig(recrawl_after_s=20).recrawl_bounds_s == (2.0, 200.0)


@pytest.mark.parametrize("period", [7.0, 30.0, 120.0])
@pytest.mark.parametrize("rates", [(1.4, 0.8), (1.2, 0.95)])
def test_adaptive_intervals_settle_where_grow_and_shrink_balance(period, rates):
    """A page that changes every ``period`` seconds, visited as the policy says, from an
    interval 8x too long or too short: the time between visits settles near
    ln(grow) / (ln(grow) - ln(shrink)) x the period (0.6 with Nutch's rates, 0.78 with rates
    nearer 1), whatever the start."""
    grow, shrink = rates
    expected = math.log(grow) / (math.log(grow) - math.log(shrink))
    for start in (period * 8, period / 8):
        p = policy(recrawl_after_s=start, adaptive=True, recrawl_min_s=1, recrawl_max_s=10_000,
                   adaptive_grow=grow, adaptive_shrink=shrink)
        e, now, gaps = entry(), T0 + 0.37, []
        for _ in range(600):
            version = int((now - T0) // period)
            e = p.next_visit(e, Visit(200, None, at(now), version != e.etag, version))
            e = dataclasses.replace(e, etag=version)
            gaps.append(e.not_before - now)
            now = e.not_before
        settled = statistics.mean(gaps[-300:]) / period
        assert abs(settled - expected) <= 0.15, (start, settled, expected)


# -- the time index --------------------------------------------------------------------------

def cut_all(q: FrontierQueue) -> list[Entry]:
    return q.cut(100, 100, HostSlots(0), None, 1000)[1]


def test_urls_due_later_wait_in_the_time_index_and_cuts_never_see_them(store):
    q = FrontierQueue(store, layered=False)
    now = time.time()
    q.push([entry(1), entry(2, not_before=now + 3600), entry(3, not_before=now + 0.2)])
    assert (q.queued, q.not_due) == (1, 2)
    assert [e.url for e in cut_all(q)] == ["http://a.com/1"]
    assert q.promote(now) == 0 and cut_all(q) == []
    time.sleep(0.25)
    assert q.promote(time.time()) == 1
    assert [e.url for e in cut_all(q)] == ["http://a.com/3"]
    assert (q.queued, q.not_due) == (0, 1)
    reopened = FrontierQueue(store, layered=False)
    assert reopened.not_due == 1 and reopened.queued == 0


def test_completion_records_one_row_per_visit_and_puts_the_next_one(store):
    q = FrontierQueue(store, layered=False, revisits=True)
    q.push([entry(1)])
    batch, [e] = q.cut(10, 10, HostSlots(0), None, 100)
    nxt = dataclasses.replace(e, visit=2, not_before=time.time() - 1)
    wb = store.batch()
    done = q.complete(wb, batch, [(0, e.fingerprint)], visits=[1],
                    revisit={(0, e.fingerprint): nxt})
    store.write(wb)
    q.apply(done)
    assert done.fresh == [(0, e.fingerprint)] and q.not_due == 1
    wb = store.batch()  # the same visit again (a batch fetched twice): no row, no second entry
    again = q.complete(wb, batch, [(0, e.fingerprint)], visits=[1],
                    revisit={(0, e.fingerprint): nxt})
    assert again.fresh == [] and not again.not_due
    q.promote(time.time())
    batch2, [e2] = q.cut(10, 10, HostSlots(0), None, 100)
    assert e2.visit == 2 and q.due == {}
    wb = store.batch()
    second = q.complete(wb, batch2, [(0, e.fingerprint)], visits=[2])
    store.write(wb)
    q.apply(second)
    assert second.fresh == [(0, e.fingerprint)] and q.done_total == 2


def test_overdue_counts_revisits_due_long_ago_until_cut(store):
    q = FrontierQueue(store, layered=False, revisits=True)
    now = time.time()
    wb = store.batch()
    for i, late in enumerate([100, 50, 1]):
        q._put_waiting(wb, entry(i, visit=2, not_before=now - late))
    store.write(wb)
    q.not_due, q.not_due_by[0] = 3, 3
    q.promote(now)
    assert sum(q.due.values()) == 3 and q.overdue(now, 10) == 2
    assert FrontierQueue(store, layered=False, revisits=True).overdue(now, 10) == 2
    cut_all(q)
    assert q.due == {} and q.overdue(now, 10) == 0


def visited(q: FrontierQueue, store, e: Entry, due: float, fetched: float = 0.0) -> None:
    """Push ``e``, cut it and complete its first visit with the next one due at ``due``."""
    q.push([e])
    batch, [leased] = q.cut(10, 10, HostSlots(0), None, 100)
    wb = store.batch()
    nxt = dataclasses.replace(leased, visit=2, not_before=due, fetched_s=fetched or None)
    q.apply(q.complete(wb, batch, [(0, e.fingerprint)], revisit={(0, e.fingerprint): nxt}))
    store.write(wb)


def test_a_strategys_at_moves_a_waiting_visit_or_waits_for_the_one_in_flight(store):
    q = FrontierQueue(store, layered=False)
    now = time.time()
    waiting, flying = entry(1), entry(2, host="b.com")
    visited(q, store, waiting, now + 3600)
    q.push([flying])
    q.cut(10, 10, HostSlots(0), None, 100)
    assert (q.not_due, q.queued) == (1, 0)
    q.push([dataclasses.replace(waiting, not_before=now - 1),
            dataclasses.replace(flying, not_before=now + 60)])  # known: rescheduled
    assert (q.not_due, q.queued) == (0, 1)  # due now: into the queue
    assert q.overrides([(0, flying.fingerprint), (0, waiting.fingerprint)]) == {
        (0, flying.fingerprint): now + 60}
    assert [(e.url, e.visit) for e in cut_all(q)] == [(waiting.url, 2)]


def test_a_sitemaps_lastmod_makes_a_page_fetched_before_its_change_due(store):
    q = FrontierQueue(store, layered=False)
    now = time.time()
    old, recent = entry(1), entry(2, host="b.com")
    visited(q, store, old, now + 3600, fetched=now - 100)
    visited(q, store, recent, now + 3600, fetched=now - 10)
    assert q.not_due == 2
    q.changed({(0, old.fingerprint): now - 50, (0, recent.fingerprint): now - 50, (0, 99): now})
    assert (q.not_due, q.queued) == (1, 1)
    assert [e.url for e in cut_all(q)] == [old.url]


def test_entries_pack_their_visit_state_and_read_the_old_format():
    e = entry(visit=3, etag='"e"', last_modified="lm", digest=b"\x00d", interval_s=5.0,
              adapted_s=7.5, fetched_s=T0, not_before=T0 + 5, hops=3)
    assert Entry.unpack(e.pack()) == e
    assert Entry.unpack(entry().pack()) == entry()
    import msgpack
    old = msgpack.packb(["http://a.com/1", 1, "a.com", 0, 0, 1.0, 0, [], 0, 0.0])
    assert (Entry.unpack(old).visit, Entry.unpack(old).hops) == (1, 0)


# -- the strategy's side ---------------------------------------------------------------------

def test_schedule_at_queues_a_new_url_later_and_a_fetched_one_again():
    rows: list[tuple] = []
    s = CrawlingStrategy(CrawlConfig(), lambda r, score, queue, when: rows.append(
        (r.url, queue, when)))
    s.schedule(Request("http://a.com/new"), 1.0, at=T0)
    s.schedule(Request("http://a.com/old", state=URLState.CRAWLED), 1.0)  # ignored
    s.schedule(Request("http://a.com/old", state=URLState.CRAWLED), 1.0, at=T0 + 1)
    s.schedule(Request("http://a.com/q", state=URLState.QUEUED), 1.0, at=T0 + 2)  # ignored
    assert rows == [("http://a.com/new", True, T0), ("http://a.com/old", True, T0 + 1)]


def test_config_checks_the_revisit_settings():
    for bad in ({"adaptive": True}, {"recrawl_after_s": 0}, {"run_for_s": -1},
                {"adaptive_grow": 1.0}, {"adaptive_shrink": 1.2}, {"adaptive_shrink": 0},
                {"recrawl_after_s": 10, "recrawl_min_s": 20, "recrawl_max_s": 5},
                {"reseed_every_s": "often"}):
        with pytest.raises(ConfigError):
            CrawlConfig(**bad)
    assert CrawlConfig(reseed_every_s=60).revisits and not CrawlConfig(run_for_s=5).revisits


# -- conditional fetches -------------------------------------------------------------------

def test_a_revisit_is_conditional_and_an_unchanged_page_gives_no_links(tmp_path):
    web = ChangingWeb(lambda h, i: None, hosts=1, pages_per_host=8).start()
    try:
        opts = FetchOptions.from_config(CrawlConfig(partitions=8, delay_s=0.0,
                                                    allow_network=("127.0.0.0/8",)))
        urls = [web.url(Link("p", 0, i)) for i in range(4)]  # validators: both, ETag, LM, none
        first = asyncio.run(fetch_feed(schemas.feed_batch(url_info(u, 8) for u in urls), opts))
        rows = first.pages.to_pylist()
        assert all(r["changed"] and r["visit"] == 1 and r["digest"] for r in rows)
        assert first.links.num_rows > 0
        again = [dataclasses.replace(Entry(r["url"], r["fingerprint"], r["host"], 0, 0, 1.0),
                                     visit=2, etag=r["etag"], last_modified=r["last_modified"],
                                     digest=r["digest"]) for r in rows]
        second = asyncio.run(fetch_feed(schemas.feed_rows(again, [0.0] * 4, [False] * 4), opts))
        got = {r["url"]: r for r in second.pages.to_pylist()}
        assert [got[u]["status"] for u in urls] == [304, 304, 304, 200]
        assert all(got[u]["changed"] is False and got[u]["visit"] == 2 for u in urls)
        assert got[urls[0]]["etag"] == rows[0]["etag"] and got[urls[3]]["digest"] == rows[3][
            "digest"]
        assert second.links.num_rows == 0, "an unchanged page's links were handed on again"
        assert [h.conditional for h in web.log[4:]] == [True, True, True, False]
    finally:
        web.stop()


# -- sitemaps ------------------------------------------------------------------------------

URLSET = (b'<?xml version="1.0"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
          b"<url><loc>http://a.com/1</loc><lastmod>2024-05-01</lastmod></url>"
          b"<url><loc> http://a.com/2 </loc></url><url><lastmod>2024</lastmod></url></urlset>")


def test_sitemaps_parse_plain_gzip_index_and_text_and_refuse_the_rest():
    listed = parse(URLSET)
    assert [(x.url, x.modified_at, x.sitemap) for x in listed] == [
        ("http://a.com/1", datetime(2024, 5, 1, tzinfo=UTC).timestamp(), False),
        ("http://a.com/2", None, False)]
    assert parse(gzip.compress(URLSET)) == listed
    index = parse(b"<sitemapindex><sitemap><loc>http://a.com/s.xml</loc></sitemap>"
                  b"</sitemapindex>")
    assert [(x.url, x.sitemap) for x in index] == [("http://a.com/s.xml", True)]
    assert [x.url for x in parse(b"http://a.com/1\n\nhttp://a.com/2\n")] == [
        "http://a.com/1", "http://a.com/2"]
    for bad in (b"<html><body/></html>", b"<urlset><url><loc>http://a", b"not a sitemap",
                b"\x1f\x8b\x08junk", b""):
        with pytest.raises(BadSitemap):
            parse(bad)
    many = b"<urlset>" + b"<url><loc>http://a.com/x</loc></url>" * (MAX_URLS + 10) + b"</urlset>"
    assert len(parse(many)) == MAX_URLS
    entity = b'<!DOCTYPE u [<!ENTITY e SYSTEM "file:///etc/passwd">]><urlset><url><loc>&e;' \
             b"</loc></url></urlset>"
    assert parse(entity) == []  # no entity is read


@pytest.mark.parametrize("text,expected", [
    ("2024", (2024, 1, 1, 0, 0)), ("2024-05", (2024, 5, 1, 0, 0)),
    ("2024-05-01T10:30:00Z", (2024, 5, 1, 10, 30)),
    ("2024-05-01T12:30:00+02:00", (2024, 5, 1, 10, 30)), ("yesterday", None), ("", None)])
def test_lastmod_reads_the_w3c_datetime_shapes(text, expected):
    got = parse_lastmod(text)
    assert got == (None if expected is None else datetime(*expected, tzinfo=UTC).timestamp())
