"""The security deploy files: parsed, internally consistent, and their worldstate commands
accepted by the CLI parser (``deploy/compose.secure.yaml``, ``deploy/k8s/secure/``,
``deploy/mosquitto/``, ``deploy/cockroach/roles.sql``)."""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from worldstate.cli.main import build_parser

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SECURE_COMPOSE = DEPLOY / "compose.secure.yaml"
SECURE_K8S = DEPLOY / "k8s" / "secure"


def _commands_parse(argv: list[str]) -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    names = set(sub.choices)
    if argv[0] not in names:
        pytest.fail(f"`worldstate {shlex.join(argv)}`: no such command (have {sorted(names)})")
    try:
        parser.parse_args(argv)
    except SystemExit:
        pytest.fail(f"`worldstate {shlex.join(argv)}` is rejected by the CLI parser")


def _compose() -> dict[str, Any]:
    doc = yaml.safe_load(SECURE_COMPOSE.read_text())
    assert isinstance(doc, dict)
    return doc


def _worldstate_services(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: svc for name, svc in doc["services"].items() if svc.get("image") == "worldstate:dev"
    }


def test_secure_compose_parses_and_uses_tls_everywhere() -> None:
    doc = _compose()
    services = _worldstate_services(doc)
    assert {"gameserver-1", "coordinator", "inspector", "keys"} <= set(services)
    for name, svc in services.items():
        env = svc["environment"]
        store = env["WORLDSTATE_STORE_URL"]
        assert "sslmode=verify-full" in store and "sslrootcert=" in store, name
        assert "root@" not in store, f"{name} connects as root"
        if "WORLDSTATE_BUS_URL" in env:
            assert env["WORLDSTATE_BUS_URL"].startswith("mqtts://"), name
            assert "${MQTT_" in env["WORLDSTATE_BUS_URL"], f"{name}: password not from env"
        if "WORLDSTATE_CACHE_URL" in env:
            assert env["WORLDSTATE_CACHE_URL"].startswith("rediss://"), name
    assert "worldstate_inspector@" in services["inspector"]["environment"]["WORLDSTATE_STORE_URL"]
    for node in ("crdb1", "crdb2", "crdb3"):
        assert "--certs-dir=" in doc["services"][node]["command"]
        assert "--insecure" not in doc["services"][node]["command"]
    assert "--tls-port" in doc["services"]["redis"]["command"]
    assert doc["services"]["redis"]["command"][1:3] == ["--port", "0"]  # no clear-text port


def test_secure_compose_commands_are_worldstate_commands() -> None:
    for name, svc in _worldstate_services(_compose()).items():
        argv = svc["command"]
        assert isinstance(argv, list), name
        _commands_parse([str(a) for a in argv])


def test_every_broker_user_in_compose_has_an_acl_block() -> None:
    doc = _compose()
    script = "\n".join(doc["services"]["mqtt-passwd"]["command"])
    users = set(re.findall(r"mosquitto_passwd -b /config/passwd (\S+)", script))
    acl = (DEPLOY / "mosquitto" / "acl").read_text()
    blocks = set(re.findall(r"^user (\S+)$", acl, re.M))
    assert users and users <= blocks
    # and each bus URL's user is one of them
    for svc in _worldstate_services(doc).values():
        url = svc["environment"].get("WORLDSTATE_BUS_URL")
        if url:
            assert url.split("://", 1)[1].split(":", 1)[0] in users


def test_the_acl_denies_by_default_and_keeps_servers_off_coordinator_topics() -> None:
    acl = (DEPLOY / "mosquitto" / "acl").read_text()
    blocks: dict[str, list[str]] = {}
    user = None
    for line in acl.splitlines():
        line = line.strip()
        if line.startswith("user "):
            user = line.split()[1]
            blocks[user] = []
        elif line.startswith(("topic ", "pattern ")):
            assert user is not None, f"rule outside a user block (applies to all): {line}"
            blocks[user].append(line)
    for user, rules in blocks.items():
        writes = [r.split()[-1] for r in rules if r.split()[1] in ("write", "readwrite")]
        if user == "inspector":
            assert writes == []
        elif user.startswith("gs-"):
            assert "ws/cmd/+" not in writes and "ws/mesh/membership" not in writes
            assert f"ws/members/{user}" in writes and "ws/members/+" not in writes
            assert not any(w.endswith("#") for w in writes)
        else:
            assert set(writes) == {"ws/cmd/+", "ws/mesh/membership"}
    conf = (DEPLOY / "mosquitto" / "mosquitto-secure.conf").read_text()
    assert re.search(r"^allow_anonymous false$", conf, re.M)
    assert re.search(r"^require_certificate true$", conf, re.M)
    assert not re.search(r"^listener 1883", conf, re.M)


def test_k8s_secure_overlay_parses_and_runs_worldstate_commands() -> None:
    kust = yaml.safe_load((SECURE_K8S / "kustomization.yaml").read_text())
    for res in kust["resources"]:
        assert (SECURE_K8S / res).exists(), res
    for patch in kust["patches"]:
        assert (SECURE_K8S / patch["path"]).exists()
    kinds: list[str] = []
    for path in sorted(SECURE_K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict):
                kinds.append(str(doc.get("kind")))
    assert {"StatefulSet", "Job", "Service", "Role", "ConfigMap"} <= set(kinds)
    for doc in yaml.safe_load_all((SECURE_K8S / "cockroach.yaml").read_text()):
        if doc and doc["kind"] == "StatefulSet":
            args = doc["spec"]["template"]["spec"]["containers"][0]["args"]
            assert doc["spec"]["replicas"] == 3
            assert any(a.startswith("--certs-dir=") for a in args) and "--insecure" not in args
    cfg = yaml.safe_load((SECURE_K8S / "config-tls.yaml").read_text())["data"]
    assert "sslmode=verify-full" in cfg["WORLDSTATE_STORE_URL"]
    assert cfg["WORLDSTATE_CACHE_URL"].startswith("rediss://")
    for path in (DEPLOY / "k8s").glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "Deployment":
                for c in doc["spec"]["template"]["spec"]["containers"]:
                    if c.get("image") == "worldstate":
                        _commands_parse([str(a) for a in c["args"]])


def test_roles_sql_has_two_parts_and_no_secrets() -> None:
    sql = (DEPLOY / "cockroach" / "roles.sql").read_text()
    before, after = sql.split("-- @after-schema", 1)
    assert "CREATE ROLE worldstate_app" in before and "CREATE ROLE worldstate_inspector" in before
    assert "REVOKE SELECT ON TABLE ws_meta FROM worldstate_inspector" in after
    assert "PASSWORD '" not in sql.upper().replace("PASSWORD` FROM", "")
