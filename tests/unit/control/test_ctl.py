"""``galpipe ctl``: kubeconfig credentials, and the verbs against the real control app served by
uvicorn (real TokenReview/SubjectAccessReview clients over the recording fake, stand-in actions).
"""

from __future__ import annotations

import json
import secrets
import stat
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import galpipe.cli
from galpipe.cli import main
from galpipe.control import ctl
from galpipe.control.app import create_app
from galpipe.control.auth import Authenticator, Authorizer
from galpipe.control.ctl import Token, kubeconfig_token, parse_since, resolve_token
from galpipe.control.kube import MAX_RETRIES, Identity, KubeError
from galpipe.control.sessions import SessionSigner
from galpipe.errors import CommandError, ConfigurationError, InputError
from tests.asgi_server import serve_app
from tests.kube_fake import FakeKube

NAMESPACE = "galpipe"
OPERATOR_TOKEN = "op-" + secrets.token_urlsafe(24)
VIEWER_TOKEN = "view-" + secrets.token_urlsafe(24)
OPERATOR = Identity("oscar", ("galpipe-operators", "system:authenticated"))
VIEWER = Identity("vera", ("galpipe-viewers", "system:authenticated"))
AT = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    """No GALPIPE_* or kubeconfig of the machine leaks in; logging stays the test run's."""
    for name in ("GALPIPE_CONTROL_URL", "KUBECONFIG", "GALPIPE_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(galpipe.cli, "configure_logging", lambda *_: None)
    monkeypatch.setattr(ctl, "RETRY_BACKOFF_FACTOR", 0.001)
    monkeypatch.setenv("COLUMNS", "220")


# -- kubeconfig ---------------------------------------------------------------------------------


def _kubeconfig(path: Path, users: dict[str, dict[str, Any]], current: str | None) -> Path:
    document: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": "https://k8s.example:6443"}}],
        "contexts": [{"name": n, "context": {"cluster": "c", "user": n}} for n in users],
        "users": [{"name": n, "user": u} for n, u in users.items()],
    }
    if current:
        document["current-context"] = current
    path.write_text(json.dumps(document))  # JSON is YAML
    return path


def test_the_current_context_token_is_used(tmp_path: Path) -> None:
    config = _kubeconfig(tmp_path / "config", {"dev": {"token": "  t-dev\n"}}, "dev")
    token = kubeconfig_token([config], {})
    assert token.value == "t-dev"
    assert token.source == "kubeconfig context 'dev' (user 'dev', token)"
    assert "t-dev" not in repr(token)
    assert "t-dev" not in str(token)


def test_a_token_file_is_relative_to_its_kubeconfig(tmp_path: Path) -> None:
    (tmp_path / "kube").mkdir()
    (tmp_path / "kube" / "sa.token").write_text("t-file\n")
    config = _kubeconfig(tmp_path / "kube" / "config", {"sa": {"tokenFile": "sa.token"}}, "sa")
    assert kubeconfig_token([config], {}).value == "t-file"


def test_kubeconfig_files_merge_first_name_wins_and_context_is_chosen(tmp_path: Path) -> None:
    first = _kubeconfig(tmp_path / "a", {"dev": {"token": "from-a"}}, None)
    second = _kubeconfig(
        tmp_path / "b", {"dev": {"token": "from-b"}, "prod": {"token": "t-prod"}}, "dev"
    )
    environ = {"KUBECONFIG": f"{first}:{tmp_path / 'missing'}:{second}"}
    paths = ctl.kubeconfig_paths(None, environ)
    assert kubeconfig_token(paths, environ).value == "from-a"
    assert kubeconfig_token(paths, environ, context="prod").value == "t-prod"
    with pytest.raises(ConfigurationError, match="no context 'stage'"):
        kubeconfig_token(paths, environ, context="stage")


def test_home_kubeconfig_is_the_default(tmp_path: Path) -> None:
    assert ctl.kubeconfig_paths(None, {"HOME": str(tmp_path)}) == [tmp_path / ".kube/config"]
    assert ctl.kubeconfig_paths("~/k", {"KUBECONFIG": "/x"})[0].name == "k"


