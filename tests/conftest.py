from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from domicile.packs import load_packs
from domicile.policy import PolicyEngine

from .pg import (
    ADMIN_URL,
    PgCluster,
    PgServer,
    ensure_server,
    remove_template,
    sweep_clusters,
)

HERE = Path(__file__).parent
PACKS = HERE.parent / "src" / "domicile" / "packs" / "data"
TEST_PACKS = HERE / "packs"


@pytest.fixture(scope="session")
def engine() -> PolicyEngine:
    """Every built-in pack, as a deployment would load them."""
    return PolicyEngine()


@pytest.fixture(scope="session")
def ru_engine() -> PolicyEngine:
    """Only the Russian pack: scenario tests that must not depend on other packs."""
    return PolicyEngine(load_packs([PACKS / "ru.yaml"], builtin=False, env=False))


@pytest.fixture(scope="session")
def toy_engine() -> PolicyEngine:
    """Two small test packs that disagree, for engine mechanics."""
    return PolicyEngine(load_packs([TEST_PACKS], builtin=False, env=False))


# -- PostgreSQL -------------------------------------------------------------------------------
# The machine's server (see tests/pg.py) must be up: if it does not answer and cannot be
# started, every PostgreSQL test fails. They are never skipped.


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """The machine's PostgreSQL server, started if needed; drops our databases at the end."""
    problem = ensure_server(ADMIN_URL)
    if problem is not None:
        pytest.fail(
            f"PostgreSQL does not answer at {ADMIN_URL} and could not be started:\n{problem}",
            pytrace=False,
        )
    server = PgServer(ADMIN_URL)
    server.sweep()
    try:
        yield server
    finally:
        server.flush()


@pytest.fixture
def pg_database(pg_server: PgServer) -> Iterator[Callable[[str], str]]:
    """Factory: ``pg_database("ru")`` creates a fresh, uniquely named database on the
    machine's server and returns its URL. All are dropped after the test."""
    names: list[str] = []

    def make(label: str = "db") -> str:
        name = pg_server.create_database(label)
        names.append(name)
        return pg_server.url(name)

    yield make
    pg_server.discard(names)


@pytest.fixture
def pg_url(pg_database: Callable[[str], str]) -> str:
    """The URL of one fresh database on the machine's server."""
    return pg_database("db")


@pytest.fixture(scope="session")
def _pg_cluster_sweep() -> Iterator[None]:
    sweep_clusters()
    try:
        yield
    finally:
        remove_template()


@pytest.fixture
def pg_clusters(_pg_cluster_sweep: None) -> Iterator[Callable[[], PgCluster]]:
    """Factory of throwaway PostgreSQL servers, each in its own temporary directory on its
    own port, destroyed after the test however it ends."""
    made: list[PgCluster] = []

    def make() -> PgCluster:
        cluster = PgCluster.create()
        made.append(cluster)
        return cluster

    try:
        yield make
    finally:
        for cluster in made:
            cluster.destroy()


@pytest.fixture
def pg_cluster(pg_clusters: Callable[[], PgCluster]) -> PgCluster:
    """One throwaway PostgreSQL server (a site whose server a test can stop and start):
    ``.url`` (its ``domicile`` database), ``.database_url(name)``, ``.stop()``,
    ``.start()``, ``.running``, ``.port``."""
    return pg_clusters()
