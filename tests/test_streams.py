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


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_stream_whose_spool_is_lost_with_its_node_goes_on_from_its_uploaded_copy(
        tmp_path, request, where):
    """A DB worker created on another node (its own was lost) finds no spooled stream: it
    starts from the copy in OUT, which holds everything up to the last upload (each
    checkpoint's), and the next upload keeps it; what was not uploaded is refetched after
    the rollback, and logged again."""
    import os

    from raycrawl.storage.location import Location

    out = (str(tmp_path / "out") if where == "local"
           else f"s3://{request.getfixturevalue('s3').bucket()}/crawl")
    upload = Location.of(out).child("streams")
    spool = str(tmp_path / "state" / "spider-log-000.msgpack")

    def logged(*urls):
        return spider_log([(u, 0, 200, None) for u in urls], [])

    first = StreamWriter(spool, "msgpack", upload)
    first.write_spider_log(*logged("http://a.com/1", "http://a.com/2"))
    length = first.flush()  # the checkpoint's: what is whole now, uploaded while it goes on
    first.write_spider_log(*logged("http://a.com/3"))  # after it: lost with the node
    first.file.flush()
    first.publish(length)
    first.file.close()
    os.remove(spool)
    again = StreamWriter(spool, "msgpack", upload)
    again.write_spider_log(*logged("http://a.com/3", "http://a.com/4"))
    again.close()
    local = str(tmp_path / "read.msgpack")
    upload.download("spider-log-000.msgpack", local)
    assert [m[1].url for m in read_stream(local, "msgpack")] == [
        f"http://a.com/{i}" for i in (1, 2, 3, 4)]
    kept = StreamWriter(spool, "msgpack", upload)  # a restart on the same node: its spool
    kept.close()
    upload.download("spider-log-000.msgpack", local)
    assert len(list(read_stream(local, "msgpack"))) == 4
