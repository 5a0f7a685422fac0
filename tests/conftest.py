"""Shared fixtures: a real database (SQLite, or PostgreSQL when MEDISENTINEL_TEST_DATABASE_URL
is set), migrated by Alembic, and a real uvicorn server on a loopback socket."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import httpx
import pytest
import uvicorn
from sqlalchemy import create_engine, text

from app.auth import clients
from app.db import run_migrations, write_transaction
from app.main import create_app
from app.settings import Settings
from tests.browser import launch_chromium

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

TEST_MASTER_KEY = "test-master-key-" + "0" * 32


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _reset_postgres(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = os.environ.get("MEDISENTINEL_TEST_DATABASE_URL")
    if url:
        _reset_postgres(url)
    else:
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}"
    run_migrations(url)
    return url


@pytest.fixture(scope="session")
def is_postgres(database_url: str) -> bool:
    return database_url.startswith("postgresql")


class LiveServer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app = create_app(settings)
        config = uvicorn.Config(
            self.app, host=settings.host, port=settings.port, log_level="warning"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def base_url(self) -> str:
        return self.settings.fhir_base_url

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="session")
def live_server(database_url: str) -> Iterator[LiveServer]:
    port = _free_port()
    settings = Settings(
        database_url=database_url,
        host="127.0.0.1",
        port=port,
        master_key=TEST_MASTER_KEY,
        mllp_port=0,  # the MLLP listener on a free port: app.state.hl7.mllp_port
    )
    server = LiveServer(settings)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def base_url(live_server: LiveServer) -> str:
    return live_server.base_url


TEST_CLIENT = "test-suite"
TEST_SCOPE = "system/*.cruds system/AuditEvent.rs"


@pytest.fixture(scope="session")
def system_token(live_server: LiveServer) -> str:
    """A backend client with every system scope, and a token for it."""
    auth = live_server.app.state.auth
    with write_transaction(auth.engine) as conn:
        registered = clients.get_client_by_name(conn, TEST_CLIENT) is not None
    if not registered:
        with write_transaction(auth.engine) as conn:
            jwks: dict[str, list[object]] = {"keys": []}
            clients.create_client(conn, TEST_CLIENT, "backend", scope=TEST_SCOPE, jwks=jwks)
    return str(auth.local_token(TEST_CLIENT, TEST_SCOPE)["access_token"])


@pytest.fixture(scope="session")
def auth_headers(system_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {system_token}"}


@pytest.fixture
def client(base_url: str, auth_headers: dict[str, str]) -> Iterator[httpx.Client]:
    headers = {"Accept": "application/fhir+json", **auth_headers}
    with httpx.Client(base_url=base_url, headers=headers, timeout=30) as http:
        yield http


# ---------------------------------------------------------------- browser tests

BROWSER_TIMEOUT_MS = 15_000


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    """Headless Chromium (tests/browser.py: skipped, or failed in CI, when it is missing)."""
    with launch_chromium() as browser:
        yield browser


@pytest.fixture
def page(chromium: Browser) -> Iterator[Page]:
    """A fresh browser context (no cookies from other tests) and a page in it."""
    context = chromium.new_context()
    context.set_default_timeout(BROWSER_TIMEOUT_MS)
    try:
        yield context.new_page()
    finally:
        context.close()
