"""The public surface: ``raycrawl.__all__`` and the README's table of error kinds."""

import os
import re

import raycrawl
from raycrawl.errors import ErrorKind

README = os.path.join(os.path.dirname(__file__), "..", "README.md")


def test_all_is_pinned():
    assert raycrawl.__all__ == [
        "ConfigError", "Crawl", "CrawlConfig", "CrawlStateError", "CrawlingStrategy",
        "DecodeError", "Follow", "InvalidURL", "Parsed", "RaycrawlError", "Request",
        "Response", "SeedError", "Spider", "SpiderError", "SpiderResponse", "StrategyError",
        "URLState", "parse", "read_items", "read_pages"]
    assert all(hasattr(raycrawl, name) for name in raycrawl.__all__)
    assert sorted(raycrawl._WHERE) == sorted(raycrawl.__all__)  # (loaded when first used)


def test_codecs_keep_their_import_paths():
    from raycrawl.codecs import json, msgpack

    assert msgpack.Encoder and msgpack.Decoder and json.Encoder and json.Decoder


def test_the_readme_error_table_is_the_error_kinds():
    with open(README, encoding="utf-8") as fh:
        text = fh.read()
    rows = re.findall(r"^\| `([a-z-]+)` \| (yes|no) \| (yes|no) \|", text, flags=re.M)
    table = {kind: (retried == "yes", fetched == "yes") for kind, retried, fetched in rows}
    assert table == {str(k): (k.retryable, k.fetched) for k in ErrorKind}