def _plugin(path: Path, body: str) -> Path:
    path.write_text(f"#!{sys.executable}\n" + textwrap.dedent(body))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_an_exec_plugin_token_is_its_status_token(tmp_path: Path) -> None:
    _plugin(
        tmp_path / "get-token",
        """\
        import json, os, sys
        info = json.loads(os.environ["KUBERNETES_EXEC_INFO"])
        assert info["kind"] == "ExecCredential" and info["spec"] == {"interactive": False}
        assert sys.argv[1:] == ["eks", "get-token", "--cluster-name", "c1"]
        print(json.dumps({"apiVersion": info["apiVersion"], "kind": "ExecCredential",
                          "status": {"token": "k8s-aws-v1." + os.environ["AWS_PROFILE"]}}))
        """,
    )
    exec_entry = {
        "apiVersion": "client.authentication.k8s.io/v1beta1",
        "command": "./get-token",
        "args": ["eks", "get-token", "--cluster-name", "c1"],
        "env": [{"name": "AWS_PROFILE", "value": "ops"}],
    }
    config = _kubeconfig(tmp_path / "config", {"eks": {"exec": exec_entry}}, "eks")
    token = kubeconfig_token([config], {"PATH": "/usr/bin:/bin"})
    assert token.value == "k8s-aws-v1.ops"
    assert token.source.endswith("exec plugin get-token)")


def test_a_failing_exec_plugin_is_a_command_error(tmp_path: Path) -> None:
    _plugin(
        tmp_path / "login",
        "import sys\nprint('expired SSO session', file=sys.stderr)\nsys.exit(3)\n",
    )
    config = _kubeconfig(tmp_path / "config", {"u": {"exec": {"command": "./login"}}}, "u")
    with pytest.raises(CommandError, match="exited 3: expired SSO session"):
        kubeconfig_token([config], {})


def test_a_missing_exec_plugin_says_how_to_install_it(tmp_path: Path) -> None:
    entry = {"command": "no-such-plugin-xyz", "installHint": "install the aws CLI"}
    config = _kubeconfig(tmp_path / "config", {"u": {"exec": entry}}, "u")
    with pytest.raises(ConfigurationError, match="not installed: install the aws CLI"):
        kubeconfig_token([config], {"PATH": str(tmp_path)})


def test_an_oidc_id_token_is_used(tmp_path: Path) -> None:
    provider = {"name": "oidc", "config": {"id-token": "eyJ.oidc", "idp-issuer-url": "x"}}
    config = _kubeconfig(tmp_path / "config", {"u": {"auth-provider": provider}}, "u")
    assert kubeconfig_token([config], {}).value == "eyJ.oidc"


def test_a_client_certificate_user_needs_a_token(tmp_path: Path) -> None:
    user = {"client-certificate-data": "Y2VydA==", "client-key-data": "a2V5"}
    config = _kubeconfig(tmp_path / "config", {"admin": {**user}}, "admin")
    with pytest.raises(ConfigurationError, match=r"client certificate.*--token-file"):
        kubeconfig_token([config], {})


def test_no_kubeconfig_and_no_token_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="no kubeconfig"):
        resolve_token(
            token=None, token_file=None, kubeconfig=None, context=None, environ={"HOME": "/nx"}
        )
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigurationError, match="is empty"):
        resolve_token(
            token=None,
            token_file=str(tmp_path / "empty"),
            kubeconfig=None,
            context=None,
            environ={},
        )


def test_since_takes_durations_and_times() -> None:
    now = datetime(2030, 1, 1, 12, tzinfo=UTC)
    assert parse_since("30m", now=now) == now - timedelta(minutes=30)
    assert parse_since("7d", now=now) == now - timedelta(days=7)
    assert parse_since("2030-01-01T10:00:00") == datetime(2030, 1, 1, 10, tzinfo=UTC)
    with pytest.raises(InputError, match="--since 'yesterday'"):
        parse_since("yesterday")


# -- against the served app ---------------------------------------------------------------------


