"""``galpipe ctl``: the operator actions of ``galpipe control`` from a terminal.

Every verb is one or two requests to the control API (``--server`` or ``GALPIPE_CONTROL_URL``,
e.g. ``http://127.0.0.1:8080`` after ``kubectl port-forward svc/galpipe-control 8080``), sent
with a bearer token that the API checks with a ``TokenReview`` and authorises with a
``SubjectAccessReview``: the cluster decides, exactly as for the console.

The token comes from ``--token`` or ``--token-file``, else from the current kubeconfig context
(``--kubeconfig``, else ``$KUBECONFIG``, else ``~/.kube/config``; ``--context`` picks another
context): its user's ``token`` or ``tokenFile``, an OIDC ``auth-provider``'s ``id-token``, or
the ``status.token`` an ``exec`` credential plugin prints (``aws eks get-token``,
``gke-gcloud-auth-plugin``, ``kubelogin`` …). A client certificate cannot be checked by a
``TokenReview``, so such a context needs ``--token``. The token is never printed or logged:
errors name where it came from, not what it is.

Requests are retried only where the server did not act: a refused connection, and for reads
the statuses that say "try again" (429, 502, 503, 504); a change is retried on 429 only, since a
5xx may come after the action ran. The API's answers become galpipe errors, so
:func:`galpipe.cli.main` gives them an exit status: 401 and 403 are :class:`CommandError`
subclasses (exit 1) whose message says what the cluster refused, 400 and 422 an
:class:`InputError`, an unreachable or failing server a :class:`ServiceError`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import requests
import yaml
from rich.console import Console
from rich.table import Table
from urllib3.util.retry import Retry

from galpipe.control.kube import VERB_OF, retrying_session
from galpipe.errors import CommandError, ConfigurationError, InputError, ServiceError

__all__ = [
    "SERVER_ENV",
    "ControlClient",
    "ControlForbiddenError",
    "ControlRejectedError",
    "ControlUnauthorizedError",
    "ControlUnavailableError",
    "Token",
    "exec_plugin_token",
    "kubeconfig_paths",
    "kubeconfig_token",
    "parse_since",
    "resolve_token",
    "run_ctl",
]

#: Where ``--server`` defaults from.
SERVER_ENV = "GALPIPE_CONTROL_URL"
API_PREFIX = "/api/v1"
#: Statuses after which a change is tried again: only "not processed" (a 5xx may follow a
#: change that went through, and a second one would be a second audited action).
UNPROCESSED_STATUSES = frozenset({429})
#: Waits of 0.25 s, 0.5 s, 1 s between retries (a Retry-After wins); reads are retried on
#: kube.TRANSIENT_STATUSES, up to kube.MAX_RETRIES times.
RETRY_BACKOFF_FACTOR = 0.25
RETRY_BACKOFF_MAX_S = 5.0
#: Seconds to connect; seconds to wait for an answer (a bulk requeue may take a while).
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 60.0
#: Seconds an exec credential plugin may take (it may refresh a cloud session).
EXEC_PLUGIN_TIMEOUT_S = 60.0
#: The ExecCredential version asked of a plugin whose kubeconfig entry names none.
EXEC_API_VERSION = "client.authentication.k8s.io/v1"
#: How much of a plugin's error output an error quotes.
PLUGIN_ERROR_CHARS = 300
#: Units of ``--since 30m`` and friends.
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_NAMESPACE_IN_DETAIL = re.compile(r"in namespace (\S+)")


# -- errors -----------------------------------------------------------------------------------


class ControlUnauthorizedError(CommandError):
    """401: the cluster's ``TokenReview`` did not accept the token."""

    status = 401


class ControlForbiddenError(CommandError):
    """403: the cluster's ``SubjectAccessReview`` denied the verb."""

    status = 403


class ControlRejectedError(InputError):
    """400, 404 or 422: the API refused what was asked (unknown pipeline, empty reason …)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class ControlUnavailableError(ServiceError):
    """The control API could not be reached, or answered 5xx or 429 after the retries."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


# -- the token --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Token:
    """A bearer token and where it came from (only the latter is ever shown)."""

    value: str = field(repr=False)
    source: str

    def __str__(self) -> str:
        return f"<token from {self.source}>"


