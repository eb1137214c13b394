"""raycrawl operated the Ray way, on a ``ray start --head`` cluster with its dashboard: metrics
on the Prometheus endpoint (and the Grafana dashboard's queries), ``ray job submit``, several
crawls at once with ``raycrawl list``, the notebook, and the launcher's script."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
import urllib.request

import pyarrow.parquet as pq
import pytest

from raycrawl.output.durable import read_pages
from raycrawl.testing.synthweb import Link, SyntheticWeb
from tests.test_faults import IN_FLIGHT

# Every test of the ray start cluster (a session fixture) is in this file: scripts/test runs
# pytest-xdist with --dist loadfile, so one worker starts the cluster, once.
pytestmark = pytest.mark.ray

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RAYCRAWL = os.path.join(os.path.dirname(sys.executable), "raycrawl")
LOOPBACK = ["--allow-network", "127.0.0.0/8", "--quiet"]


def crawl_cmd(seeds: str | list[str], out: str, *flags: str) -> list[str]:
    return [RAYCRAWL, "crawl", *([seeds] if isinstance(seeds, str) else seeds), "--out", out,
            *LOOPBACK, *flags]


def rows_of(out: str) -> list[str]:
    return pq.read_table(os.path.join(out, "pages")).column("url").to_pylist()


def assert_whole(out: str, web: SyntheticWeb) -> None:
    urls = rows_of(out)
    assert sorted(urls) == sorted(set(web.reachable())), "every reachable URL, exactly once"


def scrape(cluster) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{cluster.metrics_port}/metrics",
                                timeout=10) as resp:
        return resp.read().decode()


def raycrawl_series(text: str, crawl_id: str) -> set[str]:
    """The names of raycrawl's series in a scrape that carry ``crawl_id``."""
    names = set()
    for line in text.splitlines():
        m = re.match(r"(ray_raycrawl_[a-z_]+)\{(.*)\}", line)
        if m and f'crawl_id="{crawl_id}"' in m.group(2):
            names.add(m.group(1))
    return names


def test_metrics_reach_the_prometheus_endpoint_while_a_crawl_runs(ray_cluster, tmp_path):
    """Every metric raycrawl declares shows on the cluster's endpoint during a crawl (a spider
    for items, robots rules for robots errors, 500 pages for retries), and every query of the
    shipped Grafana dashboard names only series the endpoint serves."""
    from actors.metrics import exported_names

    web = SyntheticWeb(hosts=4, pages_per_host=30, seed=3,
                       robots={0: "User-agent: *\nDisallow: /p/2\n"}).start()
    out = str(tmp_path / "out")
    error_page = web.url(Link("e", 1, 1))  # a 500: retried
    proc = subprocess.Popen(
        crawl_cmd([web.seed_url, error_page], out, "--delay", "0.3", "--crawl-id",
                  "metrics-crawl",
                  "--spider", os.path.join(ROOT, "examples", "synthweb_spider.py:SynthSpider"),
                  "--address", ray_cluster.address),
        env=ray_cluster.env, cwd=str(tmp_path), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    try:
        seen: set[str] = set()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not exported_names() <= seen:
            seen |= raycrawl_series(scrape(ray_cluster), "metrics-crawl")
            running = proc.poll() is None
            time.sleep(1.0)
        assert running, (f"the crawl ended before these were seen: "
                         f"{sorted(exported_names() - seen)}: {proc.communicate()[0]}")
        assert exported_names() <= seen, f"missing: {sorted(exported_names() - seen)}"
        out_text, _ = proc.communicate(timeout=180)
        assert proc.returncode == 0, out_text
        # Fetch workers close their HTTP sessions before they end.
        assert "Unclosed client session" not in out_text
    finally:
        if proc.poll() is None:
            proc.kill()
        web.stop()
    # Counters reach the endpoint every report interval: the last one before the crawl's
    # actors ended may be missing (tests/test_metrics.py counts exactly, without Ray).
    text = scrape(ray_cluster)
    fetched = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                  if line.startswith("ray_raycrawl_pages_fetched_total{")
                  and 'crawl_id="metrics-crawl"' in line)
    assert 0 < fetched <= len(rows_of(out))
    with open(os.path.join(ROOT, "deploy", "grafana", "raycrawl.json")) as fh:
        dashboard = json.load(fh)
    served = {re.match(r"[a-z_]+", line).group(0) for line in text.splitlines()
              if line.startswith("ray_raycrawl_")}
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            names = set(re.findall(r"ray_raycrawl_[a-z_]+", target["expr"]))
            assert names and names <= served, (panel["title"], names - served)