@dataclass
class StandInActions:
    """Answers like ControlActions (the JSON shapes), recording each call."""

    calls: list[tuple[str, str, str, dict[str, Any]]] = field(default_factory=list)
    matching: int = 7
    next_id: int = 1

    def _result(self, action: str, identity: Identity, pipeline: str, **kw: Any) -> dict:
        if pipeline not in ("fetch", "radon"):
            raise InputError(f"pipeline {pipeline!r} is not one of fetch, radon")
        self.calls.append((action, identity.user, pipeline, kw))
        dry = kw.get("dry_run", False)
        result = {
            "action": action,
            "pipeline": pipeline,
            "result": "dry_run" if dry else "ok",
            "user": identity.user,
            "reason": kw["reason"],
            "target": {},
            "before": {"paused": False},
            "after": None if dry else {"paused": True},
            "audit_id": self.next_id,
            "at": AT.isoformat(),
            "count": self.matching if action in ("retry", "requeue") else None,
        }
        self.next_id += 1
        return result

    def overview(self) -> dict[str, Any]:
        self.calls.append(("overview", "", "", {}))
        pod = {"name": "p", "phase": "Running", "ready": True, "restarts": 2, "image": "i:1"}
        return {
            "taken_at": AT.isoformat(),
            "pipelines": {
                "fetch": {
                    "pipeline": "fetch",
                    "counts": {"queued": 120, "running": 4, "done": 9, "failed": 1, "skipped": 0},
                    "oldest_queued_seconds": 5400.0,
                    "rate_per_second": 1.5,
                    "paused": True,
                    "breaker": {"state": "open"},
                    "replicas_desired": 2,
                    "replicas_ready": 1,
                    "hold_replicas": 2,
                    "pods": [pod, {**pod, "ready": False}],
                    "image": "ghcr.io/o/galpipe:pinned",
                    "image_wanted": "ghcr.io/o/galpipe:0.1.0",
                    "pinned": True,
                }
            },
            "overrides": [
                {
                    "pipeline": "fetch",
                    "kind": "pin",
                    "since": AT.isoformat(),
                    "user": "oscar",
                    "reason": "bad release",
                    "value": "ghcr.io/o/galpipe:pinned",
                }
            ],
            "helm_release": "galpipe",
            "helm_release_suspended": True,
            "kube_error": None,
        }

    def pause(self, identity: Identity, pipeline: str, reason: str) -> dict:
        return self._result("pause", identity, pipeline, reason=reason)

    def resume(self, identity: Identity, pipeline: str, reason: str) -> dict:
        return self._result("resume", identity, pipeline, reason=reason)

    def hold(self, identity: Identity, pipeline: str, replicas: int, reason: str) -> dict:
        return self._result("hold", identity, pipeline, replicas=replicas, reason=reason)

    def release_hold(self, identity: Identity, pipeline: str, reason: str) -> dict:
        return self._result("release_hold", identity, pipeline, reason=reason)

    def restart(self, identity: Identity, pipeline: str, reason: str) -> dict:
        return self._result("restart", identity, pipeline, reason=reason)

    def pin(self, identity: Identity, pipeline: str, image: str, reason: str) -> dict:
        return self._result("pin", identity, pipeline, image=image, reason=reason)

    def unpin(self, identity: Identity, pipeline: str, reason: str) -> dict:
        return self._result("unpin", identity, pipeline, reason=reason)

    def retry(self, identity: Identity, pipeline: str, reason: str, **kw: Any) -> dict:
        return self._result("retry", identity, pipeline, reason=reason, **kw)

    def requeue(self, identity: Identity, pipeline: str, reason: str, **kw: Any) -> dict:
        return self._result("requeue", identity, pipeline, reason=reason, **kw)

    def audit(self, **filters: Any) -> list[dict[str, Any]]:
        self.calls.append(("audit", "", "", filters))
        return [
            {
                "id": 3,
                "at": AT.isoformat(),
                "user": "oscar",
                "action": "pause",
                "pipeline": "fetch",
                "result": "ok",
                "reason": "survey maintenance",
                "error": None,
            }
        ]


@dataclass
class Served:
    url: str
    kube: FakeKube
    actions: StandInActions
    operator_token_file: Path
    viewer_token_file: Path


@pytest.fixture(scope="module")
def _server() -> Iterator[tuple[str, FakeKube, StandInActions]]:
    kube = FakeKube(
        tokens={OPERATOR_TOKEN: OPERATOR, VIEWER_TOKEN: VIEWER},
        grants={"galpipe-operators": ["*"], "galpipe-viewers": ["get", "list"]},
        namespace=NAMESPACE,
    )
    actions = StandInActions()
    # A zero TTL: every request is reviewed, so each test sees its own reviews.
    app = create_app(
        actions,
        Authenticator(kube, ttl_s=0),
        Authorizer(kube, NAMESPACE, ttl_s=0),
        SessionSigner(secrets.token_urlsafe(32)),
    )
    with serve_app(app) as url:
        yield url, kube, actions


