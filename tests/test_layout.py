"""The code's shape, checked: production modules do not import the test-only fault hook, the
fetch path has no long functions, no config field exists for tests only, an actor's process
loads no other role's code."""

from __future__ import annotations

import ast
import json
import pathlib
import subprocess
import sys

import pytest

from raycrawl.config import FIELD_NAMES

ROOT = pathlib.Path(__file__).resolve().parent.parent
PRODUCTION = [p for folder in ("raycrawl", "actors", "strategies")
              for p in (ROOT / folder).rglob("*.py") if "testing" not in p.parts]


def imported(path: pathlib.Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def test_no_production_module_imports_the_fault_hook():
    assert PRODUCTION
    offenders = [str(p.relative_to(ROOT)) for p in PRODUCTION
                 if any(n.startswith("raycrawl.testing.faults") for n in imported(p))]
    assert offenders == []


def test_no_function_on_the_fetch_path_is_over_60_lines():
    long = []
    for path in (ROOT / "raycrawl" / "fetch").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > 60:
                    long.append(f"{path.name}:{node.name} {lines} lines")
    assert long == []


def test_no_config_field_is_for_tests_only():
    assert not {"crash_points", "crash_point", "fault_points"} & FIELD_NAMES


# What an actor's process must not load at its start: the fetch path (HTTP, parsers, the
# browser) is the fetch workers' alone, and the driver's API is nobody's.
FETCH_PATH = ("aiohttp", "parsel", "lxml", "selectolax", "raycrawl.fetch.page",
              "raycrawl.render.browser", "actors.fetch_worker")
DRIVER = ("raycrawl.api", "raycrawl.debugger", "raycrawl.display", "pandas")


@pytest.mark.parametrize("module,unloaded", [
    ("actors.coordinator", FETCH_PATH + DRIVER),
    ("actors.db_worker", FETCH_PATH + DRIVER),
    ("actors.strategy_worker", FETCH_PATH + DRIVER + ("warcio",)),
    ("actors.registry", FETCH_PATH + DRIVER + ("rocksdict", "warcio")),
    ("actors.fetch_worker", DRIVER + ("raycrawl.db_worker.queue", "raycrawl.strategy_worker")),
])
def test_an_actor_process_loads_its_own_role_only(module, unloaded):
    code = ("import importlib, json, sys, ray\n"
            "ray._private.worker.global_worker.mode = ray.WORKER_MODE  # as in an actor\n"
            f"importlib.import_module({module!r})\n"
            f"print(json.dumps([m for m in {list(unloaded)!r} if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout
    assert json.loads(out.splitlines()[-1]) == []
