"""The benchmark suite's own pieces: the web's reachable set, its hit counting, the steady window.

The numbers of ``benchmarks/run.py`` are only as good as these: coverage divides by the
reachable set, duplicates come from the hit counters, pages/s from the steady window.
"""

from collections import deque

from benchmarks.measure import Sample
from benchmarks.run import _steady
from benchmarks.web import ERROR_AT, EXTRA_EVERY, REDIRECT_AT, Web, WebSpec, page_links


def test_reachable_set_is_what_a_graph_search_finds():
    spec = WebSpec(hosts=4, pages=120, out_degree=12)
    seen = {("p", 0, 0)}
    todo = deque([(0, 0)])
    while todo:
        h, i = todo.popleft()
        targets = [("p", th, ti) for th, ti in page_links(spec, h, i)]
        if i % EXTRA_EVERY == ERROR_AT:
            targets.append(("e", h, i))
        if i % EXTRA_EVERY == REDIRECT_AT:
            targets.append(("r", h, i))
            targets.append(("p", h, (i * 7 + 3) % spec.pages))  # where it redirects
        for target in targets:
            if target not in seen:
                seen.add(target)
                if target[0] == "p":
                    todo.append(target[1:])
    assert len(seen) == spec.urls


def test_pages_have_the_asked_size_and_links():
    web = Web(WebSpec(hosts=3, pages=60), port=8000)
    body = web.render(1, 25)
    assert 45_000 <= len(body) <= 60_000
    assert body.count(b"<a href=") == 100 + 1  # out-degree, plus the 404 link of page 25
    assert web.render(1, 25) == body  # deterministic


def test_hits_are_counted_per_url():
    web = Web(WebSpec(hosts=2, pages=60), port=8000)
    assert web.respond(0, b"/p/3")[0] == 200
    assert web.respond(0, b"/p/3")[0] == 200
    assert web.respond(1, b"/e/25")[0] == 404
    status, headers, _ = web.respond(1, b"/r/30")
    assert status == 302 and headers == b"Location: /p/33\r\n"
    assert web.respond(0, b"/e/26")[0] == 404  # not a linked error page: unexpected
    assert web.respond(0, b"/p/60")[0] == 404  # past the last page: unexpected
    stats = web.stats()
    assert (stats["fetches"], stats["distinct"], stats["duplicates"]) == (4, 3, 1)
    assert stats["unexpected"] == 2 and stats["reachable"] == 2 * 62


def test_steady_window_excludes_start_and_tail():
    def sample(t, fetches, cpu):
        return Sample(t, 0, 0, cpu, {"fetches": fetches})

    # 10 s of start-up, 100 pages/s for 10 s at 2 ms CPU each, then a slow tail
    samples = [sample(t, 0, 5.0) for t in range(10)]
    samples += [sample(10 + t, 100 * t, 5.0 + 0.2 * t) for t in range(11)]
    samples += [sample(21 + t, 1000 + 10 * t, 7.0) for t in range(11)]
    rate, cpu = _steady(samples)
    assert abs(rate - 100) < 1e-6
    assert abs(cpu - 0.002) < 1e-9
