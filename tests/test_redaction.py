"""A store password never leaves the process: not in HTTP bodies, log lines or CLI output —
with the right password, a wrong one, and the store down.  Against a real redis-server with
`requirepass` on its own loopback port."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from experiments import EXAMPLES_DIR
from experiments.errors import StoreError
from experiments.store import open_store, redact
from experiments.store.credentials import store_password
from tests.servers import Process, Service, start_redis, start_service, wait_until

PASSWORD = f"pw-{uuid.uuid4().hex}"
WRONG = f"wrong-{uuid.uuid4().hex}"
TOKEN = "redaction-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("redis://:s3cret@127.0.0.1:6379/0?prefix=a:", "redis://:***@127.0.0.1:6379/0?prefix=a:"),
        ("rediss://app:s3cret@cache:6380/1", "rediss://app:***@cache:6380/1"),
        ("redis://app:p@ss@cache/0", "redis://app:***@cache/0"),  # a raw @ in the password
        ("redis://s3cret@cache/0", "redis://***@cache/0"),  # a lone field may be a password
        ("redis://cache/0?password=s3cret&prefix=a:", "redis://cache/0?password=***&prefix=a:"),
        ("store URL 'redis://:s3cret@h:1/x': bad", "store URL 'redis://:***@h:1/x': bad"),
        ("sqlite:////var/lib/abmesh.db", "sqlite:////var/lib/abmesh.db"),
        ("user a@b.example wrote", "user a@b.example wrote"),
    ],
)
def test_redact_masks_passwords_in_urls_and_text(text: str, shown: str) -> None:
    assert redact(text) == shown


def test_redact_masks_given_secrets_anywhere() -> None:
    assert redact("AUTH s3cret failed; s3cret", "s3cret", None) == "AUTH *** failed; ***"


def test_the_password_from_a_variable_or_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("from-file\n")
    assert store_password({"ABMESH_STORE_PASSWORD": "from-env"}) == "from-env"
    assert store_password({"ABMESH_STORE_PASSWORD_FILE": str(secret)}) == "from-file"
    assert store_password({}) is None
    with pytest.raises(StoreError, match="not both"):
        store_password({"ABMESH_STORE_PASSWORD": "a", "ABMESH_STORE_PASSWORD_FILE": str(secret)})
    with pytest.raises(StoreError, match="No such file"):
        store_password({"ABMESH_STORE_PASSWORD_FILE": str(tmp_path / "missing")})
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(StoreError, match="is empty"):
        store_password({"ABMESH_STORE_PASSWORD_FILE": str(tmp_path / "empty")})


@pytest.mark.parametrize(
    "url",
    [
        f"redis://:{PASSWORD}@127.0.0.1:6379/0?colour=red",
        f"redis://:{PASSWORD}@127.0.0.1:6379/zero",
        f"redis://:{PASSWORD}@127.0.0.1:port/0",
        f"mysql://root:{PASSWORD}@db/abmesh",
    ],
    # Ids of their own: the URL would put the password in every report (and differ per process).
    ids=["unknown-option", "db-not-a-number", "port-not-a-number", "unknown-scheme"],
)
def test_url_errors_never_quote_the_password(url: str) -> None:
    with pytest.raises(StoreError) as caught:
        open_store(url)
    assert PASSWORD not in str(caught.value)
    assert ":***@" in str(caught.value)


def test_a_password_in_the_url_and_the_environment_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ABMESH_STORE_PASSWORD", WRONG)
    with pytest.raises(StoreError, match="give it once") as caught:
        open_store(f"redis://:{PASSWORD}@127.0.0.1:6379/0")
    assert PASSWORD not in str(caught.value)
    assert WRONG not in str(caught.value)


# Against a real redis-server that wants a password.


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    server = start_redis(tmp_path_factory.mktemp("locked-redis"), password=PASSWORD)
    yield server
    server.stop()


def _url(port: int, password: str | None) -> str:
    auth = f":{password}@" if password else ""
    return f"redis://{auth}127.0.0.1:{port}/0?prefix=redaction-{uuid.uuid4().hex[:8]}:"


def abmesh(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("ABMESH_")}
    return subprocess.run(
        [sys.executable, "-m", "experiments.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**base, **(env or {})},
    )


def _assert_secret_free(*texts: str) -> None:
    for text in texts:
        assert PASSWORD not in text
        assert WRONG not in text


def test_the_cli_with_the_password_in_the_url_a_variable_or_a_file(
    locked: Process, tmp_path: Path
) -> None:
    in_url = _url(locked.port, PASSWORD)
    spec = str(EXAMPLES_DIR / "ranker-v2.yaml")
    applied = abmesh("apply", "-f", spec, "--store", in_url)
    assert applied.returncode == 0, applied.stderr
    listed = abmesh("get", "experiments", "-o", "json", "--store", in_url)
    assert listed.returncode == 0
    assert '"name": "ranker-v2"' in listed.stdout

    bare = in_url.replace(f":{PASSWORD}@", "")
    by_env = abmesh("get", "experiment", "ranker-v2", "--store", bare,
                    env={"ABMESH_STORE_PASSWORD": PASSWORD})  # fmt: skip
    assert by_env.returncode == 0, by_env.stderr
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")
    by_file = abmesh("get", "experiments", env={"ABMESH_STORE": bare,
                     "ABMESH_STORE_PASSWORD_FILE": str(secret)})  # fmt: skip
    assert by_file.returncode == 0, by_file.stderr
    assert "ranker-v2" in by_file.stdout
    _assert_secret_free(applied.stdout, applied.stderr, listed.stdout, listed.stderr,
                        by_env.stdout, by_env.stderr, by_file.stdout, by_file.stderr)  # fmt: skip


@pytest.mark.parametrize("password", [WRONG, None], ids=["wrong", "missing"])
def test_the_cli_with_a_wrong_or_missing_password(locked: Process, password: str | None) -> None:
    proc = abmesh("get", "experiments", "--store", _url(locked.port, password))
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: Redis store 'redis://")
    assert "password" in proc.stderr.lower() or "authentication" in proc.stderr.lower()
    _assert_secret_free(proc.stdout, proc.stderr)


def _bodies(service: Service) -> list[str]:
    """What anyone may read (/readyz, unauthenticated: strict, which answers 503 with the
    store's error while the plain probe stays ready on cached configs) and what an admin
    call answers."""
    ready = httpx.get(f"{service.url}/readyz", params={"strict": "true"}, timeout=10)
    admin = httpx.get(f"{service.url}/v1/experiments", headers=ADMIN, timeout=10)
    assert (ready.status_code, admin.status_code) == (503, 503)
    return [ready.text, admin.text]


def test_the_service_with_a_wrong_password(locked: Process, tmp_path: Path) -> None:
    service = start_service(_url(locked.port, WRONG), tmp_path, admin_token=TOKEN)
    try:
        bodies = _bodies(service)
        assert "Redis store 'redis://:***@127.0.0.1:" in bodies[0]
    finally:
        service.stop()
    _assert_secret_free(*bodies, service.output())


@pytest.mark.parametrize("where", ["url", "file"])
def test_the_service_with_the_store_down(tmp_path: Path, where: str) -> None:
    server = start_redis(tmp_path / "redis", password=PASSWORD)
    secret = tmp_path / "password"
    secret.write_text(PASSWORD)
    if where == "url":
        service = start_service(_url(server.port, PASSWORD), tmp_path, admin_token=TOKEN,
                                refresh_interval=0.2)  # fmt: skip
    else:
        service = start_service(_url(server.port, None), tmp_path, admin_token=TOKEN,
                                refresh_interval=0.2, store_password_file=secret)  # fmt: skip
    try:
        up = httpx.get(f"{service.url}/v1/experiments", headers=ADMIN, timeout=10)
        assert up.status_code == 200, up.text
        server.stop()
        strict = {"strict": "true"}
        wait_until(lambda: httpx.get(f"{service.url}/readyz", params=strict).status_code == 503,
                   "strict readiness to see the outage")  # fmt: skip
        bodies = _bodies(service)
        assert "Redis store 'redis://" in bodies[1]
    finally:
        service.stop()
        server.stop()
    _assert_secret_free(*bodies, service.output())
