"""The deploy files, checked without a container runtime: every YAML file parses, every
`worldstate` command they run parses with the CLI's own argparse parser, probes point at
the port the process listens on, every WORLDSTATE_* variable means something, the scrape
config targets the metrics ports, and every dashboard expression names a family the
processes expose."""

from __future__ import annotations

import contextlib
import io
import json
import re
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

import worldstate
from worldstate.cli.main import build_parser
from worldstate.config import Config

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
YAML_FILES = sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])
CLI_ENV = {
    "WORLDSTATE_METRICS_PORT",
    "WORLDSTATE_METRICS_HOST",
    "WORLDSTATE_LOG_FORMAT",
    "WORLDSTATE_PLAY",
    "WORLDSTATE_COORDINATOR_ID",
}
KNOWN_ENV = {f"WORLDSTATE_{f.name.upper()}" for f in fields(Config)} | CLI_ENV


def parses(argv: list[str]) -> str | None:
    """None if ``worldstate argv...`` parses, else argparse's complaint."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            build_parser().parse_args([str(a) for a in argv])
    except SystemExit as e:
        return f"exit {e.code}: {err.getvalue().strip()}"
    return None


def docs(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_yaml_parses(path: Path) -> None:
    assert docs(path), f"{path} holds no document"


def _compose() -> dict[str, Any]:
    doc: dict[str, Any] = docs(DEPLOY / "compose.yaml")[0]
    return doc


def _worldstate_services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = _compose()["services"]
    return {
        n: s
        for n, s in services.items()
        if "build" in s or str(s.get("image", "")).startswith("worldstate")
    }


def test_dockerfile_entrypoint_is_the_cli() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["worldstate"]' in text


def test_compose_commands_parse() -> None:
    services = _worldstate_services()
    assert {"migrate", "coordinator"} <= set(services)
    commands = {n: s.get("command") for n, s in services.items()}
    assert any(c and c[0] == "serve" for c in commands.values()), commands
    for name, svc in services.items():
        cmd = svc.get("command")
        assert isinstance(cmd, list) and cmd, f"{name}: command must be a list of arguments"
        assert parses(cmd) is None, f"{name}: {cmd}: {parses(cmd)}"
        test = (svc.get("healthcheck") or {}).get("test")
        if test and "worldstate" in test:
            probe = test[test.index("worldstate") + 1 :]
            assert parses(probe) is None, f"{name} healthcheck: {parses(probe)}"
        for key in svc.get("environment") or {}:
            if key.startswith("WORLDSTATE_"):
                assert key in KNOWN_ENV, f"{name}: {key} is no Config field or CLI variable"


def test_compose_order_migrate_before_servers() -> None:
    services = _worldstate_services()
    for name, svc in services.items():
        if svc["command"][0] in ("serve", "coordinator"):
            dep = svc.get("depends_on") or {}
            assert dep.get("migrate", {}).get("condition") == "service_completed_successfully", (
                f"{name} must start after the schema step"
            )


def _flag(cmd: list[str], flag: str, default: str) -> str:
    return str(cmd[cmd.index(flag) + 1]) if flag in cmd else default


def test_compose_probes_and_scrape_targets_match_ports() -> None:
    services = _worldstate_services()
    listening: dict[str, str] = {}
    for name, svc in services.items():
        cmd = [str(c) for c in svc["command"]]
        if cmd[0] not in ("serve", "coordinator"):
            continue
        port = _flag(cmd, "--metrics-port", "9464" if cmd[0] == "serve" else "9465")
        listening[name] = port
        test = svc["healthcheck"]["test"]
        assert _flag(test, "--port", "9464") == port, f"{name}: probe port != {port}"
    prom = docs(DEPLOY / "prometheus" / "prometheus.yml")[0]
    targets = {
        t for job in prom["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]
    }
    assert targets == {f"{n}:{p}" for n, p in listening.items()}


def _k8s_containers() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for d in docs(path):
            if d.get("kind") not in ("Deployment", "StatefulSet", "Job"):
                continue
            spec = d["spec"]["template"]["spec"]
            for c in [*spec.get("initContainers", []), *spec["containers"]]:
                out.append((f"{path.name}:{c['name']}", c))
    return out


def test_k8s_commands_probes_and_env() -> None:
    containers = _k8s_containers()
    run = {c["args"][0] for _, c in containers if c.get("image") == "worldstate"}
    assert {"serve", "coordinator", "migrate"} <= run
    for name, c in containers:
        if c.get("image") != "worldstate":
            continue
        args = [str(a) for a in c.get("args", [])]
        assert "command" not in c, f"{name}: the image's entrypoint is the CLI; use args"
        assert parses(args) is None, f"{name}: {args}: {parses(args)}"
        assert "resources" in c and "requests" in c["resources"], f"{name}: no requests"
        for env in c.get("env", []):
            if env["name"].startswith("WORLDSTATE_"):
                assert env["name"] in KNOWN_ENV, f"{name}: unknown {env['name']}"
        if args[0] in ("serve", "coordinator"):
            ports = {p["name"]: p["containerPort"] for p in c["ports"]}
            port = _flag(args, "--metrics-port", "9464" if args[0] == "serve" else "9465")
            for probe in ("livenessProbe", "readinessProbe"):
                http = c[probe]["httpGet"]
                assert str(ports.get(http["port"], http["port"])) == port, f"{name} {probe}"
                assert http["path"] in ("/healthz", "/readyz")
    cfg = docs(DEPLOY / "k8s" / "config.yaml")[0]
    for key in cfg["data"]:
        assert key in KNOWN_ENV, f"config.yaml: unknown {key}"


def test_k8s_kustomization_lists_every_manifest() -> None:
    kust = docs(DEPLOY / "k8s" / "kustomization.yaml")[0]
    manifests = {p.name for p in (DEPLOY / "k8s").glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kust["resources"]) == manifests


async def _exposed_names(tmp_path: Path) -> set[str]:
    """Sample names a serve world and a coordinator expose (both with every family)."""
    from worldstate.metrics import coordinator_registry

    url = f"sqlite+aiosqlite:///{tmp_path}/w.db"
    names: set[str] = set()
    async with worldstate.connect(url, bus="memory://deploy-test", server_id="gs-1") as world:
        for fam in text_string_to_metric_families(generate_latest(world.metrics).decode()):
            names.update(s.name for s in fam.samples)
            names.add(fam.name)  # families without samples yet (lag before any batch)
            if fam.type == "counter":
                names.add(fam.name + "_total")
        coord = worldstate.MeshCoordinator(Config(store_url=url, bus_url="memory://deploy-test"))
        async with coord:
            text = generate_latest(coordinator_registry(coord)).decode()
            for fam in text_string_to_metric_families(text):
                names.update(s.name for s in fam.samples)
                names.add(fam.name)  # summaries: _sum/_count
    return names


async def test_dashboards_use_exposed_families(tmp_path: Path) -> None:
    exposed = await _exposed_names(tmp_path)
    boards = sorted((DEPLOY / "grafana").glob("*.json"))
    assert {b.stem for b in boards} >= {
        "mesh-overview",
        "strong-path",
        "eventual-causal",
        "store-cache",
    }
    for board in boards:
        doc = json.loads(board.read_text())
        exprs = [t["expr"] for p in doc["panels"] for t in p["targets"]]
        assert exprs, board.name
        for expr in exprs:
            for name in re.findall(r"worldstate_[a-z_]+", expr):
                assert name in exposed, f"{board.name}: {name} is not exposed"