def test_ray_job_submit_runs_a_crawl_with_both_entry_points(ray_cluster, tmp_path):
    """``ray job submit --working-dir . -- raycrawl crawl ...`` and ``-- python -m raycrawl
    crawl ...`` from the repository (the upload leaves out the venv: .rayignore)."""
    web = SyntheticWeb(hosts=3, pages_per_host=15, seed=5).start()
    try:
        for i, entry in enumerate((["raycrawl"], ["python", "-m", "raycrawl"])):
            out = str(tmp_path / f"job-{i}")
            done = subprocess.run(
                [os.path.join(os.path.dirname(sys.executable), "ray"), "job", "submit",
                 "--address", ray_cluster.dashboard, "--working-dir", ".", "--",
                 *entry, "crawl", web.seed_url, "--out", out, "--delay", "0", *LOOPBACK],
                env=ray_cluster.env, cwd=ROOT, capture_output=True, text=True, timeout=240)
            assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
            assert "finished" in done.stdout
            assert_whole(out, web)
    finally:
        web.stop()


def test_two_crawls_share_the_cluster_and_both_show_in_list(ray_cluster, tmp_path):
    """Two crawls started at once on the 2-CPU cluster get one fetch worker each (not all for
    the first), both show in ``raycrawl list`` while running, a third with a running one's id
    is a one-line error, and both finish whole."""
    webs = [SyntheticWeb(hosts=4, pages_per_host=25, seed=s).start() for s in (11, 12)]
    procs = []
    try:
        for i, web in enumerate(webs):
            procs.append(subprocess.Popen(
                crawl_cmd(web.seed_url, str(tmp_path / f"out-{i}"), "--delay", "0.2",
                          "--crawl-id", f"shared-{i}"),
                env=ray_cluster.client_env, cwd=str(tmp_path), stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True))
        listed: dict[str, str] = {}
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and len(listed) < 2:
            lines = subprocess.run([RAYCRAWL, "list", "--address", ray_cluster.address],
                                   env=ray_cluster.env, capture_output=True, text=True,
                                   timeout=60).stdout.splitlines()
            listed = {line.split()[0]: line for line in lines
                      if line.split() and line.split()[0].startswith("shared-")
                      and " running " in line and "fetch workers 1 " in line}
            time.sleep(0.5)
        assert set(listed) == {"shared-0", "shared-1"}, "both running, one CPU each"
        for line in listed.values():
            assert str(tmp_path) in line  # the state folder
        dup = subprocess.run(crawl_cmd(webs[0].seed_url, str(tmp_path / "dup"),
                                       "--crawl-id", "shared-0"),
                             env=ray_cluster.client_env, cwd=str(tmp_path),
                             capture_output=True, text=True, timeout=120)
        assert dup.returncode == 2
        assert dup.stderr.count("\n") == 1 and "already running" in dup.stderr
        for proc, web, i in zip(procs, webs, range(2)):
            text, _ = proc.communicate(timeout=240)
            assert proc.returncode == 0, text
            assert "Unclosed client session" not in text
            assert_whole(str(tmp_path / f"out-{i}"), web)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        for web in webs:
            web.stop()


