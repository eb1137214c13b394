"""Strategy runner and built-in strategies, without Ray."""

from datetime import UTC, datetime

import pyarrow as pa
import pytest

from raycrawl.errors import ErrorKind, StrategyError
from raycrawl.formats import schemas
from raycrawl.formats.schemas import FetchOutcome, LinkFound
from raycrawl.models import URLState
from raycrawl.strategy import CrawlingStrategy, load_strategy
from raycrawl.strategy_worker.runner import StrategyRunner
from raycrawl.urls import url_info
from strategies.bfs import Strategy as BFS

P = 4


def feed(urls, depth=0):
    return schemas.feed_batch((url_info(u, P) for u in urls), depth)


def spider_log(pages, links):
    """pages: [(url, depth, status, error)], links: [(parent, parent_depth, url, depth)] or
    [(parent, parent_depth, url, depth, host hops)]"""
    now = datetime.fromtimestamp(0, UTC)
    page_batch = FetchOutcome.to_batch([
        FetchOutcome(i.url, i.fingerprint, i.host, i.partition, depth, status=status,
                     content_type="text/html", error=error and ErrorKind(error), fetched_at=now,
                     attempts=1, changed=True)
        for i, (_, depth, status, error) in zip((url_info(u, P) for u, *_ in pages), pages)])
    link_batch = LinkFound.to_batch([
        LinkFound(url_info(link[0], P).url, link[1], i.url, i.fingerprint, i.host,
                  i.partition, link[3], hops=(*link, 0)[4])
        for i, link in zip((url_info(link[2], P) for link in links), links)])
    return page_batch, link_batch


def test_seeds_are_scheduled_once(runner_for):
    r = runner_for()
    out = r.add_seeds(feed(["http://a.com/", "http://b.com/"]))
    assert out.num_rows == 2 and out.schema == schemas.SCORING_LOG
    assert r.add_seeds(feed(["http://a.com/"])).num_rows == 0  # already queued


def test_links_are_deduplicated_across_parents_and_batches(runner_for):
    r = runner_for()
    r.add_seeds(feed(["http://a.com/"]))
    pages, links = spider_log([("http://a.com/", 0, 200, None)], [
        ("http://a.com/", 0, "http://a.com/1", 1), ("http://a.com/", 0, "http://b.com/2", 1)])
    first = r.process_spider_log(pages, links)
    assert sorted(first.column("url").to_pylist()) == ["http://a.com/1", "http://b.com/2"]
    assert first.column("depth").to_pylist() == [1, 1]
    assert first.column("score").to_pylist() == [0.5, 0.5]  # bfs: 1 / (1 + depth)
    pages2, links2 = spider_log([("http://a.com/1", 1, 200, None)], [
        ("http://a.com/1", 1, "http://b.com/2", 2), ("http://a.com/1", 1, "http://a.com/", 2)])
    assert r.process_spider_log(pages2, links2).num_rows == 0
    assert r.counters["pages_crawled"] == 2


def test_state_is_durable_and_replay_is_harmless(runner_for, tmp_path):
    r = runner_for()
    r.add_seeds(feed(["http://a.com/"]))
    pages, links = spider_log([("http://a.com/", 0, None, "timeout")], [])
    r.process_spider_log(pages, links)
    r.process_spider_log(pages, links)  # the same spider log twice
    assert r.counters["request_errors"] == 1 and r.counters["duplicate_pages"] == 1
    fp = url_info("http://a.com/", P).fingerprint
    r.states.refresh([url_info("http://a.com/", P).partition], [fp])
    assert r.states.state(fp) is URLState.ERROR


def test_discarded_call_changes_nothing(runner_for):
    r = runner_for(runner=StrategyRunner)
    pages, links = spider_log([("http://a.com/", 0, 200, None)],
                              [("http://a.com/", 0, "http://a.com/1", 1)])
    first = r.process_spider_log(pages, links)
    r.discard()  # queueing the scoring log failed: the retry must decide the same again
    assert r.process_spider_log(pages, links).to_pylist() == first.to_pylist()
    r.commit()
    assert r.process_spider_log(pages, links).num_rows == 0


def test_max_depth_is_enforced_for_any_strategy(runner_for):
    r = runner_for(max_depth=1)
    pages, links = spider_log([("http://a.com/1", 1, 200, None)],
                              [("http://a.com/1", 1, "http://a.com/2", 2)])
    assert r.process_spider_log(pages, links).num_rows == 0


