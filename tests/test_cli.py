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
    (["frobnicate"], "invalid choice"),
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