def kubeconfig_paths(explicit: str | None, environ: Mapping[str, str]) -> list[Path]:
    """The kubeconfig files, as kubectl finds them: ``--kubeconfig``, ``$KUBECONFIG``, home."""
    if explicit:
        return [Path(explicit).expanduser()]
    listed = environ.get("KUBECONFIG", "")
    if listed:
        return [Path(p).expanduser() for p in listed.split(os.pathsep) if p]
    home = environ.get("HOME")
    return [(Path(home) if home else Path.home()) / ".kube" / "config"]


@dataclass(frozen=True)
class _Kubeconfig:
    """The merged view of one or more kubeconfig files (the first to set a name wins)."""

    current_context: str | None
    contexts: dict[str, dict[str, Any]]
    #: User name → (its settings, the directory of the file that defined it).
    users: dict[str, tuple[dict[str, Any], Path]]
    files: tuple[Path, ...]


def _load_kubeconfig(paths: Sequence[Path]) -> _Kubeconfig:
    current: str | None = None
    contexts: dict[str, dict[str, Any]] = {}
    users: dict[str, tuple[dict[str, Any], Path]] = {}
    read: list[Path] = []
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            continue  # kubectl skips listed files that do not exist
        except OSError as exc:
            raise ConfigurationError(f"kubeconfig {path}: cannot read it: {exc}") from None
        try:
            document = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigurationError(f"kubeconfig {path}: not YAML: {exc}") from None
        if not isinstance(document, dict):
            raise ConfigurationError(f"kubeconfig {path}: not a kubeconfig (a YAML mapping)")
        read.append(path)
        current = current or document.get("current-context") or None
        for entry in document.get("contexts") or []:
            if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                contexts.setdefault(entry["name"], dict(entry.get("context") or {}))
        for entry in document.get("users") or []:
            if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                users.setdefault(entry["name"], (dict(entry.get("user") or {}), path.parent))
    if not read:
        raise ConfigurationError(
            f"no kubeconfig at {os.pathsep.join(str(p) for p in paths)}: "
            "pass --token-file FILE (or --token), or --kubeconfig FILE"
        )
    return _Kubeconfig(current, contexts, users, tuple(read))


