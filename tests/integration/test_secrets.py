"""Secrets stay secret: the database password and the S3 keys appear nowhere the stack shows.

The demo stack runs with a distinctive password on its PostgreSQL server (the embedded server,
started with that password: every connection must give it) and distinctive S3 keys against
moto's S3 server, with ``galpipe monitor`` and one fetch and one radon worker beside the demo's
own workers, each serving ``/metrics``. Then neither secret, as written or URL-encoded, may be
in any process's output or log, any ``/metrics``, ``/readyz`` or ``/healthz`` answer, or any file
of the output directory. Failures are provoked too (a wrong password, a malformed URL holding
the password, S3 keys the server does not know): their errors name the problem, are galpipe's
own types, and echo no secret.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import boto3
import numpy as np
import psycopg
import pytest
from astropy.table import Table

from galpipe.db.embedded import start_embedded_postgres
from galpipe.db.migrate import migrate
from galpipe.demo.processes import ChildProcess, start_sky, stop_all, worker_environment
from galpipe.errors import GalpipeError, StorageError
from galpipe.science.core import RadonConfig
from galpipe.science.radon import RadonOperator, default_cache_dir
from galpipe.settings import Settings, SettingsError
from galpipe.storage import make_s3_client, open_object_store
from galpipe.synthetic.catalog import make_truths, truth_table
from tests.integration.conftest import DUMMY_AWS_ENV

N_GALAXIES = 40
# Characters a URL must escape, so the written and the encoded forms differ.
DB_PASSWORD = f"pg/{secrets.token_hex(6)}+Pass@word!"
WRONG_PASSWORD = f"wrong/{secrets.token_hex(6)}+Pass@word!"
ACCESS_KEY_ID = "AKIA" + secrets.token_hex(8).upper()
SECRET_ACCESS_KEY = f"s3/{secrets.token_hex(12)}+Key="
SECRETS = (DB_PASSWORD, WRONG_PASSWORD, ACCESS_KEY_ID, SECRET_ACCESS_KEY)
#: The forms a secret may take in text: as written, and URL-encoded (path, query, form).
FORMS = {form for s in SECRETS for form in (s, quote(s, safe=""), quote(s), quote_plus(s))}


def _leaks(content: str | bytes) -> list[str]:
    """The forms of the secrets found in ``content``."""
    data = content.encode() if isinstance(content, str) else content
    return [form for form in sorted(FORMS) if form.encode() in data]


def _assert_no_secret(where: str, content: str | bytes) -> None:
    leaked = _leaks(content)
    assert not leaked, f"{where} shows a secret ({len(leaked)} form(s))"


def _assert_no_secret_in_files(root: Path) -> int:
    """Every file under ``root`` is free of secrets; how many files were read."""
    files = [path for path in root.rglob("*") if path.is_file()]
    for path in files:
        _assert_no_secret(str(path), path.read_bytes())
    return len(files)


@pytest.fixture(scope="module")
def secret_server() -> Iterator[Any]:
    """An embedded PostgreSQL server that asks every connection for DB_PASSWORD."""
    # A short path of our own: the server's Unix socket lives in it (about 100 bytes max).
    home = Path(tempfile.mkdtemp(prefix="galpipe-secrets-"))
    server = start_embedded_postgres(home / "pgdata", password=DB_PASSWORD)
    yield server
    server.cleanup()
    shutil.rmtree(home, ignore_errors=True)


def _url(server: Any, password: str, database: str = "postgres") -> str:
    """The server's URL with ``password``, percent-encoded as a URL needs it."""
    uri = str(server.get_uri(database))
    return uri.replace("postgres:@", f"postgres:{quote(password, safe='')}@", 1)


