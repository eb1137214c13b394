"""Codecs: Frontera-written bytes decode; round trips; malformed input is a DecodeError."""

import msgpack
import pytest

from raycrawl.codecs import codec_module
from raycrawl.codecs import json as json_codec
from raycrawl.codecs import msgpack as mp_codec
from raycrawl.errors import ConfigError, DecodeError
from raycrawl.models import Request, Response

# Bytes as Frontera 0.8's msgpack encoder writes them (packb(..., use_bin_type=True)), written
# out by hand: [b'pc', [url, 200, {b'fingerprint': b'abc'}, {b'Content-Type': b'text/html'},
# b'<html>']].
FRONTERA_PAGE_CRAWLED = bytes.fromhex(
    "92c402706395b3687474703a2f2f6578616d706c652e636f6d2fccc881c40b66696e6765727072696e74"
    "c40361626381c40c436f6e74656e742d54797065c409746578742f68746d6cc4063c68746d6c3e")


def frontera_request(url, meta=None):
    # Frontera's _prepare_request_message: [url, method, headers, cookies, meta], bytes keys.
    return [url, b"GET", {b"Accept": b"text/html"}, {}, meta or {b"depth": 1}]


def frontera_pack(obj):
    return msgpack.packb(obj, use_bin_type=True)


def test_decodes_frontera_page_crawled_bytes():
    kind, response = mp_codec.Decoder().decode(FRONTERA_PAGE_CRAWLED)
    assert kind == "page_crawled"
    assert response.url == "http://example.com/"
    assert response.status_code == 200
    assert response.meta == {"fingerprint": b"abc"}
    assert response.headers == {"Content-Type": "text/html"}
    assert response.body == b"<html>"
    assert response.request.url == response.url


def test_decodes_every_frontera_message_type():
    d = mp_codec.Decoder()
    req = frontera_request("http://a.com/")
    link = frontera_request("http://b.com/x", {b"depth": 2})
    kind, seeds = d.decode(frontera_pack([b"as", [req, link]]))
    assert kind == "add_seeds" and [s.url for s in seeds] == ["http://a.com/", "http://b.com/x"]
    assert seeds[0].method == "GET" and seeds[0].headers == {"Accept": "text/html"}
    assert seeds[1].meta == {"depth": 2}
    kind, parent, links = d.decode(frontera_pack([b"le", req, [link]]))
    assert (kind, parent.url, links[0].url) == ("links_extracted", "http://a.com/",
                                                "http://b.com/x")
    assert d.decode(frontera_pack([b"re", req, "timeout"]))[::2] == ("request_error", "timeout")
    kind, r, score, schedule = d.decode(frontera_pack([b"us", req, 0.5, True]))
    assert (kind, r.url, score, schedule) == ("update_score", "http://a.com/", 0.5, True)
    assert d.decode(frontera_pack([b"njid", 3])) == ("new_job_id", 3)
    assert d.decode(frontera_pack([b"of", 4, 1200])) == ("offset", 4, 1200)
    assert d.decode(frontera_pack([b"st", {b"pages": 10}])) == ("stats", {"pages": 10})
    assert d.decode_request(frontera_pack(req)).url == "http://a.com/"


@pytest.mark.parametrize("codec", [mp_codec, json_codec])
def test_round_trip(codec):
    enc, dec = codec.Encoder(send_body=True), codec.Decoder()
    req = Request("http://a.com/", headers={"X": "1"}, meta={"k": "v"})
    link = Request("http://a.com/2")
    resp = Response("http://a.com/", 404, headers={"Server": "t"}, body=b"\x00body",
                    meta={"m": 1})
    assert [s.url for s in dec.decode(enc.encode_add_seeds([req, link]))[1]] == [req.url, link.url]
    kind, r = dec.decode(enc.encode_page_crawled(resp))
    assert (kind, r.url, r.status_code, r.body, r.meta) == (
        "page_crawled", resp.url, 404, b"\x00body", {"m": 1})
    kind, parent, links = dec.decode(enc.encode_links_extracted(req, [link]))
    assert (kind, parent.meta, links[0].url) == ("links_extracted", {"k": "v"}, link.url)
    assert dec.decode(enc.encode_request_error(req, "dns"))[2] == "dns"
    assert dec.decode(enc.encode_update_score(req, 0.25, False))[2:] == (0.25, False)
    assert dec.decode(enc.encode_new_job_id(7)) == ("new_job_id", 7)
    assert dec.decode(enc.encode_offset(1, 99)) == ("offset", 1, 99)
    assert dec.decode(enc.encode_stats({"a": 1})) == ("stats", {"a": 1})
    assert dec.decode_request(enc.encode_request(req)).headers == {"X": "1"}


@pytest.mark.parametrize("codec", [mp_codec, json_codec])
def test_body_left_out_unless_asked(codec):
    resp = Response("http://a.com/", 200, body=b"secret")
    assert codec.Decoder().decode(codec.Encoder().encode_page_crawled(resp))[1].body == b""


@pytest.mark.parametrize("buffer", [
    b"", b"\xc1", b"\x92\xc4\x02pc", frontera_pack([b"zz", 1]), frontera_pack({"a": 1}),
    frontera_pack([b"pc", [1, 2]]), frontera_pack([b"pc", ["u", "200", {}, {}, b""]]),
    frontera_pack([b"le", ["u"], []]), frontera_pack([b"njid", "x"]), frontera_pack([]),
    frontera_pack([b"us", frontera_request("http://a/"), "high", True]),
])
def test_msgpack_malformed(buffer):
    with pytest.raises(DecodeError):
        mp_codec.Decoder().decode(buffer)


@pytest.mark.parametrize("buffer", [b"", b"{", b"[]", b'{"type": "nope"}', b'{"type": "offset"}',
                                    b'{"type": "page_crawled", "r": {"url": "u", '
                                    b'"status_code": 200, "body": "%%%"}}'])
def test_json_malformed(buffer):
    with pytest.raises(DecodeError):
        json_codec.Decoder().decode(buffer)


@pytest.mark.parametrize("codec", [mp_codec, json_codec])
def test_oversized_message_is_refused(codec):
    big = codec.Encoder(send_body=True).encode_page_crawled(
        Response("http://a.com/", 200, body=b"x" * 5000))
    with pytest.raises(DecodeError, match="exceeds"):
        codec.Decoder(max_message_bytes=1000).decode(big)


def test_msgpack_size_limits_apply_inside_a_message():
    # A small buffer that claims a huge array must fail fast, not allocate.
    with pytest.raises(DecodeError):
        mp_codec.Decoder().decode(b"\xdd\xff\xff\xff\xff")


def test_codec_chosen_by_name():
    assert codec_module("msgpack") is mp_codec
    assert codec_module("json") is json_codec
    with pytest.raises(ConfigError):
        codec_module("pickle")