def test_dfs_prefers_deeper_urls(runner_for):
    r = runner_for(strategy="dfs")
    pages, links = spider_log([("http://a.com/", 3, 200, None)],
                              [("http://a.com/", 3, "http://a.com/x", 4)])
    assert r.process_spider_log(pages, links).column("score").to_pylist() == [4.0]


class OnlyA(CrawlingStrategy):
    """A user strategy: keeps links of a.com only and remembers what it saw."""

    seen: list = []

    def filter_extracted_links(self, request, links):
        return [link for link in links if link.host == "a.com"]

    def links_extracted(self, request, links):
        OnlyA.seen.extend(link.url for link in links)
        for link in links:
            self.schedule(link, 0.3)


def test_user_strategy_by_dotted_name(runner_for):
    r = runner_for(strategy="tests.test_strategy:OnlyA")
    pages, links = spider_log([("http://a.com/", 0, 200, None)], [
        ("http://a.com/", 0, "http://a.com/1", 1), ("http://a.com/", 0, "http://b.com/1", 1)])
    assert r.process_spider_log(pages, links).column("url").to_pylist() == ["http://a.com/1"]
    assert OnlyA.seen == ["http://a.com/1"]


@pytest.mark.parametrize("name", ["nope", "raycrawl.urls:canonicalize", "no.such.module:X"])
def test_bad_strategy_names(name):
    with pytest.raises(StrategyError):
        load_strategy(name)


def test_read_seeds_skips_comments_and_blanks():
    assert CrawlingStrategy.read_seeds(["# seeds\n", "\n", " http://a.com/ \n"]) == [
        "http://a.com/"]


class Watching(BFS):
    """BFS that notes every page crawled and sets a revisit's next visit far ahead."""

    seen: list = []

    def page_crawled(self, response):
        self.seen.append((response.url, response.request.visit, response.request.state))
        if response.request.visit > 1:
            self.schedule(response.request, 0.5, at=1e10)


def test_revisits_reach_the_strategy_and_a_sitemaps_lastmod_reaches_the_db_worker(runner_for):
    seen = Watching.seen = []
    r = runner_for(strategy="tests.test_strategy:Watching")
    r.add_seeds(feed(["http://a.com/"]))
    pages, _ = spider_log([("http://a.com/", 0, 200, None)], [])
    r.process_spider_log(pages, LinkFound.empty())
    again = pages.set_column(pages.schema.get_field_index("visit"), "visit",
                             pa.array([2], pa.int32()))
    out = r.process_spider_log(again, LinkFound.empty())
    assert [(u, v) for u, v, _ in seen] == [("http://a.com/", 1), ("http://a.com/", 2)]
    assert seen[1][2] is URLState.CRAWLED  # the state stays
    assert out.column("not_before").to_pylist() == [1e10]
    assert out.column("schedule").to_pylist() == [True]
    # A link a sitemap lists with a lastmod: new, it is scheduled as any link; known (crawled),
    # it goes to its DB worker with the lastmod (due now if fetched before).
    _, links = spider_log([], [("http://s.com/sitemap.xml", 0, "http://a.com/", 0),
                               ("http://s.com/sitemap.xml", 0, "http://a.com/new", 0)])
    links = links.set_column(links.schema.get_field_index("modified_at"), "modified_at",
                             pa.array([5.0, 6.0], pa.float64()))
    out = r.process_spider_log(FetchOutcome.empty(), links)
    rows = {row["url"]: row for row in out.to_pylist()}
    assert rows["http://a.com/"]["modified_at"] == 5.0
    assert rows["http://a.com/new"]["modified_at"] is None and rows["http://a.com/new"]["schedule"]


def test_host_hops_count_from_a_seeds_host_and_end_as_trap_past_the_limit(runner_for):
    r = runner_for(max_host_hops=2)
    r.add_seeds(feed(["http://a.com/"]))
    pages, links = spider_log([("http://c.com/", 3, 200, None)], [
        ("http://c.com/", 3, "http://d.com/2", 4, 2),  # within the limit
        ("http://c.com/", 3, "http://e.com/3", 4, 3),  # past it
        ("http://c.com/", 3, "http://a.com/back", 4, 3)])  # a seed's host: 0 again
    out = {r["url"]: r for r in r.process_spider_log(pages, links).to_pylist()}
    assert (out["http://d.com/2"]["skip"], out["http://d.com/2"]["hops"]) == (None, 2)
    assert (out["http://e.com/3"]["skip"], out["http://e.com/3"]["hops"]) == ("trap", 3)
    assert (out["http://a.com/back"]["skip"], out["http://a.com/back"]["hops"]) == (None, 0)
    assert r.report().skipped == {"trap": 1}


