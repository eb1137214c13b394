"""CLI errors: one line, non-zero exit, before any Ray is started."""

import pytest

from raycrawl.cli import main


@pytest.mark.parametrize("argv, message", [
    (["crawl", "http://a.com/", "--out", "o", "--max-pages", "ten"], "invalid int value"),
    (["crawl", "http://a.com/", "--out", "o", "--bogus"], "unrecognized arguments"),
    (["crawl", "http://a.com/"], "--out DIR is required"),
    (["crawl", "--out", "o"], "no seed URLs"),
    (["crawl", "ftp://a.com/", "--out", "o"], "invalid seed URL"),
    (["crawl", "http://a.com/", "--out", "o", "--seeds-file", "/nonexistent/seeds.txt"],
     "cannot read seeds file"),
    (["crawl", "http://a.com/", "--out", "o", "--partitions", "0"], "partitions"),
    (["crawl", "http://a.com/", "--out", "o", "--strategy", "nope"], "strategy 'nope'"),
    (["crawl", "http://a.com/", "--out", "o", "--allow-network", "nonsense"], "CIDR"),
    (["crawl", "http://a.com/", "--out", "o", "--config", "/nonexistent.toml"], "cannot read"),
    (["status", "--state", "/nonexistent/state"], "no crawl state"),
    (["resume", "--state", "/nonexistent/state"], "no crawl state"),
    (["resume", "--state", "/nonexistent/state", "--db-workers", "two"], "invalid int value"),
    (["resume", "--state", "/nonexistent/state", "--db-workers", "0"], "at least 1"),
    (["scale", "--state", "/nonexistent/state"], "give --db-workers"),
    (["scale", "--state", "/nonexistent/state", "--strategy-workers", "-1"], "at least 1"),
    (["scale", "--state", "/nonexistent/state", "--db-workers", "2"], "no crawl state"),
    (["frobnicate"], "invalid choice"),
    (["crawl", "http://a.com/", "--out", "o", "--fetch-workers", "0"], "fetch_workers"),
])
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors exit from inside
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and err.count("\n") == 1, err


def test_unreadable_seed_file_contents(tmp_path, capsys):
    seeds = tmp_path / "seeds.txt"
    seeds.write_bytes(b"\xff\xfe\x00bad")
    assert main(["crawl", "--out", str(tmp_path / "o"), "--seeds-file", str(seeds)]) == 2
    assert "not UTF-8" in capsys.readouterr().err


def test_bad_seed_in_file_is_reported(tmp_path, capsys):
    seeds = tmp_path / "seeds.txt"
    seeds.write_text("http://ok.com/\nnot a url\n")
    assert main(["crawl", "--out", str(tmp_path / "o"), "--seeds-file", str(seeds)]) == 2
    assert "not a url" in capsys.readouterr().err


def test_python_dash_m_raycrawl_is_the_command():
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-m", "raycrawl", "crawl", "--out", "x",
                          "--max-pages", "-1", "http://example.com/"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and run.stderr.startswith("raycrawl: error: max_pages")


class _FakeCrawl:
    crawl_id = "c1"

    def __init__(self):
        from raycrawl.coordinator.reports import CrawlStatus

        self.final = CrawlStatus(crawl_id="c1", phase="finished", fetched=3)
        self.progress = None

    def wait(self, progress=None, interval_s=1.0):
        self.progress = progress
        if progress is not None:
            progress(self.final)
        return self.final


@pytest.mark.parametrize("tty", [True, False])
def test_progress_is_a_bar_on_a_terminal_and_lines_elsewhere(tty, monkeypatch, capsys):
    from raycrawl import cli
    from raycrawl.display import ProgressBar

    monkeypatch.setattr("sys.stderr.isatty", lambda: tty)
    crawl = _FakeCrawl()
    assert cli._follow(crawl, quiet=False) is crawl.final
    assert isinstance(crawl.progress, ProgressBar) is tty
    out, err = capsys.readouterr()
    assert ("finished: fetched 3" in out) is not tty
    assert ("3/3" in err) is tty


@pytest.mark.parametrize("argv", [["list", "--address", "127.0.0.1:1"],
                                  ["crawl", "http://a.com/", "--out", "o",
                                   "--address", "127.0.0.1:1"]])
def test_a_ray_address_that_does_not_answer_is_one_line_at_once(argv, tmp_path):
    """Ray would retry a dead GCS address for minutes; raycrawl says so at once."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run([os.path.join(os.path.dirname(sys.executable), "raycrawl"), *argv],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "cannot reach Ray at 127.0.0.1:1" in done.stderr
