import pytest

from raycrawl.config import CrawlConfig, config_from_mapping, read_toml
from raycrawl.errors import ConfigError


def test_defaults_and_derived_paths():
    c = CrawlConfig(out="o")
    assert c.state_dir.endswith("o/state") and c.pages_dir.endswith("o/pages")
    assert c.strategy == "bfs" and c.per_host == 1 and c.delay_s == 1.0
    assert c.crawl_id.startswith("crawl-")
    assert CrawlConfig(out="o", state="s").state_dir == "s"


@pytest.mark.parametrize("settings, field", [
    ({"partitions": 0}, "partitions"), ({"max_pages": -1}, "max_pages"),
    ({"delay_s": -0.5}, "delay_s"), ({"per_host": True}, "per_host"),
    ({"strategy_workers": 9, "partitions": 8}, "strategy_workers"),
    ({"codec": "pickle"}, "codec"), ({"allow_network": ("10.0.0.0/33",)}, "allow_network"),
    ({"crawl_id": "a/b"}, "crawl_id"), ({"user_agent": "a\nb"}, "user_agent"),
    ({"per_ip": 0}, "per_ip"), ({"max_host_hops": -1}, "max_host_hops"),
])
def test_invalid_values_name_the_field(settings, field):
    with pytest.raises(ConfigError, match=field):
        CrawlConfig(out="o", **settings)


def test_flag_and_toml_spellings_map_to_fields(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[crawl]\nmax-pages = 5\ndelay = 0.5\nno_robots = true\n'
                    'allow-network = "127.0.0.0/8"\nout = "x"\nper-ip = 2\n'
                    'max-host-hops = 0\n')
    c = config_from_mapping(read_toml(str(path)))
    assert (c.max_pages, c.delay_s, c.robots, c.allow_network) == (5, 0.5, False,
                                                                   ("127.0.0.0/8",))
    assert (c.per_ip, c.max_host_hops) == (2, 0)


def test_unknown_and_mistyped_settings(tmp_path):
    with pytest.raises(ConfigError, match="unknown setting"):
        config_from_mapping({"out": "o", "max_pagez": 1})
    with pytest.raises(ConfigError):
        config_from_mapping({"out": "o", "max_pages": "ten"})
    bad = tmp_path / "bad.toml"
    bad.write_text("max_pages = [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        read_toml(str(bad))
    with pytest.raises(ConfigError, match="cannot read"):
        read_toml(str(tmp_path / "missing.toml"))


def test_sync_writes_reaches_the_stores(tmp_path):
    from raycrawl.storage.store import Store

    toml = tmp_path / "c.toml"
    toml.write_text("[crawl]\nout = 'o'\nsync_writes = false\n")
    config = config_from_mapping(read_toml(str(toml)))
    assert config.sync_writes is False and CrawlConfig().sync_writes is True
    for sync in (True, False):
        store = Store(str(tmp_path / f"db-{sync}"), sync=sync)
        try:
            assert store._sync.sync is sync  # the options of acknowledged writes
            wb = store.batch()
            wb.put(b"k", b"v")
            store.write(wb)
            assert store.multi_get([b"k"]) == [b"v"]
        finally:
            store.close()
