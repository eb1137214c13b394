"""The files of ``deploy/``: the cluster configs pass Ray's own validator and install raycrawl,
the Grafana dashboard queries only the series raycrawl exports, ``deploy/crawl.py`` joins the
cluster it runs on. No Ray is started and nothing leaves the machine."""

from __future__ import annotations

import copy
import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import pytest
import yaml

from actors.metrics import METRICS, exported_names
from raycrawl.cli import build_parser

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
CONFIGS = sorted(DEPLOY.glob("*.yaml"), key=lambda p: p.name)
METRIC = re.compile(r"(ray_raycrawl_[a-z_]+)(\{[^}]*\})?")
CRAWL_FILTER = 'crawl_id=~"$crawl_id"'


def prepared(path: Path) -> dict[str, Any]:
    """The config as `ray up` validates it. `ray up` (``commands._bootstrap_config``) runs
    ``prepare_config`` first: it fills in the provider's defaults (``validate_config`` requires
    some, e.g. ``cluster_synced_files``), merges ``setup_commands`` into the head's and the
    workers' lists, and, for the local provider, makes its one node type. The two steps
    between preparing and validating (detecting an AWS instance's resources, bootstrapping
    the provider) call the cloud, and are left out."""
    from ray.autoscaler._private.util import prepare_config

    return prepare_config(yaml.safe_load(path.read_text()))


def validate(config: dict[str, Any]) -> None:
    from ray.autoscaler._private.util import validate_config

    validate_config(config)


def test_both_clusters_have_a_config() -> None:
    assert [p.name for p in CONFIGS] == ["aws.yaml", "local.yaml"]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_passes_rays_validator(path: Path) -> None:
    config = prepared(path)
    validate(config)
    assert config["cluster_name"] == "raycrawl"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_validator_rejects_a_node_type_with_an_unknown_key(path: Path) -> None:
    config = copy.deepcopy(prepared(path))
    config["available_node_types"][config["head_node_type"]]["instance_type"] = "m5.large"
    with pytest.raises(jsonschema.ValidationError, match="instance_type"):
        validate(config)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_node_type_installs_raycrawl_from_the_synced_checkout(path: Path) -> None:
    config = prepared(path)
    assert config["file_mounts"] == {"~/raycrawl": "."}
    setups = {name: (config["head_setup_commands"] if name == config["head_node_type"]
                     else node.get("worker_setup_commands", config["worker_setup_commands"]))
              for name, node in config["available_node_types"].items()}
    for name, commands in setups.items():
        assert any("pip install" in c and "~/raycrawl" in c for c in commands), name


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_head_exports_metrics_and_runs_the_autoscaler(path: Path) -> None:
    config = prepared(path)
    start = " ".join(config["head_start_ray_commands"])
    assert "ray start --head" in start
    assert "--metrics-export-port=" in start
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in start
    assert "--metrics-export-port=" in " ".join(config["worker_start_ray_commands"])


# The Grafana dashboard


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads((DEPLOY / "grafana" / "raycrawl.json").read_text())


def exprs(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p["targets"]]


def test_every_panel_queries_through_the_datasource_variable(dashboard: dict[str, Any]) -> None:
    assert dashboard["panels"]
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert {"x", "y", "w", "h"} <= panel["gridPos"].keys(), panel["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    crawl = variables["crawl_id"]
    assert crawl["multi"] and crawl["includeAll"]
    assert crawl["query"]["query"] == "label_values(ray_raycrawl_queued, crawl_id)"


def test_every_expr_names_only_exported_series_filtered_by_crawl(
        dashboard: dict[str, Any]) -> None:
    names = exported_names()
    for expr in exprs(dashboard):
        found = METRIC.findall(expr)
        assert found, expr
        for name, selector in found:
            assert name in names, f"{name} is not exported (in {expr})"
            assert CRAWL_FILTER in selector, f"{name} is not filtered by crawl (in {expr})"


def test_every_metric_has_a_panel(dashboard: dict[str, Any]) -> None:
    queried = {name for expr in exprs(dashboard) for name, _ in METRIC.findall(expr)}
    missing = [m.name for m in METRICS
               if not any(q.startswith(f"ray_{m.name}") for q in queried)]
    assert not missing


# deploy/crawl.py


@pytest.fixture(scope="module")
def crawl_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("deploy_crawl", DEPLOY / "crawl.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # the script's __main__ block does not run
    return module


def test_crawl_joins_the_cluster_it_runs_on(crawl_script: ModuleType) -> None:
    args = ["https://a.com/", "--out", "/mnt/shared/out", "--max-pages", "10"]
    command = crawl_script.argv(args)
    assert command == ["crawl", "--address", "auto", *args]
    parsed = build_parser().parse_args(command)
    assert (parsed.address, parsed.seeds, parsed.max_pages) == ("auto", ["https://a.com/"], 10)


@pytest.mark.parametrize("given", [["--address", "ray://head:10001"],
                                   ["--address=ray://head:10001"],
                                   ["--addr", "ray://head:10001"]])
def test_crawl_keeps_an_address_given(crawl_script: ModuleType, given: list[str]) -> None:
    args = ["https://a.com/", "--out", "o", *given]
    command = crawl_script.argv(args)
    assert command == ["crawl", *args]
    assert build_parser().parse_args(command).address == "ray://head:10001"


def test_crawl_rejects_what_raycrawl_rejects(crawl_script: ModuleType, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        crawl_script.argv(["https://a.com/", "--out", "o", "--bogus"])
    assert exc.value.code == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_a_job_upload_of_the_repository_leaves_out_venvs_results_and_outputs(tmp_path):
    """What ``ray job submit --working-dir .`` would upload, as Ray's own packaging walks the
    folder (.gitignore and .rayignore): the code, not the venv, benchmark logs or outputs."""
    import shutil
    from pathlib import Path

    from ray._private.runtime_env.packaging import _dir_travel

    root = Path(__file__).resolve().parent.parent
    work = tmp_path / "repo"
    shutil.copytree(root, work, ignore=shutil.ignore_patterns(".venv", ".git"))
    for extra in (".venv/bin/python", "venv/lib/x.py", "demo-out/pages/part-0.parquet",
                  "out/warc/a.warc.gz", "benchmarks/results/log/x.json", "notes.parquet"):
        (work / extra).parent.mkdir(parents=True, exist_ok=True)
        (work / extra).write_text("x")
    uploaded: list[str] = []
    _dir_travel(work, [], lambda p: p.is_file() and uploaded.append(str(p.relative_to(work))),
                include_gitignore=True)
    files = set(uploaded)
    assert {"raycrawl/cli.py", "actors/coordinator.py", "pyproject.toml"} <= files
    left_out = [f for f in files if f.startswith((".venv", "venv", "demo-out", "out/",
                                                  "benchmarks/results"))
                or f.endswith((".parquet", ".warc.gz"))]
    assert left_out == []