def exec_plugin_token(
    plugin: Mapping[str, Any],
    base_dir: Path,
    environ: Mapping[str, str],
    *,
    run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run,
    timeout_s: float = EXEC_PLUGIN_TIMEOUT_S,
) -> str:
    """Run a kubeconfig ``exec`` credential plugin; the ``status.token`` it prints.

    Parameters
    ----------
    plugin
        The user's ``exec`` entry: ``command``, ``args``, ``env`` (name/value pairs),
        ``apiVersion``.
    base_dir
        The directory of the kubeconfig that defined it: a relative command path with a
        directory part is relative to it, as kubectl resolves it.
    environ
        The environment the plugin inherits (its ``env`` entries added, and
        ``KUBERNETES_EXEC_INFO`` saying the call is not interactive).
    run
        :func:`subprocess.run`, injected by tests.

    Raises
    ------
    ConfigurationError
        The entry is malformed or its command is not installed.
    CommandError
        The plugin failed, timed out or printed no token.
    """
    command = plugin.get("command")
    if not isinstance(command, str) or not command:
        raise ConfigurationError("kubeconfig exec credential plugin: no command")
    if os.sep in command and not os.path.isabs(command):
        command = str(base_dir / command)
    args = [str(a) for a in plugin.get("args") or []]
    env = dict(environ)
    for item in plugin.get("env") or []:
        if isinstance(item, dict) and "name" in item:
            env[str(item["name"])] = str(item.get("value", ""))
    api_version = str(plugin.get("apiVersion") or EXEC_API_VERSION)
    env["KUBERNETES_EXEC_INFO"] = json.dumps(
        {"apiVersion": api_version, "kind": "ExecCredential", "spec": {"interactive": False}}
    )
    name = Path(command).name
    try:
        completed = run(
            [command, *args],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except FileNotFoundError:
        hint = plugin.get("installHint")
        raise ConfigurationError(
            f"the kubeconfig's credential plugin {command!r} is not installed"
            + (f": {str(hint).strip()}" if hint else "")
        ) from None
    except subprocess.TimeoutExpired:
        raise CommandError(
            f"the credential plugin {name} did not answer within {timeout_s:g} s"
        ) from None
    if completed.returncode != 0:
        said = (completed.stderr or "").strip().splitlines()
        raise CommandError(
            f"the credential plugin {name} exited {completed.returncode}"
            + (f": {said[-1][:PLUGIN_ERROR_CHARS]}" if said else "")
        )
    try:
        answer = json.loads(completed.stdout)
    except ValueError:
        raise CommandError(f"the credential plugin {name} printed no ExecCredential JSON") from None
    token = (answer.get("status") or {}).get("token") if isinstance(answer, dict) else None
    if not isinstance(token, str) or not token:
        raise CommandError(
            f"the credential plugin {name} gave no status.token (a client certificate cannot "
            "be checked by the control API: pass --token-file)"
        )
    return token


def kubeconfig_token(
    paths: Sequence[Path],
    environ: Mapping[str, str],
    *,
    context: str | None = None,
    run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run,
) -> Token:
    """The bearer token of a kubeconfig context (the current one by default).

    Raises
    ------
    ConfigurationError
        No kubeconfig, no such context or user, or the user has no bearer token.
    CommandError
        Its exec credential plugin failed.
    """
    config = _load_kubeconfig(paths)
    name = context or config.current_context
    if not name:
        raise ConfigurationError(
            f"kubeconfig {config.files[0]} has no current-context: pass --context NAME"
        )
    if name not in config.contexts:
        raise ConfigurationError(f"kubeconfig: no context {name!r}")
    user_name = config.contexts[name].get("user")
    if not isinstance(user_name, str) or user_name not in config.users:
        raise ConfigurationError(f"kubeconfig: context {name!r} names no known user")
    user, base_dir = config.users[user_name]
    where = f"kubeconfig context {name!r} (user {user_name!r}"
    if isinstance(user.get("token"), str) and user["token"].strip():
        return Token(user["token"].strip(), f"{where}, token)")
    if user.get("tokenFile"):
        path = Path(str(user["tokenFile"])).expanduser()
        path = path if path.is_absolute() else base_dir / path
        return Token(_read_token_file(path), f"{where}, tokenFile {path})")
    if isinstance(user.get("exec"), dict):
        token = exec_plugin_token(user["exec"], base_dir, environ, run=run)
        command = Path(str(user["exec"].get("command", ""))).name
        return Token(token, f"{where}, exec plugin {command})")
    provider = user.get("auth-provider")
    if isinstance(provider, dict):
        id_token = (provider.get("config") or {}).get("id-token")
        if isinstance(id_token, str) and id_token:
            return Token(id_token, f"{where}, auth-provider {provider.get('name', '')} id-token)")
    raise ConfigurationError(
        f"{where}) has no bearer token (token, tokenFile, exec plugin or OIDC id-token); "
        "a client certificate cannot be checked by the control API: pass --token-file FILE"
    )


def _read_token_file(path: Path) -> str:
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigurationError(f"token file {path}: cannot read it: {exc.strerror}") from None
    if not token:
        raise ConfigurationError(f"token file {path} is empty")
    return token


def resolve_token(
    *,
    token: str | None,
    token_file: str | None,
    kubeconfig: str | None,
    context: str | None,
    environ: Mapping[str, str],
    run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run,
) -> Token:
    """``--token``, else ``--token-file``, else the kubeconfig context's token."""
    if token is not None:
        if not token.strip():
            raise ConfigurationError("--token is empty")
        return Token(token.strip(), "--token")
    if token_file:
        path = Path(token_file).expanduser()
        return Token(_read_token_file(path), f"--token-file {path}")
    paths = kubeconfig_paths(kubeconfig, environ)
    return kubeconfig_token(paths, environ, context=context, run=run)


# -- the HTTP client --------------------------------------------------------------------------


class _ControlRetry(Retry):
    """urllib3's Retry, but a change is retried on :data:`UNPROCESSED_STATUSES` only."""

    def is_retry(self, method: str, status_code: int, has_retry_after: bool = False) -> bool:
        if method.upper() not in ("GET", "HEAD") and status_code not in UNPROCESSED_STATUSES:
            return False
        return super().is_retry(method, status_code, has_retry_after)


def _detail(response: requests.Response) -> str:
    """The API's ``detail`` (a validation error list made readable), else the body's start."""
    try:
        body = response.json()
    except ValueError:
        return (response.text or response.reason or "").strip()[:300]
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, list):
        return "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body')}: {e.get('msg', '')}"
            for e in detail
            if isinstance(e, dict)
        )
    return str(detail if detail is not None else body)[:300]