def test_the_example_notebook_runs(ray_cluster, tmp_path):
    """``examples/crawl.ipynb`` executed in a kernel of this venv against the cluster: an
    HTML status, a live view and a progress bar (widgets), pandas and Ray Data reads."""
    import nbclient
    import nbformat

    nb = nbformat.read(os.path.join(ROOT, "examples", "crawl.ipynb"), as_version=4)
    saved = dict(os.environ)
    os.environ.update({"RAY_ADDRESS": ray_cluster.address, "PATH": ray_cluster.env["PATH"]})
    try:
        nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    html = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert any("raycrawl-status" in h for h in html), "the crawl displays as a status table"
    widgets = [o for o in outputs
               if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert len(widgets) >= 2, "the live view and the progress bar are widgets"
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    m = re.search(r"(\d+) rows; (\d+) reachable", text)
    assert m and m.group(1) == m.group(2), text
    assert "finished" in text


def test_the_launcher_script_crawls_the_cluster_it_runs_on(ray_cluster, tmp_path):
    """``deploy/crawl.py``, the script ``ray submit`` runs on the head: ``--address auto``
    finds the cluster (here through RAY_ADDRESS, as on a head node it finds the local one)."""
    web = SyntheticWeb(hosts=2, pages_per_host=10, seed=9).start()
    try:
        out = str(tmp_path / "out")
        done = subprocess.run(
            [sys.executable, os.path.join(ROOT, "deploy", "crawl.py"), web.seed_url, "--out",
             out, "--delay", "0", *LOOPBACK], env=ray_cluster.client_env, cwd=str(tmp_path),
            capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stdout + done.stderr
        assert_whole(out, web)
    finally:
        web.stop()


KILLS_SCRIPT = textwrap.dedent("""
    import json, sys, time
    import ray
    from raycrawl import Crawl
    from raycrawl.testing.synthweb import SyntheticWeb
    from tests.test_faults import SETTINGS, actor_named

    ray.init(address=sys.argv[2], namespace="raycrawl")
    web = SyntheticWeb(hosts=30, pages_per_host=60, seed=53, latency_s=0.01).start()
    expected = len(web.reachable())
    crawl = Crawl(seeds=[web.seed_url], out=sys.argv[1], **SETTINGS).start()
    killed = []
    for victim, at in (("db-worker-0/fetcher-", 0.15), ("db-worker-1", 0.3),
                       ("strategy-worker-0", 0.45), ("coordinator", 0.6)):
        while crawl.stats()["fetched"] < at * expected:
            time.sleep(0.05)
        ray.kill(actor_named(f"{crawl.crawl_id}/{victim}"), no_restart=False)
        killed.append(victim)
    stats = crawl.wait(timeout=300, interval_s=0.2)
    with web.lock:
        hits = dict(web.hits)
    print("RESULT", json.dumps({"phase": stats["phase"], "errors": stats["errors"],
                      "kinds": dict(stats["error_kinds"]), "killed": killed,
                      "expected": sorted(web.reachable()),
                      "most": max(hits.values()), "repeats": sum(n - 1 for n in hits.values())}),
          flush=True)
    web.stop()
    ray.shutdown()
""")


def test_a_crawl_survives_each_actor_kind_killed_one_after_another(ray_cluster, tmp_path):
    """2 DB and 2 strategy workers, 1800 pages, on a ``ray start`` cluster: a fetch worker, a
    DB worker, a strategy worker and the coordinator killed in turn; every page once, no
    error row."""
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-c", KILLS_SCRIPT, str(out), ray_cluster.address],
                         env=ray_cluster.env,
                         capture_output=True, text=True, timeout=480,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert run.returncode == 0, run.stderr[-3000:]
    results = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
    assert results, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(results[0].removeprefix("RESULT "))
    assert result["phase"] == "finished" and len(result["killed"]) == 4
    assert result["errors"] == 0, result["kinds"]
    assert len(result["expected"]) >= 1500
    urls = read_pages(str(out / "pages")).column("url").to_pylist()
    assert len(urls) == len(set(urls)) and sorted(urls) == result["expected"]
    assert result["most"] <= 3 and result["repeats"] <= 4 * IN_FLIGHT  # one fault's worth each
