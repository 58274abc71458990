"""Load benchmark of the demo console on its production server (``make demo``'s gunicorn).

    python -m bench.bench_load [--clients 20] [--seconds 60] [--single-seconds 15] [--workers N]

Seeds the demo into a temporary folder, starts ``serve`` (gunicorn, the outbox
process) on free ports, and has each client, a local admin of the école logged in
with a session of its own on a kept-alive connection, alternate the two requests an
admin repeats: the school-scope preview (``/preview``, the list the page refreshes
at each filter change) and the CSV export of the school (``/export.csv``: a run, an
audit row and an item per account written each time).

First one client alone for ``--single-seconds`` (the single-client rate), then
``--clients`` clients together for ``--seconds``. Prints, per phase and per request,
the requests/s, median and p95 latency and errors (any answer but 200, or a broken
connection), then the ratio of the loaded throughput to the single-client rate
times the number of cores: 1.0 is a server that keeps every core as busy as one
client keeps one; the target is ≥ 0.7, with no error.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.live_console import PUBLIPOSTAGE, ConsoleSession, production_console  # noqa: E402

TARGET = 0.7
#: name -> (label, path): what each client asks, in turn.
ALL_REQUESTS = {
    "preview": ("school-scope preview", f"{PUBLIPOSTAGE}/preview"),
    "csv": ("CSV export of the school", f"{PUBLIPOSTAGE}/export.csv"),
}
REQUESTS = tuple(ALL_REQUESTS.values())
ADMIN = "adml.ecole"


@dataclass
class Tally:
    """Latencies (s) of the answered requests, per label, and the errors."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: {label: [] for label, _path in REQUESTS})
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self) -> int:
        return sum(len(values) for values in self.latencies.values())


def phase(port: int, clients: int, seconds: float) -> tuple[Tally, float]:
    """``clients`` clients for ``seconds``, the clock started once all are logged
    in; the tally and the measured duration."""
    tally = Tally()
    until: list[float] = []
    # The clock starts when the last client is logged in (the barrier's action).
    start = threading.Barrier(clients + 1, action=lambda: until.append(time.perf_counter() + seconds))

    def run() -> None:
        session = ConsoleSession(port)
        session.login(ADMIN)
        start.wait()
        turn = 0
        while time.perf_counter() < until[0]:
            label, path = REQUESTS[turn % len(REQUESTS)]
            turn += 1
            began = time.perf_counter()
            try:
                answer = session.get(path)
                error = None if answer.status == 200 else f"{label}: HTTP {answer.status}"
            except OSError as exc:
                error = f"{label}: {exc!r}"
            elapsed = time.perf_counter() - began
            with tally.lock:
                if error:
                    tally.errors.append(error)
                else:
                    tally.latencies[label].append(elapsed)
        session.close()

    threads = [threading.Thread(target=run, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    began = until[0] - seconds
    for thread in threads:
        thread.join()
    return tally, time.perf_counter() - began


@contextlib.contextmanager
def database(postgresql: bool) -> Iterator[str | None]:
    """None (the demo's SQLite file), or a PostgreSQL schema made for this run."""
    if not postgresql:
        yield None
        return
    import sqlalchemy as sa

    base = os.environ.get("PUBLIPOSTAGE_TEST_DATABASE_URL")
    if not base:
        raise SystemExit("--postgresql: set PUBLIPOSTAGE_TEST_DATABASE_URL")
    schema = f"bench_load_{os.getpid()}"
    engine = sa.create_engine(base)
    with engine.begin() as connection:
        connection.execute(sa.text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as connection:
            connection.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        engine.dispose()


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) >= 2 else (values[0] if values else 0.0)


def rows(name: str, clients: int, tally: Tally, wall: float) -> list[str]:
    def row(label: str, values: list[float], errors: int) -> str:
        median = statistics.median(values) * 1000 if values else 0.0
        return (f"| {name} | {clients} | {label} | {len(values)} | {len(values) / wall:.1f} | {median:.0f} | "
                f"{p95(values) * 1000:.0f} | {errors} |")

    every = [v for values in tally.latencies.values() for v in values]
    lines = [row(label, values, sum(e.startswith(label) for e in tally.errors)) for label, values in tally.latencies.items()]
    lines.append(row("**all**", every, len(tally.errors)))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=20, help="concurrent clients (default 20)")
    parser.add_argument("--seconds", type=float, default=60, help="duration of the loaded phase (default 60)")
    parser.add_argument("--single-seconds", type=float, default=15, help="duration of the single-client phase (default 15)")
    parser.add_argument("--workers", type=int, help="gunicorn worker processes (default: serve's, 2 × cores + 1)")
    parser.add_argument("--requests", default="preview,csv", help="what the clients ask in turn (default preview,csv)")
    parser.add_argument("--postgresql", action="store_true",
                        help="the demo on PUBLIPOSTAGE_TEST_DATABASE_URL (a schema of its own) instead of its SQLite file")
    args = parser.parse_args(argv)
    global REQUESTS
    REQUESTS = tuple(ALL_REQUESTS[name] for name in args.requests.split(","))
    cores = os.cpu_count() or 1

    with tempfile.TemporaryDirectory(prefix="bench_load_") as tmp, database(args.postgresql) as url:
        print(f"Seeding the demo{' on PostgreSQL' if url else ''} and starting its production server ...", flush=True)
        with production_console(Path(tmp), workers=args.workers, database_url=url) as console:
            server = next((line.strip() for line in console.banner.splitlines() if "gunicorn" in line), "")
            print(f"cpus: {cores}, load: {os.getloadavg()[0]:.2f}; {server}", flush=True)
            phase(console.port, 1, min(3.0, args.single_seconds))  # warm-up: imports, caches, pools
            single, single_wall = phase(console.port, 1, args.single_seconds)
            print(f"  1 client: {single.count()} requests in {single_wall:.1f} s", flush=True)
            loaded, loaded_wall = phase(console.port, args.clients, args.seconds)
            print(f"  {args.clients} clients: {loaded.count()} requests in {loaded_wall:.1f} s", flush=True)

    print()
    print(f"{args.clients} clients for {args.seconds:.0f} s, after 1 client for {args.single_seconds:.0f} s; {cores} cores")
    print()
    print("| phase | clients | request | answered | req/s | median ms | p95 ms | errors |")
    print("|---|---|---|---|---|---|---|---|")
    for line in rows("single", 1, single, single_wall) + rows("loaded", args.clients, loaded, loaded_wall):
        print(line)
    print()
    single_rate = single.count() / single_wall
    loaded_rate = loaded.count() / loaded_wall
    ratio = loaded_rate / (single_rate * cores) if single_rate else 0.0
    errors = len(single.errors) + len(loaded.errors)
    met = ratio >= TARGET and errors == 0
    print(f"throughput / (single-client rate × {cores} cores) = {loaded_rate:.1f} / ({single_rate:.1f} × {cores}) = "
          f"{ratio:.2f}; target ≥ {TARGET} with no error: {'met' if met else 'MISSED'}")
    for error in sorted(set(single.errors + loaded.errors))[:10]:
        print(f"  error: {error}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