class ControlClient:
    """The control API, with a bearer token.

    Parameters
    ----------
    server
        The API's base URL (``http://127.0.0.1:8080``); a path prefix is kept.
    token
        The bearer token.
    verify
        ``requests``' ``verify``: True, or the CA bundle of the server's certificate.
    session
        The ``requests`` session (tests pass one; by default
        :func:`galpipe.control.kube.retrying_session` with :class:`_ControlRetry`).
    """

    def __init__(
        self,
        server: str,
        token: Token,
        *,
        verify: bool | str = True,
        session: requests.Session | None = None,
        timeout_s: tuple[float, float] = (CONNECT_TIMEOUT_S, READ_TIMEOUT_S),
    ) -> None:
        parts = urlsplit(server)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigurationError(
                f"--server {server!r}: expected http(s)://HOST[:PORT], e.g. http://127.0.0.1:8080"
            )
        self.server = server.rstrip("/")
        self.token = token
        self.verify = verify
        self.session = session or retrying_session(
            backoff_factor=RETRY_BACKOFF_FACTOR,
            backoff_max_s=RETRY_BACKOFF_MAX_S,
            retry_class=_ControlRetry,
        )
        self.timeout_s = timeout_s

    def whoami(self) -> dict[str, Any]:
        """Who the token belongs to."""
        answer: dict[str, Any] = self._request("GET", "/whoami", action="whoami")
        return answer

    def overview(self) -> dict[str, Any]:
        """Every pipeline's queue, workload and overrides."""
        answer: dict[str, Any] = self._request("GET", "/overview", action="overview")
        return answer

    def audit(self, **filters: Any) -> list[dict[str, Any]]:
        """The audit log, newest first; ``None`` filters are left out."""
        params = {k: str(v) for k, v in filters.items() if v is not None}
        answer: list[dict[str, Any]] = self._request("GET", "/audit", action="audit", params=params)
        return answer

    def act(self, action: str, pipeline: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST one action (``pause``, ``release_hold`` …) on ``pipeline``; its result."""
        path = f"/pipelines/{quote(pipeline, safe='')}/{action.replace('_', '-')}"
        answer: dict[str, Any] = self._request(
            "POST", path, action=action, pipeline=pipeline, body=dict(body)
        )
        return answer

    def _request(
        self,
        method: str,
        path: str,
        *,
        action: str,
        pipeline: str = "",
        body: dict[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> Any:
        url = self.server + API_PREFIX + path
        headers = {"Authorization": f"Bearer {self.token.value}", "Accept": "application/json"}
        try:
            response = self.session.request(
                method,
                url,
                json=body,
                params=params,
                headers=headers,
                verify=self.verify,
                timeout=self.timeout_s,
            )
        except requests.RequestException as exc:
            # requests' messages name the URL, never the headers.
            raise ControlUnavailableError(
                f"cannot reach the control API at {self.server}: {type(exc).__name__}: {exc}"
            ) from None
        if not response.ok:
            raise self._error(response, action, pipeline)
        try:
            return response.json()
        except ValueError:
            raise ControlUnavailableError(
                f"{method} {url}: the answer is not JSON (is {self.server} the control API?)",
                response.status_code,
            ) from None

    def _error(self, response: requests.Response, action: str, pipeline: str) -> Exception:
        status, detail = response.status_code, _detail(response)
        if status == 401:
            return ControlUnauthorizedError(
                f"the cluster did not accept the token from {self.token.source} ({detail}); "
                "renew it (or your kubeconfig's login) and try again"
            )
        if status == 403:
            verb = VERB_OF.get(action, action)
            found = _NAMESPACE_IN_DETAIL.search(detail)
            where = f" in {found.group(1)}" if found else ""
            target = pipeline or "the pipelines"
            return ControlForbiddenError(
                f"you may not {verb} {target}{where} (the cluster's RBAC: verb {verb!r} on "
                f"pipelines.galpipe.io; the server said: {detail})"
            )
        if status in (400, 404, 409, 422):
            return ControlRejectedError(f"{action.replace('_', '-')} refused: {detail}", status)
        return ControlUnavailableError(
            f"the control API answered {status} to {action.replace('_', '-')}: {detail}", status
        )


# -- the command ------------------------------------------------------------------------------


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """``--since``: an ISO 8601 time, or a duration ago (``90s``, ``30m``, ``12h``, ``7d``)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", text)
    if match:
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        return (now or datetime.now(UTC)) - timedelta(seconds=seconds)
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InputError(
            f"--since {text!r}: expected an ISO 8601 time or a duration like 30m, 12h, 7d"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _reason(args: argparse.Namespace) -> str:
    reason = (getattr(args, "reason", None) or "").strip()
    if not reason:
        raise InputError("--reason: a written reason is required for every change")
    return reason


def _client(args: argparse.Namespace, environ: Mapping[str, str]) -> ControlClient:
    server = args.server or environ.get(SERVER_ENV, "")
    if not server:
        raise ConfigurationError(
            f"no control API: pass --server URL or set {SERVER_ENV} "
            "(e.g. http://127.0.0.1:8080 after kubectl port-forward svc/galpipe-control 8080)"
        )
    token = resolve_token(
        token=args.token,
        token_file=args.token_file,
        kubeconfig=args.kubeconfig,
        context=args.context,
        environ=environ,
    )
    return ControlClient(server, token, verify=args.ca_file or True)


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


def _age(seconds: Any) -> str:
    if not isinstance(seconds, int | float):
        return "-"
    seconds = float(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def _text(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def render_overview(console: Console, overview: Mapping[str, Any]) -> None:
    """The overview as tables: pipelines, then the overrides in place."""
    pipelines = overview.get("pipelines") or {}
    rows = pipelines.values() if isinstance(pipelines, Mapping) else pipelines
    table = Table(title=f"galpipe pipelines at {_text(overview.get('taken_at'))}")
    for column in (
        "pipeline",
        "paused",
        "queued",
        "running",
        "done",
        "failed",
        "skipped",
        "oldest",
        "rate/s",
        "breaker",
        "replicas",
        "hold",
        "pods ready",
        "restarts",
        "image",
    ):
        table.add_column(column, overflow="fold")
    for p in rows:
        if not isinstance(p, Mapping):
            continue
        counts = p.get("counts") or {}
        pods = p.get("pods") or []
        breaker = p.get("breaker") or {}
        image = _text(p.get("image"))
        wanted = p.get("image_wanted")
        if wanted and wanted != p.get("image"):
            image += f" (Git: {wanted})"
        if p.get("pinned"):
            image += " [pinned]"
        replicas = f"{_text(p.get('replicas_ready'))}/{_text(p.get('replicas_desired'))}"
        table.add_row(
            _text(p.get("pipeline") or p.get("name")),
            "yes" if p.get("paused") else "no",
            *(_text(counts.get(s)) for s in ("queued", "running", "done", "failed", "skipped")),
            _age(p.get("oldest_queued_seconds")),
            f"{float(p.get('rate_per_second') or 0.0):.2f}",
            _text(breaker.get("state") if isinstance(breaker, Mapping) else None),
            replicas,
            _text(p.get("hold_replicas")),
            f"{sum(1 for pod in pods if pod.get('ready'))}/{len(pods)}",
            str(sum(int(pod.get("restarts") or 0) for pod in pods)),
            image,
        )
    console.print(table)
    overrides = overview.get("overrides") or []
    if overrides:
        table = Table(title="overrides in place")
        for column in ("pipeline", "override", "value", "since", "by", "reason"):
            table.add_column(column, overflow="fold")
        for o in overrides:
            table.add_row(
                _text(o.get("pipeline")),
                _text(o.get("kind")),
                _text(o.get("value")),
                _text(o.get("since")),
                _text(o.get("user")),
                _text(o.get("reason")),
            )
        console.print(table)
    else:
        console.print("no overrides in place")
    if overview.get("helm_release_suspended"):
        console.print(
            f"[bold yellow]Flux reconciliation of HelmRelease {overview.get('helm_release')} "
            "is suspended: Git does not control the release until every pin is released "
            "(galpipe ctl unpin PIPELINE).[/]"
        )
    if overview.get("kube_error"):
        console.print(f"[yellow]Kubernetes could not be read fully: {overview['kube_error']}[/]")


def render_result(console: Console, result: Mapping[str, Any]) -> None:
    """One action's outcome: what, on what, by whom, before → after, its audit row."""
    action = str(result.get("action", "")).replace("_", "-")
    line = f"{action} of {result.get('pipeline')}: {result.get('result')}"
    if result.get("count") is not None:
        verb = "would queue" if result.get("result") == "dry_run" else "queued"
        line += f" ({verb} {result['count']} tasks)"
    if result.get("audit_id") is not None:
        line += f", audit #{result['audit_id']}"
    console.print(line, highlight=False)
    for key in ("before", "after"):
        if result.get(key) is not None:
            console.print(f"  {key}: {json.dumps(result[key], sort_keys=True)}", highlight=False)


def render_audit(console: Console, records: Sequence[Mapping[str, Any]]) -> None:
    """Audit rows as a table, newest first."""
    table = Table(title="audit log (newest first)")
    for column in ("id", "at", "user", "action", "pipeline", "result", "reason", "error"):
        table.add_column(column, overflow="fold")
    for r in records:
        table.add_row(
            *(
                _text(r.get(k))
                for k in ("id", "at", "user", "action", "pipeline", "result", "reason", "error")
            )
        )
    console.print(table)


def _bulk(
    client: ControlClient,
    args: argparse.Namespace,
    console: Console,
    action: str,
    body: dict[str, Any],
) -> None:
    """A retry or requeue: always a dry run first; the change only with ``--yes``."""
    preview = client.act(action, args.pipeline, {**body, "dry_run": True})
    applied = None
    count = preview.get("count")
    if args.yes and count != 0:
        applied = client.act(action, args.pipeline, {**body, "dry_run": False})
    if args.json:
        _print_json({"dry_run": preview, "applied": applied})
        return
    render_result(console, preview)
    if applied is not None:
        render_result(console, applied)
    elif args.yes:
        console.print(f"nothing to {action}: no task matches")
    else:
        console.print(f"dry run only: run again with --yes to {action} them")


def run_ctl(
    args: argparse.Namespace,
    environ: Mapping[str, str] | None = None,
    *,
    console: Console | None = None,
) -> None:
    """Run one ``galpipe ctl`` verb (``args.verb``) against the control API."""
    env = os.environ if environ is None else environ
    out = console or Console()
    client = _client(args, env)
    verb: str = args.verb
    if verb == "whoami":
        who = client.whoami()
        if args.json:
            _print_json(who)
        else:
            out.print(f"{who.get('user')} (groups: {', '.join(who.get('groups') or [])})")
        return
    if verb == "overview":
        overview = client.overview()
        if args.json:
            _print_json(overview)
        else:
            render_overview(out, overview)
        return
    if verb == "audit":
        records = client.audit(
            user=args.user,
            action=args.action.replace("-", "_") if args.action else None,
            pipeline=args.pipeline,
            since=parse_since(args.since).isoformat() if args.since else None,
            limit=args.limit,
        )
        if args.json:
            _print_json(records)
        else:
            render_audit(out, records)
        return
    body: dict[str, Any] = {"reason": _reason(args)}
    if verb == "retry":
        if args.error_contains:
            body["error_contains"] = args.error_contains
        _bulk(client, args, out, "retry", body)
        return
    if verb == "requeue":
        body["algo_version"] = args.algo_version
        if args.ids:
            body["source_ids"] = list(args.ids)
        _bulk(client, args, out, "requeue", body)
        return
    if verb == "hold":
        body["replicas"] = args.replicas
    elif verb == "pin":
        body["image"] = args.image
    result = client.act(verb.replace("-", "_"), args.pipeline, body)
    if args.json:
        _print_json(result)
    else:
        render_result(out, result)
