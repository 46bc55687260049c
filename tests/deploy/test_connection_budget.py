"""The database connections of a release at its largest, against the RDS instance Terraform sets.

Every worker replica holds a pool of ``GALPIPE_DB_POOL_SIZE`` connections, KEDA opens one per
PostgreSQL trigger per poll, the monitor and the control service hold their own pools, and the
migrate Job opens one while the old release still runs. A rolling update adds ``maxSurge`` pods
to a Deployment already at ``maxReplicaCount``. The worst case of an environment's release
(its Flux HelmRelease values, rendered by the chart) must fit the ``max_connections`` its
Terraform sets, less PostgreSQL's and RDS's reserved superuser slots and a reserve for operators
(``galpipe status`` from a laptop, a psql session), and that ``max_connections`` must fit the
instance class's memory (RDS's own default, ``LEAST(DBInstanceClassMemory / 9531392, 5000)``).
"""

from __future__ import annotations

import math
import re
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from galpipe.ops.monitor import MONITOR_POOL_SIZE
from galpipe.settings import Settings
from tests.deploy.chart_render import of_kind, render, render_set, user_values
from tests.deploy.policy import REPO_ROOT

TERRAFORM = REPO_ROOT / "terraform"
#: Memory (GiB) of the RDS instance classes the environments may choose (AWS's instance
#: tables); a class missing here fails the test, naming it.
INSTANCE_MEMORY_GIB = {
    "db.t4g.micro": 1,
    "db.t4g.small": 2,
    "db.t4g.medium": 4,
    "db.t4g.large": 8,
    "db.m7g.large": 8,
    "db.m7g.xlarge": 16,
    "db.r7g.large": 16,
    "db.r7g.xlarge": 32,
    "db.r7g.2xlarge": 64,
}
#: DBInstanceClassMemory over the nominal memory: RDS keeps part for the OS (measured
#: `show max_connections` on a 4 GiB class gives 413 of the nominal 450, 0.92; 0.9 is safe).
USABLE_MEMORY_FRACTION = 0.9
#: PostgreSQL's superuser_reserved_connections (3) and RDS's
#: rds.rds_superuser_reserved_connections (2): slots no application role can take.
RESERVED_SUPERUSER = 5
#: Share of max_connections kept for operators and one-off tools.
OPERATOR_RESERVE = 0.10
DEFAULT_POOL_SIZE = next(
    f.default for f in fields(Settings) if f.metadata["env"] == "GALPIPE_DB_POOL_SIZE"
)


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {v["name"]: v["value"] for v in container.get("env", []) if "value" in v}


def _surge(deployment: dict[str, Any], replicas: int) -> int:
    """Extra pods a rolling update may add to ``replicas`` (maxSurge, 25 % by default; none
    for ``Recreate``, which stops the old pods first)."""
    strategy = deployment["spec"].get("strategy", {})
    if strategy.get("type") == "Recreate":
        return 0
    rolling = strategy.get("rollingUpdate", {})
    surge = rolling.get("maxSurge", "25%")
    if isinstance(surge, str) and surge.endswith("%"):
        return math.ceil(replicas * int(surge[:-1]) / 100)
    return int(surge)


def worst_case_connections(objects: list[dict[str, Any]]) -> dict[str, int]:
    """Connections each part of a rendered release holds at most, by part name."""
    scaled = {
        s["spec"]["scaleTargetRef"]["name"]: s for s in of_kind(objects, "ScaledObject").values()
    }
    hpas = {
        h["spec"]["scaleTargetRef"]["name"]: h
        for h in of_kind(objects, "HorizontalPodAutoscaler").values()
    }
    budget: dict[str, int] = {}
    for name, deployment in of_kind(objects, "Deployment").items():
        if name in scaled:
            replicas = int(scaled[name]["spec"]["maxReplicaCount"])
        elif name in hpas:
            replicas = int(hpas[name]["spec"]["maxReplicas"])
        else:
            replicas = int(deployment["spec"].get("replicas", 1))
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        if container["command"][1:2] == ["monitor"]:
            pool = MONITOR_POOL_SIZE
        else:
            pool = int(_env(container).get("GALPIPE_DB_POOL_SIZE", DEFAULT_POOL_SIZE))
        budget[name] = (replicas + _surge(deployment, replicas)) * pool
    for name, obj in scaled.items():
        triggers = [t for t in obj["spec"]["triggers"] if t["type"] == "postgresql"]
        budget[f"keda:{name}"] = len(triggers)
    for name in of_kind(objects, "Job"):
        budget[f"job:{name}"] = 1
    return budget


