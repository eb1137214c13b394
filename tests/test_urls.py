import subprocess
import sys

import pytest

from raycrawl.errors import InvalidURL
from raycrawl.urls import canonicalize, fingerprint, host_of, partition_of, url_info


@pytest.mark.parametrize("raw, canonical", [
    ("HTTP://Example.COM:80/a/./b/../c?b=2&a=1#frag", "http://example.com/a/c?a=1&b=2"),
    ("https://EXAMPLE.com:443", "https://example.com/"),
    ("https://example.com:8443/x", "https://example.com:8443/x"),
    ("http://example.com/%7Efoo/%e2%82%ac", "http://example.com/~foo/%E2%82%AC"),
    ("http://bücher.example/ä?x=ü", "http://xn--bcher-kva.example/%C3%A4?x=%C3%BC"),
    ("http://a.com/a b", "http://a.com/a%20b"),
    ("  http://a.com/x  ", "http://a.com/x"),
    ("http://[::1]:8080/x", "http://[::1]:8080/x"),
])
def test_canonical_forms(raw, canonical):
    assert canonicalize(raw) == canonical


def test_variants_share_one_canonical_url():
    variants = ["http://h.com/p/1?a=1&b=2", "http://h.com/p/1?b=2&a=1#top",
                "HTTP://H.COM/x/../p/1?a=1&b=2", "http://h.com:80/p/./1?b=2&a=1"]
    assert len({canonicalize(v) for v in variants}) == 1


@pytest.mark.parametrize("bad", ["ftp://a.com/x", "javascript:void(0)", "mailto:a@b.c",
                                 "/relative/path", "http://", "", "http:///x", 42])
def test_rejects_what_cannot_be_crawled(bad):
    with pytest.raises(InvalidURL):
        canonicalize(bad)


def test_host_key_drops_port_and_case():
    assert host_of(canonicalize("http://Sub.Example.com:8080/x")) == "sub.example.com"


def test_fingerprint_and_partition_are_stable_across_processes():
    # Known values pin the hash functions; a second interpreter with another hash seed agrees.
    code = ("from raycrawl.urls import fingerprint, partition_of;"
            "print(fingerprint('http://example.com/'), partition_of('example.com', 64))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"PYTHONHASHSEED": "123"}, check=True).stdout.split()
    assert [int(x) for x in out] == [fingerprint("http://example.com/"),
                                     partition_of("example.com", 64)]
    # xxh64 / xxh32 values: changing the hash would reshuffle every existing crawl's state.
    assert fingerprint("http://example.com/") == 0xFDB57B2D0813B5B1
    assert partition_of("example.com", 64) == 58


def test_partition_depends_on_host_only():
    a = url_info("http://Example.com/a", 64)
    b = url_info("http://example.com:8080/b?x=1", 64)
    assert a.host == b.host == "example.com"
    assert a.partition == b.partition == partition_of("EXAMPLE.com", 64)
    assert 0 <= a.partition < 64
    spread = {partition_of(f"host{i}.example", 8) for i in range(200)}
    assert spread == set(range(8))


def _slow_canonical(url, monkeypatch):
    """What canonicalize answers with the fast path switched off (w3lib + yarl every time)."""
    import re

    from raycrawl import urls

    with monkeypatch.context() as m:
        m.setattr(urls, "_PLAIN", re.compile(r"(?!)"))
        try:
            return urls._canonical(url)
        except InvalidURL:
            return None


def test_fast_path_gives_w3libs_answer(monkeypatch):
    import random

    from raycrawl import urls

    rng = random.Random(5)
    hosts = ["a.b", "127.0.0.1", "ex-ample.com", "0x7f.1", "xn--bcher-kva.de", "a", "a.b-c.d",
             "A.b", "a..b", "a.b."]
    fast = 0
    for _ in range(3000):
        tail = "".join(rng.choice("abcAZ09._~-/") for _ in range(rng.randint(0, 14)))
        path = "/" + tail + rng.choice(["", "", "", "%41", "?b=1&a=2", "#f", "/../x", " "])
        port = rng.choice(["", ":80", ":443", ":8080", ":65535", ":65536", ":0", ":080"])
        url = f"{rng.choice(['http', 'https'])}://{rng.choice(hosts)}{port}{path}"
        fast += urls._PLAIN.fullmatch(url) is not None
        try:
            got = urls._canonical(url)
        except InvalidURL:
            got = None
        assert got == _slow_canonical(url, monkeypatch), url
    assert fast > 500  # the fast path was exercised


def test_resolve_canonicalises_like_urljoin():
    import random
    from urllib.parse import urljoin

    from raycrawl.fetch.extract import resolve

    def canon(url):
        try:
            return canonicalize(url)
        except InvalidURL:
            return None

    rng = random.Random(7)
    bases = ["http://a.b/x/y?q=1#f", "https://127.0.0.1:8080/", "http://h.com",
             "http://u:p@h.com:81/a/b/"]
    for _ in range(5000):
        href = rng.choice(["/", "http://", "https://", "//", "", "#", "./", "../", "?"]) + "".join(
            rng.choice("ab/.?#=&%20:") for _ in range(rng.randint(0, 10)))
        base = rng.choice(bases)
        stripped = href.strip()
        expected = [] if not stripped or stripped.startswith("#") else [urljoin(base, stripped)]
        assert [canon(u) for u in resolve(base, [href])] == [canon(u) for u in expected], href


def test_a_trailing_dot_is_the_same_host():
    assert canonicalize("http://H.com./a") == canonicalize("http://h.com/a") == "http://h.com/a"
    assert url_info("http://h.com.:8080/x", 64).host == url_info("http://h.com/y", 64).host
    assert url_info("http://h.com./x", 64).fingerprint == url_info("http://h.com/x", 64).fingerprint
