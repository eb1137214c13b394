"""``--warc``: every response as WARC/1.1 records that warcio reads, none missing after faults."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import os

import pytest
from warcio.archiveiterator import ArchiveIterator

from raycrawl import Crawl
from raycrawl.formats.warc import WarcFiles, repair, whole_length
from raycrawl.storage.location import Location
from raycrawl.testing.synthweb import SyntheticWeb

FAST = {"delay_s": 0.0, "allow_network": ("127.0.0.0/8",), "poll_interval_s": 0.05,
        "partitions": 16, "retry_backoff_s": 0.05}


def records(warc_dir: str) -> dict[tuple[str, int], list]:
    """(file, offset of the record) -> [(type, headers, http headers, payload)] of the
    request/response pair there, read with warcio (from a folder or a URI)."""
    out: dict[tuple[str, int], list] = {}
    where = Location.of(warc_dir)
    for name in where.names():
        with io.BytesIO(where.read(name)) as fh:
            it = ArchiveIterator(fh, check_digests="raise")  # block and payload digests
            for rec in it:
                payload = rec.content_stream().read()
                out[(name, it.offset)] = [rec.rec_type, rec.rec_headers, rec.http_headers,
                                          payload]
    return out


def check_every_row_has_its_records(crawl: Crawl, web: SyntheticWeb) -> int:
    """Every row with a status points at its request record, followed by its response; the
    response's payload is the page the server sent.  Returns how many rows were checked."""
    found = records(crawl.config.warc_dir)
    by_file: dict[str, list[int]] = {}
    for name, offset in found:
        by_file.setdefault(name, []).append(offset)
    rows = [r for r in crawl.pages().to_pylist() if r["status"] is not None]
    for row in rows:
        key = (row["warc_file"], row["warc_offset"])
        assert key in found, f"no record for {row['url']}"
        kind, headers, http, _ = found[key]
        assert kind == "request" and headers.get_header("WARC-Target-URI") == row["url"]
        offsets = sorted(by_file[row["warc_file"]])
        kind, headers, http, payload = found[(row["warc_file"],
                                              offsets[offsets.index(row["warc_offset"]) + 1])]
        assert kind == "response" and headers.protocol == "WARC/1.1"
        assert headers.get_header("WARC-Target-URI") == row["url"]
        assert http.get_statuscode() == str(row["status"])
        digest = base64.b32encode(hashlib.sha1(payload).digest()).decode()
        assert headers.get_header("WARC-Payload-Digest") == f"sha1:{digest}"
        if "/p/" in row["url"] and row["status"] == 200:
            host = next(h for h in range(web.hosts) if row["url"].startswith(web.origin(h)))
            index = int(row["url"].split("/p/")[1].split("?")[0])
            assert payload == web._page(host, index)
    return len(rows)


