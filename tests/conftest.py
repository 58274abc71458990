from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from .hosts import db, make_app

POSTGRES_URL = os.environ.get("PUBLIPOSTAGE_TEST_DATABASE_URL")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A schema of its own for this test process, so concurrent runs never collide."""
    if not POSTGRES_URL:
        pytest.skip("PostgreSQL: set PUBLIPOSTAGE_TEST_DATABASE_URL to run against it")
    import sqlalchemy as sa

    schema = f"pp_test_{os.getpid()}"
    engine = sa.create_engine(POSTGRES_URL)
    with engine.begin() as connection:
        connection.execute(sa.text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        connection.execute(sa.text(f"CREATE SCHEMA {schema}"))
    separator = "&" if "?" in POSTGRES_URL else "?"
    yield f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"
    with engine.begin() as connection:
        connection.execute(sa.text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
    engine.dispose()


@pytest.fixture(scope="session")
def axe_script(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """axe-core for the accessibility checks (``make axe`` caches it under build/)."""
    from .browser import find_axe

    return find_axe(tmp_path_factory.mktemp("axe"))


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    if request.param == "postgresql":
        return str(request.getfixturevalue("postgres_url"))
    return f"sqlite:///{tmp_path / 'host.sqlite3'}"


@pytest.fixture
def app_config() -> dict[str, Any]:
    """Per-test extra configuration (override in a test module)."""
    return {}


@pytest.fixture
def app(database_url: str, tmp_path: Any, app_config: dict[str, Any]) -> Iterator[Flask]:
    app = make_app(database_url, str(tmp_path / "instance"), **app_config)
    yield app
    state = app.extensions["publipostage"]
    state.runner.shutdown(wait=True)
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def app_ctx(app: Flask) -> Iterator[Flask]:
    with app.app_context():
        yield app


class RoleClient:
    """A test client that logs in as one of the test host's roles."""

    def __init__(self, app: Flask) -> None:
        self.client = app.test_client()

    def get(self, url: str, role: str | None = None, **kwargs: Any) -> Any:
        return self.client.get(url, headers=_headers(role), **kwargs)

    def post(self, url: str, role: str | None = None, **kwargs: Any) -> Any:
        return self.client.post(url, headers=_headers(role), **kwargs)


def _headers(role: str | None) -> dict[str, str]:
    return {"X-Test-User": role} if role else {}


@pytest.fixture
def client(app: Flask) -> RoleClient:
    return RoleClient(app)


@pytest.fixture
def school(app_ctx: Flask) -> Any:
    from .school import build_school

    return build_school()


@pytest.fixture
def smtp_options(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Options of the test SMTP server (parametrize indirectly to change them)."""
    return dict(getattr(request, "param", {}))


@pytest.fixture
def smtp(smtp_options: dict[str, Any]) -> Iterator[Any]:
    """A real SMTP server (aiosmtpd) on 127.0.0.1 that keeps what it receives."""
    from .smtp import SmtpServer

    server = SmtpServer(**smtp_options).start()
    yield server
    server.close()


@pytest.fixture
def mail_config(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Extra mail settings of a test (parametrize indirectly to change them)."""
    return dict(getattr(request, "param", {}))


# -- an academy's own certificate authority (TLS tests of the relay and the IMAP server) --


@pytest.fixture(scope="module")
def academy() -> Any:
    """A certificate authority of the test's own (``trustme``), as an academy runs one."""
    import trustme

    return trustme.CA(organization_name="Académie de test")


@pytest.fixture
def ca_file(academy: Any, tmp_path: Any) -> str:
    """The academy's certificate, as the file ``MAIL_TLS_CA_FILE`` names."""
    path = tmp_path / "academy-ca.pem"
    academy.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
def queue() -> Iterator[str]:
    """A Celery queue of the test's own on the shared Redis, deleted after it."""
    from .celery_workers import delete_queue, new_queue

    name = new_queue()
    yield name
    delete_queue(name)


#: A test still running after this many seconds is stuck (a deadlock, a lost
#: worker): its process writes every thread's stack and exits, so the run reports
#: it instead of hanging until CI gives up.
STUCK_AFTER = 600


@pytest.fixture(autouse=True)
def _stuck_guard() -> Iterator[None]:
    import faulthandler
    import sys

    faulthandler.dump_traceback_later(STUCK_AFTER, exit=True, file=sys.__stderr__)
    yield
    faulthandler.cancel_dump_traceback_later()
