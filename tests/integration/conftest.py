"""Fixtures shared by the integration tests: an S3 server (moto) speaking the real protocol.

One ``ThreadedMotoServer`` on 127.0.0.1 per session, on a port the kernel picked; each test that
needs a bucket gets a fresh one. ``test_storage.py`` keeps fixtures of the same names of its own
(module fixtures take precedence), so it runs unchanged.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator

import boto3
import pytest
from moto.server import ThreadedMotoServer

from galpipe.storage import make_s3_client

#: Dummy credentials and region: moto accepts anything, and no real AWS is ever asked.
DUMMY_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}
_UNSET_AWS_ENV = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE")


@pytest.fixture
def aws_environment(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Dummy AWS credentials in this process's environment (child processes inherit them)."""
    for name in _UNSET_AWS_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in DUMMY_AWS_ENV.items():
        monkeypatch.setenv(name, value)
    return dict(DUMMY_AWS_ENV)


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """One moto S3 server on 127.0.0.1 for the session."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_client(moto_endpoint: str, aws_environment: dict[str, str]):
    """A client with production's configuration and dummy credentials, pointed at moto."""
    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    return make_s3_client(moto_endpoint, session=session)


@pytest.fixture
def bucket(s3_client) -> str:
    """A fresh, empty bucket on the moto server."""
    name = f"galpipe-test-{uuid.uuid4().hex[:16]}"
    s3_client.create_bucket(Bucket=name)
    return name
