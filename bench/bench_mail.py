"""Benchmark of "Envoyer par mail", each method in a fresh process.

    python -m bench.bench_mail [--n 5000] [--delays 0,10] [--connections 4]
                               [--batch 100] [--sample 300] [--reps 1]
    python -m bench.bench_mail --rss [--rss-sizes 2000,20000]

The SMTP server is aiosmtpd on 127.0.0.1 in its own process; it waits
``delay`` ms before each reply (greeting, EHLO, MAIL, RCPT, DATA, end of data,
QUIT), like a relay a few hops away, and counts what it accepts.

(a) ours: the whole campaign, journal included — starting the run (one
    INSERT … SELECT of its items, audit), then ``MAIL_CONNECTIONS`` lanes on the
    thread runner, each claiming ``MAIL_BATCH_SIZE`` items, reading the accounts
    (codes) from the host, rendering, sending over one reused connection, writing
    the journal;
(b) baseline: the same rendered messages through plain Flask-Mail,
    ``mail.send(Message(...))``, a new connection per message, no journal;
(c) floor: the same rendered messages built with the standard ``email`` package
    and sent over one raw ``smtplib`` connection, no journal.

(b) and (c) are slow with a reply delay (one message at a time): there they run on
the first ``--sample`` accounts and their rate is compared. Every method reads the
accounts from the same SQLite database (the test host) and renders the same
templates. Prints messages/s, peak RSS (VmHWM of the process) and the ratios
(a)/(b) and (a)/(c). ``--rss`` runs (a) alone on two sizes and compares the peaks.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FIRST_NAMES = ["Zoé", "Łukasz", "Élodie", "Nguyễn Thị", "Şükrü", "Inès", "Jiří", "Noël", "Ștefan", "Anaïs", "Mathéo", "Chloé"]
LAST_NAMES = ["Abel", "Żółć", "Dvořák", "Étienne", "İnce", "Œillet", "Martin", "L’Haÿ", "Ţurcanu", "Dupont", "Moreau", "Nguyen"]
METHODS = {
    "a": "ours: campaign + journal",
    "b": "Flask-Mail, new connection per message",
    "c": "email + one smtplib connection (floor)",
}


def hwm_mib() -> float:
    """Peak resident memory (VmHWM) of this process, in MiB."""
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


# -- the SMTP server, in its own process ----------------------------------------------------


def _serve(port: int, delay_ms: float, counter: Any, ready: Any) -> None:
    import asyncio

    from aiosmtpd.smtp import SMTP

    delay = delay_ms / 1000.0

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            with counter.get_lock():
                counter.value += 1
            return "250 OK"

    class DelayedSMTP(SMTP):
        async def push(self, status: Any) -> None:  # type: ignore[override]
            if delay:
                await asyncio.sleep(delay)
            await super().push(status)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: DelayedSMTP(Handler(), hostname="bench", loop=loop), "127.0.0.1", port, reuse_address=True
        )
        ready.set()
        async with server:
            await server.serve_forever()

    asyncio.run(main())


class SmtpSink:
    def __init__(self, delay_ms: float) -> None:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        context = multiprocessing.get_context("spawn")
        self.counter = context.Value("i", 0)
        ready = context.Event()
        self.process = context.Process(target=_serve, args=(self.port, delay_ms, self.counter, ready), daemon=True)
        self.process.start()
        if not ready.wait(20):
            raise RuntimeError("the SMTP server did not start")

    def count(self) -> int:
        with self.counter.get_lock():
            return int(self.counter.value)

    def reset(self) -> None:
        with self.counter.get_lock():
            self.counter.value = 0

    def stop(self) -> None:
        self.process.terminate()
        self.process.join(10)


# -- the host ----------------------------------------------------------------------------------


def bench_app(database_url: str, instance: str, **config: Any) -> Any:
    """The test host on an existing database (no drop), really sending."""
    sys.path.insert(0, str(ROOT))
    from tests import hosts

    return hosts.make_app(
        database_url,
        instance,
        reset=False,
        **{
            "PUBLIPOSTAGE_ENT_NAME": "ENT Lumière",
            "PUBLIPOSTAGE_ENT_URL": "https://ent.lumiere.example.fr",
            "MAIL_DEFAULT_SENDER": "ENT Lumière <ne-pas-repondre@ent.lumiere.example.fr>",
            "MAIL_SERVER": "127.0.0.1",
            "MAIL_SUPPRESS_SEND": False,
            **config,
        },
    )


def populate(database_url: str, instance: str, n: int, seed: int = 7) -> None:
    """n accounts with an address: half pupils in classes of 25, half their parents,
    a third activated."""
    sys.path.insert(0, str(ROOT))
    import sqlalchemy as sa

    from tests.hosts import Division, Personne, db, filiation, inscription, make_app

    rng = random.Random(seed)
    app = make_app(database_url, instance)
    with app.app_context():
        pupils_n = n // 2
        classes = [Division(libelle=f"Classe {i:03d}", ecole="A") for i in range(max(1, pupils_n // 25))]
        db.session.add_all(classes)
        db.session.flush()
        class_ids = [c.ref for c in classes]
        created = datetime(2025, 9, 1, 8, 0)
        rows = []
        for i in range(n):
            activated = rng.random() < 0.33
            rows.append(
                {
                    "uid": i + 1,
                    "identifiant": f"{'eleve' if i < pupils_n else 'parent'}{i:06d}",
                    "prenom_usuel": rng.choice(FIRST_NAMES),
                    "nom_famille": rng.choice(LAST_NAMES),
                    "categorie": "ELEVE" if i < pupils_n else "PARENT",
                    "adresse_mel": f"compte{i:06d}@example.org",
                    "jeton": None if activated else f"{rng.randrange(16**8):08X}",
                    "compte_ouvert": activated,
                    "cree_le": created,
                    "referent": False,
                    "super_admin": False,
                    "ecole": "A",
                }
            )
        for start in range(0, n, 5000):
            db.session.execute(sa.insert(Personne), rows[start : start + 5000])
        db.session.execute(
            sa.insert(inscription),
            [{"personne_uid": i + 1, "division_ref": class_ids[i % len(class_ids)]} for i in range(pupils_n)],
        )
        links = [{"responsable_uid": i + 1, "enfant_uid": (i - pupils_n) % max(1, pupils_n) + 1} for i in range(pupils_n, n)]
        if links and pupils_n:
            db.session.execute(sa.insert(filiation), links)
        db.session.commit()
        db.engine.dispose()


def _selection(limit: int | None = None) -> Any:
    from flask_publipostage.access import Scope
    from flask_publipostage.selection import Selection

    return Selection.from_args({}, Scope(actor="bench", key="*", school_name="École Émile Zola"), extra_params=())


def _rendered(limit: int) -> Any:
    """(recipient, rendered message) of the first ``limit`` accounts, lazily."""
    from flask_publipostage.mail.message import CachedGettext, MailSettings, render
    from flask_publipostage.recipients import iter_recipients

    settings = MailSettings.load("École Émile Zola")
    translate = CachedGettext()
    for index, recipient in enumerate(iter_recipients(_selection(), batch_size=min(limit, 500))):
        if index >= limit:
            return
        yield recipient, render(recipient, settings, translate), settings


# -- one measurement, in a fresh process -------------------------------------------------------


def child_ours(database_url: str, instance: str, port: int, connections: int, batch: int, n: int) -> dict[str, Any]:
    from flask_babel import force_locale

    from flask_publipostage.mail import campaign as campaigns
    from flask_publipostage.runs import core

    app = bench_app(
        database_url,
        instance,
        MAIL_PORT=port,
        PUBLIPOSTAGE_JOB_BACKEND="thread",
        PUBLIPOSTAGE_MAIL_CONNECTIONS=connections,
        PUBLIPOSTAGE_MAIL_BATCH_SIZE=batch,
        PUBLIPOSTAGE_MAX_SELECTION=10_000_000,
    )
    with app.app_context(), force_locale("fr"):
        start = time.perf_counter()
        run_id = campaigns.start(_selection())[0].id
        session = app.extensions["publipostage"].db.session
        while core.is_active(run_id):
            time.sleep(0.02)
        seconds = time.perf_counter() - start
        app.extensions["publipostage"].runner.shutdown(wait=True)
        session.expire_all()
        status = campaigns.status(core.get(run_id))
        return {"seconds": seconds, "messages": status.sent, "failed": status.failed, "rss": hwm_mib()}


def child_flask_mail(database_url: str, instance: str, port: int, n: int) -> dict[str, Any]:
    from flask_babel import force_locale
    from flask_mail import Message

    from flask_publipostage.mail.message import ensure_mail

    app = bench_app(database_url, instance, MAIL_PORT=port)
    with app.app_context(), force_locale("fr"):
        mail = ensure_mail()
        start = time.perf_counter()
        sent = 0
        for recipient, rendered, _settings in _rendered(n):
            message = Message(
                subject=rendered.subject,
                recipients=[(recipient.full_name, recipient.email)],
                body=rendered.text,
                html=rendered.html,
            )
            mail.send(message)
            sent += 1
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "messages": sent, "failed": 0, "rss": hwm_mib()}


def child_floor(database_url: str, instance: str, port: int, n: int) -> dict[str, Any]:
    import smtplib
    from email import policy
    from email.header import Header
    from email.mime.multipart import MIMEMultipart
    from email.mime.text import MIMEText
    from email.utils import formataddr, formatdate, make_msgid

    from flask_babel import force_locale

    app = bench_app(database_url, instance, MAIL_PORT=port)
    with app.app_context(), force_locale("fr"):
        wire = policy.compat32.clone(linesep="\r\n")  # smtplib sends bytes as they are
        start = time.perf_counter()
        sent = 0
        smtp = smtplib.SMTP("127.0.0.1", port)
        for recipient, rendered, settings in _rendered(n):
            message = MIMEMultipart("alternative")
            message.attach(MIMEText(rendered.text, "plain", "utf-8"))
            message.attach(MIMEText(rendered.html, "html", "utf-8"))
            message["Subject"] = Header(rendered.subject, "utf-8")
            message["From"] = formataddr(settings.sender, "utf-8")
            message["To"] = formataddr((recipient.full_name, recipient.email), "utf-8")
            message["Date"] = formatdate(localtime=True)
            message["Message-ID"] = make_msgid(domain=settings.domain)
            smtp.sendmail(settings.sender[1], [recipient.email], message.as_bytes(policy=wire))
            sent += 1
        smtp.quit()
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "messages": sent, "failed": 0, "rss": hwm_mib()}


def run_child(args: list[str]) -> dict[str, Any]:
    output = subprocess.run(
        [sys.executable, "-m", "bench.bench_mail", *args], cwd=str(ROOT), check=True, capture_output=True, text=True
    )
    return dict(json.loads(output.stdout.strip().splitlines()[-1]))


# -- driver ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=5000, help="accounts (messages) of (a)")
    parser.add_argument("--delays", default="0,10", help="SMTP reply delays in ms, comma-separated")
    parser.add_argument("--connections", type=int, default=4, help="MAIL_CONNECTIONS of (a)")
    parser.add_argument("--batch", type=int, default=100, help="MAIL_BATCH_SIZE of (a)")
    parser.add_argument("--sample", type=int, default=300, help="messages of (b) and (c) when the delay is not 0")
    parser.add_argument("--reps", type=int, default=1, help="repetitions (methods interleaved; medians)")
    parser.add_argument("--rss", action="store_true", help="peak RSS of (a) for two sizes")
    parser.add_argument("--rss-sizes", default="2000,20000")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--instance", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        if args.child == "populate":
            populate(args.db, args.instance, args.n)
            print(json.dumps({"ok": True}))
        elif args.child == "a":
            print(json.dumps(child_ours(args.db, args.instance, args.port, args.connections, args.batch, args.n)))
        elif args.child == "b":
            print(json.dumps(child_flask_mail(args.db, args.instance, args.port, args.n)))
        elif args.child == "c":
            print(json.dumps(child_floor(args.db, args.instance, args.port, args.n)))
        return 0

    with tempfile.TemporaryDirectory(prefix="bench_mail_") as tmp:
        if args.rss:
            return rss_mode(args, Path(tmp))
        return throughput_mode(args, Path(tmp))


def _prepare(tmp: Path, n: int) -> tuple[str, str]:
    database = f"sqlite:///{tmp / f'host_{n}.sqlite3'}"
    instance = str(tmp / "instance")
    run_child(["--child", "populate", "--db", database, "--instance", instance, "--n", str(n)])
    return database, instance


def _copy_db(database: str, tmp: Path, name: str) -> str:
    """A fresh copy of the populated database (each run of (a) writes its journal)."""
    import shutil

    source = Path(database.removeprefix("sqlite:///"))
    target = tmp / name
    shutil.copyfile(source, target)
    return f"sqlite:///{target}"


def throughput_mode(args: argparse.Namespace, tmp: Path) -> int:
    print(f"Populating {args.n} accounts…", flush=True)
    database, instance = _prepare(tmp, args.n)
    delays = [float(d) for d in args.delays.split(",") if d.strip()]
    # (delay, method) -> one result per repetition; methods interleaved in each one.
    results: dict[tuple[float, str], list[dict[str, Any]]] = {}
    for delay in delays:
        sink = SmtpSink(delay)
        try:
            for rep in range(args.reps):
                for method in ("a", "b", "c"):
                    n = args.n if (method == "a" or delay == 0) else min(args.n, args.sample)
                    sink.reset()
                    db = _copy_db(database, tmp, f"run_{method}.sqlite3") if method == "a" else database
                    child_args = ["--child", method, "--db", db, "--instance", instance, "--port", str(sink.port),
                                  "--n", str(n), "--connections", str(args.connections), "--batch", str(args.batch)]
                    print(f"delay {delay:g} ms, rep {rep + 1}/{args.reps}, ({method}) {METHODS[method]}, {n} messages…", flush=True)
                    result = run_child(child_args)
                    received = sink.count()
                    assert received == result["messages"] == n, (received, n, result)
                    result["rate"] = result["messages"] / result["seconds"]
                    results.setdefault((delay, method), []).append(result)
        finally:
            sink.stop()

    print()
    print(f"{args.connections} connections, batches of {args.batch}; medians of {args.reps} run(s); "
          f"(b) and (c) on {min(args.n, args.sample)} messages when the delay is not 0.")
    print()
    print("| reply delay | method | messages | s | messages/s | peak RSS MiB |")
    print("|---|---|---|---|---|---|")
    for (delay, method), runs in results.items():
        print(
            f"| {delay:g} ms | ({method}) {METHODS[method]} | {runs[0]['messages']} "
            f"| {statistics.median(r['seconds'] for r in runs):.2f} | {statistics.median(r['rate'] for r in runs):.0f} "
            f"| {max(r['rss'] for r in runs):.0f} |"
        )
    print()
    ratios: dict[tuple[float, str], float] = {}
    for delay in delays:
        for other in "bc":
            per_rep = [a["rate"] / o["rate"] for a, o in zip(results[(delay, "a")], results[(delay, other)])]
            ratios[(delay, other)] = statistics.median(per_rep)
        print(f"reply delay {delay:g} ms: (a)/(b) = {ratios[(delay, 'b')]:.2f}×, (a)/(c) = {ratios[(delay, 'c')]:.2f}×")
    if 10.0 in delays:
        ratio = ratios[(10.0, "b")]
        print(f"target at 10 ms, (a) ≥ 5× (b): {'met' if ratio >= 5 else 'MISSED'} ({ratio:.2f}×)")
    if 0.0 in delays:
        ratio = ratios[(0.0, "c")]
        print(f"target at 0 ms, (a) ≥ 0.67× (c): {'met' if ratio >= 0.67 else 'MISSED'} ({ratio:.2f}×)")
    return 0


def rss_mode(args: argparse.Namespace, tmp: Path) -> int:
    sizes = [int(s) for s in args.rss_sizes.split(",")]
    sink = SmtpSink(0)
    peaks = {}
    try:
        for size in sizes:
            print(f"Populating {size} accounts…", flush=True)
            database, instance = _prepare(tmp, size)
            sink.reset()
            result = run_child(["--child", "a", "--db", database, "--instance", instance, "--port", str(sink.port),
                                "--n", str(size), "--connections", str(args.connections), "--batch", str(args.batch)])
            assert sink.count() == result["messages"] == size, (sink.count(), result)
            peaks[size] = result["rss"]
            print(f"{size} recipients: {result['messages'] / result['seconds']:.0f} messages/s, peak RSS {result['rss']:.1f} MiB", flush=True)
    finally:
        sink.stop()
    small, large = sizes[0], sizes[-1]
    ratio = peaks[large] / peaks[small]
    print(f"peak RSS {large} / {small}: {ratio:.2f} (target ≤ 1.2: {'met' if ratio <= 1.2 else 'MISSED'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
