"""docker-compose.yml names only services, files and variables that exist.

No Docker engine runs on the team's machines, so this is what keeps the compose file
honest between the times someone runs it for real.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
INFRA = {"rabbitmq", "postgres", "minio", "minio-init"}
COFFER = sorted(set(COMPOSE["services"]) - INFRA)


def known_variables() -> set[str]:
    """Every variable the code or a service config reads."""
    names: set[str] = set()
    for path in list(ROOT.glob("services/*/config.yml")) + list(ROOT.glob("shared/**/*.py")):
        names |= set(re.findall(r"\b(?:COFFER_[A-Z_]+|AMQP_URI)\b", path.read_text()))
    return names


def test_every_coffer_service_has_a_container() -> None:
    folders = sorted(p.name for p in (ROOT / "services").iterdir() if (p / "service.py").exists())
    assert folders == COFFER


@pytest.mark.parametrize("name", COFFER)
def test_service_container_builds_from_its_own_folder(name: str) -> None:
    service = COMPOSE["services"][name]
    dockerfile = ROOT / service["build"]["dockerfile"]
    assert dockerfile == ROOT / "services" / name / "Dockerfile"
    text = dockerfile.read_text()
    cmd = re.search(r"CMD \[(.*)\]", text)
    assert cmd, "Dockerfile has no CMD"
    args = [a.strip().strip('"') for a in cmd.group(1).split(",")]
    config = args[args.index("--config") + 1]
    assert (ROOT / config).exists(), config
    module, cls = args[-1].split(":")
    assert getattr(importlib.import_module(module), cls).name == name
    assert "healthcheck" in service


@pytest.mark.parametrize("name", COFFER)
def test_service_environment_is_read_by_the_code(name: str) -> None:
    env = COMPOSE["services"][name]["environment"]
    unknown = {k for k in env if k not in known_variables()}
    assert not unknown, f"{name} sets variables nothing reads: {unknown}"


def test_infrastructure_is_there() -> None:
    services = COMPOSE["services"]
    assert "management" in services["rabbitmq"]["image"]
    assert services["minio"]["image"].startswith("minio/minio")
    assert "mc mb" in services["minio-init"]["entrypoint"]
    assert services["postgres"]["image"].startswith("postgres")
    for volume in services["postgres"].get("volumes", []):
        host = volume.split(":")[0]
        if host.startswith("./"):
            assert (ROOT / host).exists(), host