def test_without_max_host_hops_any_number_of_hops_is_followed(runner_for):
    r = runner_for()
    r.add_seeds(feed(["http://a.com/"]))
    pages, links = spider_log([("http://c.com/", 40, 200, None)],
                              [("http://c.com/", 40, "http://z.com/", 41, 40)])
    out = r.process_spider_log(pages, links).to_pylist()
    assert [(x["url"], x["skip"], x["hops"]) for x in out] == [("http://z.com/", None, 40)]


def test_known_links_are_not_read_yet_their_state_is_right_when_asked(runner_for, tmp_path):
    """Links whose state this worker committed are known without a read: the second batch
    reads only the pages and the new link; a known link's record is read when asked for (a
    sitemap's lastmod, a strategy that filters links), and a discarded call teaches nothing."""
    from raycrawl.strategy_worker.states import URLStates

    r = runner_for()
    r.add_seeds(feed(["http://a.com/"]))
    pages, links = spider_log([("http://a.com/", 0, 200, None)], [
        ("http://a.com/", 0, "http://a.com/1", 1), ("http://a.com/", 0, "http://a.com/2", 1)])
    r.process_spider_log(pages, links)
    fp = {u: url_info(u, P).fingerprint for u in
          ("http://a.com/", "http://a.com/1", "http://a.com/2", "http://a.com/3")}
    assert set(fp.values()) - {fp["http://a.com/3"]} <= set(r.states.known.new)
    read = []
    multi_get = r.states.store.multi_get
    r.states.store.multi_get = lambda keys: read.extend(keys) or multi_get(keys)
    pages, links = spider_log([("http://a.com/1", 1, 200, None)], [
        ("http://a.com/1", 1, "http://a.com/", 2), ("http://a.com/1", 1, "http://a.com/2", 2),
        ("http://a.com/1", 1, "http://a.com/3", 2)])
    out = StrategyRunner.process_spider_log(r, pages, links)  # (not committed yet)
    assert out.column("url").to_pylist() == ["http://a.com/3"]
    assert len(read) == 2  # the page and the new link
    assert not r.states.is_new(fp["http://a.com/2"])
    assert r.states.state(fp["http://a.com/2"]) is URLState.QUEUED  # read when asked
    assert r.states.get(fp["http://a.com/"]).state is URLState.CRAWLED
    r.discard()
    assert fp["http://a.com/3"] not in r.states.known  # its call was discarded
    r.process_spider_log(pages, links)
    assert fp["http://a.com/3"] in r.states.known
    # A URL scheduled not to be queued stays NOT_CRAWLED: never known
    states = URLStates(r.states.store)
    states.set(0, 99, URLState.NOT_CRAWLED, 1, 0.5)
    states.flush()
    assert 99 not in states.known
    states.refresh([0], [99], known_unread=True)
    assert states.is_new(99)


def test_known_urls_are_bounded_and_a_url_seen_again_stays():
    from raycrawl.strategy_worker.states import KnownURLs

    known = KnownURLs(size=8)
    known.add(range(4))  # the newer generation full: it becomes the older
    assert len(known) == 4 and 0 in known
    known.add([0, 10, 11])
    known.add([12])  # full again: 1, 2 and 3 go; 0 was seen again and stays
    assert 0 in known and 12 in known and 1 not in known and len(known) <= 8


def test_a_strategy_that_filters_links_is_shown_known_ones_and_schedules_only_new_ones(
        runner_for):
    r = runner_for(strategy=f"{__name__}:FilteringBFS")
    r.add_seeds(feed(["http://a.com/"]))
    pages, links = spider_log([("http://a.com/", 0, 200, None)],
                              [("http://a.com/", 0, "http://a.com/1", 1)])
    r.process_spider_log(pages, links)
    pages, links = spider_log([("http://a.com/1", 1, 200, None)], [
        ("http://a.com/1", 1, "http://a.com/", 2), ("http://a.com/1", 1, "http://a.com/2", 2)])
    FilteringBFS.seen.clear()
    assert r.process_spider_log(pages, links).column("url").to_pylist() == ["http://a.com/2"]
    assert FilteringBFS.seen == ["http://a.com/", "http://a.com/2"]


class FilteringBFS(BFS):
    seen: list = []

    def filter_extracted_links(self, request, links):
        FilteringBFS.seen += [link.url for link in links]
        return links