def _variable_default(path: Path, name: str) -> str | None:
    """The default of variable ``name`` in a variables.tf, as written (None if it has none)."""
    blocks = {
        b.split('"', 1)[0]: b for b in re.split(r'^variable "', path.read_text(), flags=re.M)[1:]
    }
    match = re.search(r"^  default\s*=\s*(.+)$", blocks[name], re.MULTILINE)
    return match[1].strip().strip('"') if match else None


def terraform_database(env: str) -> tuple[str, int]:
    """The instance class and max_connections ``terraform/envs/<env>`` sets by default."""
    variables = TERRAFORM / "envs" / env / "variables.tf"
    instance = _variable_default(variables, "database_instance_class")
    assert instance, f"{variables}: no default database_instance_class"
    main = (TERRAFORM / "envs" / env / "main.tf").read_text()
    if re.search(r"^\s*database_max_connections\s*=", main, re.MULTILINE):
        connections = _variable_default(variables, "database_max_connections")
    else:  # not passed: the platform module's default
        platform = TERRAFORM / "modules" / "platform" / "variables.tf"
        connections = _variable_default(platform, "database_max_connections")
    assert connections, f"terraform/envs/{env}: no max_connections"
    return instance, int(connections)


def instance_connection_limit(instance_class: str) -> int:
    """RDS's default max_connections of ``instance_class``: what its memory supports."""
    assert instance_class in INSTANCE_MEMORY_GIB, (
        f"{instance_class}: add its memory to INSTANCE_MEMORY_GIB to budget its connections"
    )
    memory = INSTANCE_MEMORY_GIB[instance_class] * 2**30 * USABLE_MEMORY_FRACTION
    return min(int(memory // 9531392), 5000)


def usable_connections(max_connections: int) -> int:
    """What the release may hold of ``max_connections``: less reserved slots and the reserve."""
    return max_connections - RESERVED_SUPERUSER - math.ceil(OPERATOR_RESERVE * max_connections)


@pytest.mark.parametrize("env", ["dev", "prod"])
def test_the_release_at_its_largest_fits_the_database_terraform_sets(env: str) -> None:
    instance, max_connections = terraform_database(env)
    assert max_connections <= instance_connection_limit(instance), (
        f"terraform/envs/{env}: max_connections {max_connections} is more than {instance}'s "
        f"memory supports ({instance_connection_limit(instance)})"
    )
    budget = worst_case_connections(render_set(env))
    total = sum(budget.values())
    assert total <= usable_connections(max_connections), (
        f"{env}: the release may open {total} connections ({budget}) but {instance} with "
        f"max_connections {max_connections} leaves {usable_connections(max_connections)}"
    )
    # Every worker and service is counted (a part left out would make the check pass falsely).
    assert {"galpipe-fetch", "galpipe-radon", "galpipe-monitor", "galpipe-control"} <= set(budget)


def test_the_budget_counts_pools_replicas_surge_keda_and_the_job() -> None:
    values = user_values("default")
    values["config"] = {"GALPIPE_DB_POOL_SIZE": "3"}
    values.setdefault("pipelines", {})["radon"] = {"autoscaling": {"maxReplicaCount": 8}}
    budget = worst_case_connections(render(values))
    assert budget["galpipe-radon"] == (8 + 2) * 3  # maxSurge 25 % of 8 -> 2 more pods
    assert budget["galpipe-monitor"] == MONITOR_POOL_SIZE  # one replica, Recreate: no surge
    assert budget["galpipe-control"] == (2 + 1) * 3  # two replicas and one surge pod
    assert budget["keda:galpipe-radon"] == 1
    assert any(name.startswith("job:") for name in budget)


def test_a_release_too_large_for_its_database_is_caught() -> None:
    """Radon at 200 replicas × 4 connections does not fit dev's db.t4g.medium."""
    values = user_values("dev")
    values.setdefault("pipelines", {}).setdefault("radon", {})["autoscaling"] = {
        "maxReplicaCount": 200
    }
    _, max_connections = terraform_database("dev")
    total = sum(worst_case_connections(render(values)).values())
    assert total > usable_connections(max_connections)
    assert instance_connection_limit("db.t4g.medium") < 450
