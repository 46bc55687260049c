"""The chart's database credentials: one role per job, the password a file that can rotate.

Every galpipe container connects as the role its job needs (the migrate Job as the migrator,
everything else as the app role), with the URL from that role's Secret and the password
mounted from the same Secret as a whole volume (a subPath mount would never see a rotated
password); KEDA connects as the read-only scaler role. No object names any other Secret key.
"""

from __future__ import annotations

from typing import Any

import pytest

from galpipe.settings import Settings
from tests.deploy.chart_render import of_kind, render, render_set

_PASSWORD_FILE_ENV = Settings.__dataclass_fields__["database_password_file"].metadata["env"]
_URL_ENV = Settings.__dataclass_fields__["database_url"].metadata["env"]


def _pods(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    pods = {}
    for kind in ("Deployment", "Job"):
        for name, obj in of_kind(objects, kind).items():
            pods[name] = obj["spec"]["template"]["spec"]
    return pods


def _role_secret(pod: dict[str, Any], container: dict[str, Any]) -> str:
    """The Secret whose URL and password the container uses, checked to be one and the same."""
    env = {e["name"]: e for e in container["env"]}
    url_ref = env[_URL_ENV]["valueFrom"]["secretKeyRef"]
    password_file = env[_PASSWORD_FILE_ENV]["value"]
    mounts = [
        m for m in container["volumeMounts"] if password_file.startswith(m["mountPath"] + "/")
    ]
    assert len(mounts) == 1, password_file
    mount = mounts[0]
    assert "subPath" not in mount, "a subPath mount is never updated when the Secret rotates"
    assert mount["readOnly"] is True
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    items = {i["path"]: i["key"] for i in volume["secret"]["items"]}
    relative = password_file[len(mount["mountPath"]) + 1 :]
    assert items == {relative: "password"}
    assert volume["secret"]["secretName"] == url_ref["name"]
    assert url_ref["key"] == "url"
    return str(url_ref["name"])


@pytest.mark.parametrize("value_set", ["default", "dev", "prod"])
def test_each_container_connects_as_its_jobs_role(value_set: str) -> None:
    pods = _pods(render_set(value_set))
    roles = {
        name: _role_secret(pod, container)
        for name, pod in pods.items()
        for container in pod["containers"]
    }
    assert roles.pop("galpipe-migrate") == "galpipe-database-migrator"
    assert roles, "no Deployment connects to the database"
    assert set(roles.values()) == {"galpipe-database-app"}, roles


def test_keda_connects_as_the_read_only_role() -> None:
    auth = of_kind(render_set("default"), "TriggerAuthentication")["galpipe-autoscaler"]
    assert auth["spec"]["secretTargetRef"] == [
        {"parameter": "connection", "name": "galpipe-database-scaler", "key": "connection"}
    ]


def test_the_role_secrets_and_keys_are_values() -> None:
    objects = render(
        {
            "database": {
                "app": {"existingSecret": "rds-app"},
                "migrator": {"existingSecret": "rds-owner"},
                "scaler": {"existingSecret": "rds-keda"},
                "urlKey": "dsn",
                "passwordKey": "secret",
                "connectionKey": "keda-dsn",
            }
        }
    )
    pods = _pods(objects)
    migrate = pods["galpipe-migrate"]
    env = {e["name"]: e for e in migrate["containers"][0]["env"]}
    assert env[_URL_ENV]["valueFrom"]["secretKeyRef"] == {"name": "rds-owner", "key": "dsn"}
    volume = next(v for v in migrate["volumes"] if "secret" in v)
    assert volume["secret"]["secretName"] == "rds-owner"
    assert [i["key"] for i in volume["secret"]["items"]] == ["secret"]
    fetch = {e["name"]: e for e in pods["galpipe-fetch"]["containers"][0]["env"]}
    assert fetch[_URL_ENV]["valueFrom"]["secretKeyRef"]["name"] == "rds-app"
    auth = of_kind(objects, "TriggerAuthentication")["galpipe-autoscaler"]
    assert auth["spec"]["secretTargetRef"][0] | {"parameter": "connection"} == {
        "parameter": "connection",
        "name": "rds-keda",
        "key": "keda-dsn",
    }


def test_the_old_single_secret_value_is_refused() -> None:
    with pytest.raises(Exception, match="existingSecret"):
        render({"database": {"existingSecret": "galpipe-database"}})