def _new_database(server: Any, name: str) -> str:
    with psycopg.connect(_url(server, DB_PASSWORD), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    return _url(server, DB_PASSWORD, name)


def _environment() -> dict[str, str]:
    """This process's environment, no GALPIPE_ or AWS_ variables but the distinctive keys."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GALPIPE_", "AWS_"))}
    return {
        **env,
        **DUMMY_AWS_ENV,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
    }


def _galpipe(
    argv: list[str], env: dict[str, str], timeout_s: float = 180
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "galpipe.cli", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _wait_for(port: int, path: str, status: int, timeout_s: float = 30) -> str:
    """The body of ``path`` once it answers ``status``."""
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(OSError):
            code, body = _http_get(port, path)
            if code == status:
                return body
        assert time.monotonic() < deadline, f"{path} on {port}: not {status} in {timeout_s} s"
        time.sleep(0.2)


def _wait_for_line(path: Path, text: str, process: subprocess.Popen[str]) -> None:
    """Wait until the log at ``path`` has ``text`` (or ``process`` exited, or 60 s passed)."""
    deadline = time.monotonic() + 60
    while not (path.exists() and text in path.read_text()):
        if process.poll() is not None or time.monotonic() > deadline:
            return  # the demo's own outcome says what went wrong
        time.sleep(0.1)


@contextlib.contextmanager
def _moto_authentication(endpoint: str) -> Iterator[None]:
    """moto checks every request's keys (its IAM knows none) inside the block.

    The setting is moto's process-wide state: the previous one is put back afterwards.
    """

    def reset_auth(count: str) -> str:
        request = urllib.request.Request(
            f"{endpoint}/moto-api/reset-auth",
            data=count.encode(),
            method="POST",
            headers={"Content-Type": "text/plain"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return str(json.load(response)["PREVIOUS_INITIAL_NO_AUTH_ACTION_COUNT"])

    previous = reset_auth("0")
    try:
        yield
    finally:
        reset_auth(previous)


def test_a_demo_run_shows_no_secret(
    tmp_path: Path, secret_server: Any, moto_endpoint: str, bucket: str
) -> None:
    database_url = _new_database(secret_server, "galpipe_secrets_demo")
    migrate(database_url)  # before the side workers start, which need the tables
    out, side = tmp_path / "demo", tmp_path / "side"
    side.mkdir()
    env = _environment()
    catalog = tmp_path / "catalog.ecsv"
    truth_table(make_truths(N_GALAXIES, seed=5)).write(catalog, format="ascii.ecsv")
    config = RadonConfig()  # built now if not cached, so the radon workers only load it
    RadonOperator.load_or_build(
        config.size, np.asarray(config.angles_deg), config.order, cache_dir=default_cache_dir()
    )
    object_store = f"s3://{bucket}/demo"
    sky = start_sky(catalog, side, cache_size=10_000, env=env)
    children: list[ChildProcess] = [sky]
    ports = {name: _free_port() for name in ("monitor", "fetch", "radon")}
    demo: subprocess.Popen[str] | None = None
    try:
        cutout_url = sky.wait_until_ready(timeout_s=120)
        worker_env = worker_environment(
            env,
            database_url=database_url,
            object_store=object_store,
            cutout_url=cutout_url,
            fetch_rate=1000,
            radon_cache_dir=default_cache_dir(),
            s3_endpoint_url=moto_endpoint,
        )
        demo = subprocess.Popen(
            [
                *(sys.executable, "-m", "galpipe.cli"),
                *("demo", "--catalog", str(catalog), "--out", str(out), "--no-progress"),
                *("--cutout-url", cutout_url, "--fetch-rate", "1000", "--timeout", "120"),
                *("--database-url", database_url, "--object-store", object_store),
                *("--s3-endpoint-url", moto_endpoint),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # The side workers join once the demo's own are running: a worker stopped while it
        # starts exits without its SIGTERM handler, which the demo reports as a problem.
        for name in ("fetch-1", "radon-1"):
            _wait_for_line(out / "logs" / f"{name}.log", "worker started", demo)
        for name, port in ports.items():
            # JSON logs: every ``extra`` field of a record is written out too.
            extra = {"GALPIPE_METRICS_PORT": str(port), "GALPIPE_LOG_FORMAT": "json"}
            extra["GALPIPE_WORKER_ID"] = f"secrets-{name}"
            children.append(ChildProcess(name, [name], side / f"{name}.log", worker_env | extra))
        stdout, stderr = demo.communicate(timeout=180)
        answers = {
            f"{name} {path}": _http_get(port, path)
            for name, port in ports.items()
            for path in ("/metrics", "/readyz", "/healthz")
        }
    finally:
        if demo is not None and demo.poll() is None:
            demo.kill()
            demo.communicate()
        codes = stop_all(children)
    assert demo.returncode == 0, stdout[-3000:] + stderr[-3000:]
    assert codes == dict.fromkeys(["sky", *ports], 0), codes

    # The secrets were in use: the demo's database, the monitor's and the bucket answered.
    results = Table.read(out / "results.ecsv", format="ascii.ecsv")
    assert (results["fetch_state"] == "done").sum() > N_GALAXIES // 2
    assert "galpipe_database_up 1.0" in answers["monitor /metrics"][1]
    assert all(code == 200 for code, _ in answers.values()), answers

    _assert_no_secret("galpipe demo's stdout", stdout)
    _assert_no_secret("galpipe demo's stderr", stderr)
    for where, (_, body) in answers.items():
        _assert_no_secret(where, body)
    assert _assert_no_secret_in_files(out) > 5  # the report, catalogues, figures, logs
    assert _assert_no_secret_in_files(side) >= 4  # the sky's and the side processes' logs
    _assert_no_secret("PostgreSQL's log", (Path(secret_server.pgdata) / "log").read_bytes())


def test_a_wrong_database_password_is_refused_without_echo(
    tmp_path: Path, secret_server: Any
) -> None:
    env = _environment()
    wrong = _url(secret_server, WRONG_PASSWORD)

    migrate_run = _galpipe(["migrate"], env | {"GALPIPE_DATABASE_URL": wrong})
    assert migrate_run.returncode == 1, migrate_run.stderr
    assert "galpipe migrate: database error:" in migrate_run.stderr
    assert "password authentication failed" in migrate_run.stderr

    demo = _galpipe(
        ["demo", "--n", "5", "--out", str(tmp_path / "demo"), "--database-url", wrong],
        env,
        timeout_s=120,
    )
    assert demo.returncode == 1, demo.stdout[-2000:] + demo.stderr[-2000:]
    assert "Traceback" not in demo.stderr  # a galpipe error, reported as one
    assert "galpipe demo: the database of --database-url: cannot use it:" in demo.stderr
    assert "password authentication failed" in demo.stderr

    # A URL libpq cannot parse, the password written raw in it (with a bad escape).
    malformed = str(secret_server.get_uri()).replace("postgres:@", f"postgres:{DB_PASSWORD}%@")
    bad_url = _galpipe(["migrate"], env | {"GALPIPE_DATABASE_URL": malformed})
    assert bad_url.returncode == 2, bad_url.stderr
    assert "configuration error: GALPIPE_DATABASE_URL: not a PostgreSQL" in bad_url.stderr
    with pytest.raises(SettingsError) as bad_setting:
        Settings.from_env({"GALPIPE_DATABASE_URL": malformed})

    # The monitor keeps running and says the database is down, on /metrics and /readyz.
    port = _free_port()
    monitor = ChildProcess(
        "monitor",
        ["monitor"],
        tmp_path / "monitor.log",
        env
        | {
            "GALPIPE_DATABASE_URL": wrong,
            "GALPIPE_METRICS_PORT": str(port),
            "GALPIPE_MONITOR_INTERVAL_SECONDS": "0.5",
            "GALPIPE_LOG_FORMAT": "json",
        },
    )
    try:
        readiness = _wait_for(port, "/readyz", 503)
        metrics_body = _wait_for(port, "/metrics", 200)
    finally:
        assert monitor.stop() == 0
    assert "database unreachable" in readiness
    assert "galpipe_database_up 0.0" in metrics_body
    monitor_log = (tmp_path / "monitor.log").read_text()
    assert "password authentication failed" in monitor_log

    shown = {
        "galpipe migrate's stderr": migrate_run.stderr,
        "galpipe demo's output": demo.stdout + demo.stderr,
        "galpipe migrate's stderr (malformed URL)": bad_url.stderr,
        "the SettingsError": str(bad_setting.value),
        "the settings' repr": repr(Settings.from_env({"GALPIPE_DATABASE_URL": wrong})),
        "the monitor's /readyz": readiness,
        "the monitor's /metrics": metrics_body,
        "the monitor's log": monitor_log,
    }
    for where, text in shown.items():
        _assert_no_secret(where, text)
    assert _assert_no_secret_in_files(tmp_path / "demo") > 0


def _chain(error: BaseException) -> Iterator[BaseException]:
    """``error`` and every exception it was raised from or while handling."""
    seen: BaseException | None = error
    while seen is not None:
        yield seen
        seen = seen.__cause__ or seen.__context__


def test_s3_keys_the_server_refuses_are_not_echoed(
    tmp_path: Path, secret_server: Any, moto_endpoint: str, bucket: str
) -> None:
    database_url = _new_database(secret_server, "galpipe_secrets_s3")
    env = _environment()
    session = boto3.session.Session(
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
        region_name="us-east-1",
    )
    store = open_object_store(
        f"s3://{bucket}/refused", client=make_s3_client(moto_endpoint, session=session)
    )
    calls = {
        "put": lambda: store.put("a/b.fits", b"bytes"),
        "get": lambda: store.get("a/b.fits"),
        "exists": lambda: store.exists("a/b.fits"),
        "delete": lambda: store.delete("a/b.fits"),
    }
    with _moto_authentication(moto_endpoint):
        errors: dict[str, GalpipeError] = {}
        for name, call in calls.items():
            with pytest.raises(StorageError) as info:
                call()
            errors[name] = info.value
        demo = _galpipe(
            [
                *("demo", "--n", "6", "--out", str(tmp_path / "demo"), "--no-progress"),
                *("--database-url", database_url, "--timeout", "90"),
                *("--object-store", f"s3://{bucket}/refused"),
                *("--s3-endpoint-url", moto_endpoint),
            ],
            env,
        )
    for name, error in errors.items():
        assert "a/b.fits" in str(error), name
        assert f"s3://{bucket}/refused" in str(error), name
        for link in _chain(error):
            _assert_no_secret(f"{name}: {type(link).__name__}", f"{link} {link!r}")
    assert "InvalidAccessKeyId" in str(errors["put"])

    # Every fetch failed on the refused upload, with its reason in the catalogue.
    assert "Traceback" not in demo.stderr, demo.stderr[-3000:]
    results = Table.read(tmp_path / "demo" / "results.ecsv", format="ascii.ecsv")
    assert set(results["fetch_state"]) == {"failed"}
    assert all("InvalidAccessKeyId" in str(e) for e in results["fetch_error"])
    _assert_no_secret("galpipe demo's stdout", demo.stdout)
    _assert_no_secret("galpipe demo's stderr", demo.stderr)
    assert _assert_no_secret_in_files(tmp_path / "demo") > 3