def test_the_records_of_a_file_cut_mid_write_are_trimmed_to_the_last_whole_one(tmp_path):
    files = WarcFiles(str(tmp_path), "db-worker-0-fetcher-ab-0", 1 << 20, "test")
    for i in range(3):
        files.write(f"http://a/{i}", "GET", [], 200, "OK", [("Content-Type", "text/html")],
                    b"<p>%d</p>" % i)
    files.close()
    path = tmp_path / "db-worker-0-fetcher-ab-0-00000.warc.gz"
    whole = path.stat().st_size
    member = gzip.compress(b"WARC/1.1\r\n" + b"x" * 4000)
    with open(path, "ab") as fh:
        fh.write(member[: len(member) // 2])  # a partial record: half a gzip member
    assert whole_length(str(path)) == whole
    assert repair(str(tmp_path), "db-worker-1-") == 0  # another worker's files: untouched
    assert repair(str(tmp_path), "db-worker-0-") == 1 and path.stat().st_size == whole
    assert [k for k, *_ in records(str(tmp_path)).values()] == [
        "warcinfo", *["request", "response"] * 3]


def test_with_out_on_an_object_store_files_are_spooled_and_uploaded_once_closed(tmp_path, s3):
    """A file goes up whole when it closes (rotation, the worker's close); the files a killed
    worker left in its spool are cut to their last whole record and uploaded by the next
    start (the worker's own, or its DB worker's)."""
    out = Location.of(f"s3://{s3.bucket()}/crawl/warc")
    spool = tmp_path / "spool"
    files = WarcFiles(str(spool), "db-worker-0-fetcher-ab-0", 3000, "test", upload=out)
    for i in range(4):  # rotates past 3,000 bytes
        files.write(f"http://a/{i}", "GET", [], 200, "OK", [], os.urandom(1500))
    files.wait_uploads()  # (a rotation uploads off the writer's thread)
    assert len(out.names()) >= 1 and os.listdir(spool)  # the closed ones up, the open one not
    files.close()
    assert os.listdir(spool) == [] and len(out.names()) >= 2
    assert sum(k == "response" for k, *_ in records(out.uri).values()) == 4

    left = WarcFiles(str(spool), "db-worker-0-fetcher-cd-0", 1 << 20, "test", upload=out)
    left.write("http://a/x", "GET", [], 200, "OK", [], b"<p>x</p>")
    left.sync()  # killed with its file open, a half record after it
    with open(spool / left.name, "ab") as fh:
        member = gzip.compress(b"WARC/1.1\r\n" + b"x" * 4000)
        fh.write(member[: len(member) // 2])
    assert repair(str(spool), "db-worker-1-", out) == 0 and os.listdir(spool)
    assert repair(str(spool), "db-worker-0-", out) == 1 and os.listdir(spool) == []
    assert [k for k, *_ in records(out.uri).values()].count("response") == 5
    again = WarcFiles(str(spool), "db-worker-0-fetcher-cd-0", 1 << 20, "test", upload=out)
    again.write("http://a/y", "GET", [], 200, "OK", [], b"<p>y</p>")
    assert again.name != left.name  # numbered after the files already uploaded


def test_records_carry_what_warcio_checks_and_reads(tmp_path):
    """Each record kind a crawl writes, read back by warcio with its digests verified."""
    from raycrawl.formats.warc import IDENTICAL, NOT_MODIFIED

    files = WarcFiles(str(tmp_path), "w", 1 << 20, "test")
    body = "<p>caf\u00e9</p>".encode() * 500
    files.write("http://a/p?q=1", "GET", [("User-Agent", "ua"), ("Host", "a")], 200, "OK",
                [("Content-Type", "text/html"), ("Content-Encoding", "gzip"),
                 ("Content-Length", "17"), ("X-Note", "caf\u00e9")], body)
    files.write("http://a/form", "POST", [("Content-Type", "application/x-www-form-urlencoded")],
                200, "OK", [], b"done", request_body=b"a=1&b=2")
    files.write("http://a/big", "GET", [], 200, "OK", [], body[:100], truncated="length")
    files.write("http://a/p?q=1", "GET", [], 304, "Not Modified", [("ETag", '"x"')], b"",
                revisit=NOT_MODIFIED)
    files.write("http://a/same", "GET", [], 200, "OK", [], body, revisit=IDENTICAL,
                digest=hashlib.sha1(body).digest())
    files.close()
    found = list(records(str(tmp_path)).values())
    assert [k for k, *_ in found] == ["warcinfo", *["request", "response"] * 3,
                                      "request", "revisit", "request", "revisit"]
    _, request, response = found[:3]
    assert request[1].get_header("WARC-Concurrent-To") == response[1].get_header(
        "WARC-Record-ID")
    assert request[2].protocol == "GET" and request[2].get_header("Host") == "a"
    assert response[3] == body and response[2].get_header("Content-Length") == str(len(body))
    assert response[2].get_header("X-Crawler-Content-Encoding") == "gzip"
    assert response[2].get_header("Content-Encoding") is None
    assert response[1].get_header("WARC-Date").endswith("Z")
    assert found[3][3] == b"a=1&b=2" and found[4][3] == b"done"  # the POST's body
    assert found[6][1].get_header("WARC-Truncated") == "length"
    for (_, headers, _, payload), profile in zip(found[8::2], (NOT_MODIFIED, IDENTICAL)):
        assert headers.get_header("WARC-Profile") == profile and payload == b""
        assert headers.get_header("WARC-Refers-To-Target-URI") is not None
    digest = base64.b32encode(hashlib.sha1(body).digest()).decode()
    assert found[10][1].get_header("WARC-Payload-Digest") == f"sha1:{digest}"


@pytest.mark.ray
def test_every_fetched_page_has_its_response_record(ray_session, web, tmp_path):
    crawl = Crawl(seeds=[web.seed_url], out=str(tmp_path / "out"), warc=True,
                  **{**FAST, "db_workers": 2})
    stats = crawl.start().wait(timeout=180, interval_s=0.2)
    assert stats["phase"] == "finished"
    checked = check_every_row_has_its_records(crawl, web)
    assert checked == len(web.reachable())  # every reachable URL answered
    assert stats["warc_records"] == checked
