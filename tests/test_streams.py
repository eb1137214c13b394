"""Spider-log stream files: written with either codec, read back, replayed."""

import pytest

from raycrawl.config import CrawlConfig
from raycrawl.errors import DecodeError
from raycrawl.formats.streams import StreamWriter, read_stream, replay
from raycrawl.strategy import CrawlingStrategy
from tests.test_strategy import spider_log


class Recorder(CrawlingStrategy):
    def __init__(self):
        super().__init__(CrawlConfig(), lambda *a: None)
        self.events = []

    def page_crawled(self, response):
        self.events.append(("page", response.url, response.status_code, response.meta["depth"]))

    def request_error(self, request, error):
        self.events.append(("error", request.url, error))

    def links_extracted(self, request, links):
        self.events.append(("links", request.url, [link.url for link in links]))


@pytest.mark.parametrize("codec", ["msgpack", "json"])
def test_write_read_replay(tmp_path, codec):
    path = str(tmp_path / f"log.{codec}")
    pages, links = spider_log(
        [("http://a.com/", 0, 200, None), ("http://b.com/", 1, None, "timeout")],
        [("http://a.com/", 0, "http://a.com/1", 1), ("http://a.com/", 0, "http://c.com/", 1)])
    w = StreamWriter(path, codec)
    w.write_spider_log(pages, links)
    w.close()
    kinds = [m[0] for m in read_stream(path, codec)]
    assert kinds == ["page_crawled", "request_error", "links_extracted"]
    rec = Recorder()
    assert replay(path, codec, rec) == 3
    assert rec.events == [("page", "http://a.com/", 200, 0), ("error", "http://b.com/", "timeout"),
                          ("links", "http://a.com/", ["http://a.com/1", "http://c.com/"])]


def test_torn_tail_is_reported_after_the_good_frames(tmp_path):
    path = str(tmp_path / "log.msgpack")
    pages, links = spider_log([("http://a.com/", 0, 200, None)], [])
    w = StreamWriter(path, "msgpack")
    w.write_spider_log(pages, links)
    w.close()
    with open(path, "ab") as fh:
        fh.write(b"\x00\x00\x01\x00partial")
    messages = read_stream(path, "msgpack")
    assert next(messages)[0] == "page_crawled"
    with pytest.raises(DecodeError, match="torn"):
        next(messages)