@pytest.fixture
def served(_server: tuple[str, FakeKube, StandInActions], tmp_path: Path) -> Iterator[Served]:
    url, kube, actions = _server
    kube.requests.clear()
    kube.errors.clear()
    actions.calls.clear()
    actions.matching = 7
    (tmp_path / "op").write_text(OPERATOR_TOKEN + "\n")
    (tmp_path / "view").write_text(VIEWER_TOKEN + "\n")
    yield Served(url, kube, actions, tmp_path / "op", tmp_path / "view")
    assert kube.invalid_bodies == []


def ctl_main(served: Served, *argv: str, token_file: Path | None = None) -> int:
    token = token_file or served.operator_token_file
    return main(["ctl", "--server", served.url, "--token-file", str(token), *argv])


def no_token_in(*texts: str) -> None:
    for text in texts:
        assert OPERATOR_TOKEN not in text
        assert VIEWER_TOKEN not in text


def test_pause_sends_the_reason_as_the_operator(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    assert ctl_main(served, "pause", "fetch", "--reason", "survey maintenance", "--json") == 0
    out, err = capsys.readouterr()
    answer = json.loads(out)
    assert (answer["action"], answer["user"], answer["result"]) == ("pause", "oscar", "ok")
    assert served.actions.calls == [("pause", "oscar", "fetch", {"reason": "survey maintenance"})]
    (review,) = served.kube.access_reviews
    assert review.body is not None
    assert review.body["spec"]["resourceAttributes"]["verb"] == "pause"
    no_token_in(out, err)


def test_options_may_follow_the_verb_and_tables_are_the_default(
    served: Served, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GALPIPE_CONTROL_URL", served.url)
    argv = ["ctl", "hold", "fetch", "2", "--reason", "load test"]
    assert main([*argv, "--token-file", str(served.operator_token_file)]) == 0
    out = capsys.readouterr().out
    assert "hold of fetch: ok, audit #" in out
    assert served.actions.calls[-1] == (
        "hold",
        "oscar",
        "fetch",
        {"replicas": 2, "reason": "load test"},
    )


@pytest.mark.parametrize(
    ("argv", "call"),
    [
        (["resume", "radon"], ("resume", "radon", {})),
        (["release-hold", "fetch"], ("release_hold", "fetch", {})),
        (["restart", "fetch"], ("restart", "fetch", {})),
        (
            ["pin", "fetch", "ghcr.io/o/galpipe:1.2"],
            ("pin", "fetch", {"image": "ghcr.io/o/galpipe:1.2"}),
        ),
        (["unpin", "fetch"], ("unpin", "fetch", {})),
    ],
    ids=["resume", "release-hold", "restart", "pin", "unpin"],
)
def test_each_change_verb_reaches_its_action(
    served: Served, argv: list[str], call: tuple[str, str, dict[str, Any]]
) -> None:
    assert ctl_main(served, *argv, "--reason", "why not") == 0
    action, pipeline, extra = call
    assert served.actions.calls == [(action, "oscar", pipeline, {**extra, "reason": "why not"})]


def test_a_viewer_may_read_but_not_pause(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    assert ctl_main(served, "overview", token_file=served.viewer_token_file) == 0
    capsys.readouterr()
    status = ctl_main(
        served, "pause", "fetch", "--reason", "x", token_file=served.viewer_token_file
    )
    out, err = capsys.readouterr()
    assert status == 1
    assert err.startswith("galpipe ctl: you may not pause fetch in galpipe")
    assert [c[0] for c in served.actions.calls] == ["overview"]
    no_token_in(out, err)


def test_a_token_the_cluster_rejects_is_said_so(
    served: Served, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    forged = "forged-" + secrets.token_urlsafe(16)
    (tmp_path / "forged").write_text(forged)
    assert ctl_main(served, "overview", token_file=tmp_path / "forged") == 1
    out, err = capsys.readouterr()
    assert "galpipe ctl: the cluster did not accept the token from --token-file" in err
    assert forged not in out + err
    assert served.actions.calls == []


def test_a_token_from_the_kubeconfig_is_sent(
    served: Served, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = _kubeconfig(tmp_path / "config", {"ops": {"token": OPERATOR_TOKEN}}, "ops")
    assert main(["ctl", "--server", served.url, "--kubeconfig", str(config), "whoami"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("oscar (groups: galpipe-operators, system:authenticated)")
    no_token_in(out, err)


def test_a_reason_is_required_before_any_request(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        ctl_main(served, "pause", "fetch")
    assert exited.value.code == 2
    assert ctl_main(served, "pause", "fetch", "--reason", "   ") == 1
    assert "--reason: a written reason is required" in capsys.readouterr().err
    assert served.kube.requests == []


def test_no_server_is_a_configuration_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ctl", "--token", "x", "overview"]) == 2
    assert "pass --server URL or set GALPIPE_CONTROL_URL" in capsys.readouterr().err


def test_an_unknown_pipeline_is_refused_with_the_reason(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    assert ctl_main(served, "restart", "fetchh", "--reason", "x") == 1
    assert "restart refused: pipeline 'fetchh' is not one of fetch, radon" in (
        capsys.readouterr().err
    )


def test_retry_counts_first_and_applies_only_with_yes(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    assert ctl_main(served, "retry", "fetch", "--error-contains", "timeout", "--reason", "r") == 0
    out = capsys.readouterr().out
    assert "retry of fetch: dry_run (would queue 7 tasks)" in out
    assert "run again with --yes" in out
    dry = {"reason": "r", "error_contains": "timeout", "dry_run": True}
    assert served.actions.calls == [("retry", "oscar", "fetch", dry)]

    served.actions.calls.clear()
    assert (
        ctl_main(
            served,
            "retry",
            "fetch",
            "--error-contains",
            "timeout",
            "--reason",
            "r",
            "--yes",
            "--json",
        )
        == 0
    )
    answer = json.loads(capsys.readouterr().out)
    assert (answer["dry_run"]["result"], answer["applied"]["result"]) == ("dry_run", "ok")
    assert served.actions.calls == [
        ("retry", "oscar", "fetch", dry),
        ("retry", "oscar", "fetch", {**dry, "dry_run": False}),
    ]

    served.actions.calls.clear()
    served.actions.matching = 0
    assert ctl_main(served, "retry", "fetch", "--reason", "r", "--yes") == 0
    assert "nothing to retry" in capsys.readouterr().out
    assert [c[3]["dry_run"] for c in served.actions.calls] == [True]


def test_requeue_sends_the_version_and_ids(served: Served) -> None:
    argv = ["requeue", "radon", "--algo-version", "v2", "--ids", "5", "9", "--reason", "new"]
    assert ctl_main(served, *argv) == 0
    assert served.actions.calls == [
        (
            "requeue",
            "oscar",
            "radon",
            {"reason": "new", "algo_version": "v2", "source_ids": [5, 9], "dry_run": True},
        )
    ]


def test_audit_filters_reach_the_actions(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    before = datetime.now(UTC)
    argv = ["audit", "--user", "oscar", "--action", "release-hold", "--since", "2h", "--limit", "5"]
    assert ctl_main(served, *argv) == 0
    out = capsys.readouterr().out
    assert "survey maintenance" in out
    assert "oscar" in out
    ((name, _, _, filters),) = served.actions.calls
    assert name == "audit"
    assert (filters["user"], filters["action"], filters["limit"]) == ("oscar", "release_hold", 5)
    assert filters["pipeline"] is None
    assert abs(filters["since"] - (before - timedelta(hours=2))) < timedelta(seconds=30)


def test_the_overview_table_shows_pipelines_overrides_and_a_suspended_release(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    assert ctl_main(served, "overview") == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if "│ fetch" in line)
    for cell in (
        "yes",
        "120",
        "1.5h",
        "1.50",
        "open",
        "1/2",
        "1/2",
        "Git: ghcr.io/o/galpipe:0.1.0",
    ):
        assert cell in row, cell
    assert "bad release" in out
    assert "HelmRelease galpipe is suspended" in " ".join(out.split())


def test_reads_are_retried_on_503_and_changes_are_not(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    served.kube.errors["create_token_review"] = KubeError(503, "etcd is away")
    assert ctl_main(served, "overview") == 1
    assert "the control API answered 503 to overview" in capsys.readouterr().err
    assert len(served.kube.token_reviews) == 1 + MAX_RETRIES
    served.kube.requests.clear()
    assert ctl_main(served, "pause", "fetch", "--reason", "x") == 1
    assert len(served.kube.token_reviews) == 1


def test_an_unreachable_server_is_a_service_error(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["ctl", "--server", "http://127.0.0.1:9", "--token", "t", "overview"])
    assert status == 1
    assert "cannot reach the control API at http://127.0.0.1:9" in capsys.readouterr().err


def test_a_bad_server_url_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="expected http"):
        ctl.ControlClient("127.0.0.1:8080", Token("t", "--token"))
