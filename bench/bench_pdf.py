"""Benchmark of "Générer en PDF" on the same accounts, each method in a fresh process.

    python -m bench.bench_pdf [--n 2000] [--reps 3] [--methods a,b,c,d,e,f,g]

(a) our 1 per page: the background run (frozen accounts, chunks rendered by
    PDF_WORKERS processes, streamed merge), from its start to the finished file;
(b) our 8 per page, the same way;
(c) baseline: one single ``pisa.CreatePDF`` call on the whole HTML of (a);
(d) floor: a minimal reportlab canvas drawing the same fields, one page each;
(e) (a) delivered as one PDF per class in a ZIP (chunks cut at each class);
(f) (a) on the Celery backend: two worker processes on Redis (one task at a time
    each, as (a) renders in two processes) plan the run, render one chunk per task
    and merge; only when ``PUBLIPOSTAGE_TEST_REDIS_URL`` is set. The workers are
    started (and ready) before the clock starts, as a host's workers are;
(g) baseline of (b): one single ``pisa.CreatePDF`` call on the whole HTML of (b).

Prints wall time, pages/s, peak RSS (VmHWM of the process, and of the largest
worker for a and b), time to first progress, and the ratios (a)/(c), (a)/(d),
(b)/(g) taken per repetition, then the median, with their targets: (a)/(c) and
(b)/(g) ≤ 0.35 (a third of one xhtml2pdf call), (a)/(d) ≤ 6 (near the canvas
floor), the first progress of (a) ≤ 1 s, and (f)/(a) ≤ 1.25: the
Celery backend costs at most a quarter more than the thread backend on the same
two cores (each chunk task plans the run again and reads its own accounts). The accounts (a school-like mix: pupils in
classes, parents of one to three children, teachers, staff, a third activated)
are generated once into a temporary SQLite database through the test host.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
METHODS = {
    "a": "ours, 1 per page",
    "b": "ours, 8 per page",
    "c": "one pisa.CreatePDF (HTML of a)",
    "d": "reportlab canvas floor",
    "e": "ours, 1 per page, a PDF per class (ZIP)",
    "f": "ours, 1 per page, 2 Celery workers",
    "g": "one pisa.CreatePDF (HTML of b)",
}
#: Targets of the ratios (median of the repetitions' ratios, each taken in one run).
TARGETS = {("a", "c"): 0.35, ("b", "g"): 0.35, ("a", "d"): 6.0, ("f", "a"): 1.25}
#: The first progress of (a), in seconds.
FIRST_TARGET = 1.0
REDIS_URL = os.environ.get("PUBLIPOSTAGE_TEST_REDIS_URL")
FIRST_NAMES = ["Zoé", "Łukasz", "Élodie", "Nguyễn Thị", "Şükrü", "Inès", "Jiří", "Noël", "Ștefan", "Anaïs", "Mathéo", "Chloé"]
LAST_NAMES = ["Abel", "Żółć", "Dvořák", "Étienne", "İnce", "Œillet", "Martin", "L’Haÿ", "Ţurcanu", "Dupont", "Moreau", "Nguyen"]


# -- helpers ----------------------------------------------------------------------------


def hwm_mib(pid: int | str = "self") -> float:
    """Peak resident memory (VmHWM) of a process, in MiB; 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def children_pids() -> list[int]:
    pids: list[int] = []
    for task in Path("/proc/self/task").iterdir():
        try:
            pids += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return pids


def bench_app(database_url: str, instance: str, **config: Any) -> Any:
    """The test host on an existing database (no drop), thread runner."""
    sys.path.insert(0, str(ROOT))
    from tests import hosts

    return hosts.make_app(
        database_url,
        instance,
        reset=False,
        **{
            "PUBLIPOSTAGE_JOB_BACKEND": "thread",
            "PUBLIPOSTAGE_ENT_NAME": "ENT Lumière",
            "PUBLIPOSTAGE_ENT_URL": "https://ent.lumiere.example.fr",
            "PUBLIPOSTAGE_PDF_SYNC_LIMIT": 0,
            **config,
        },
    )


def populate(database_url: str, instance: str, n: int, seed: int = 7) -> None:
    """About n accounts: 45 % pupils in classes of 25, 45 % parents, the rest staff."""
    sys.path.insert(0, str(ROOT))
    from tests.hosts import Division, add_person, db, make_app

    rng = random.Random(seed)
    app = make_app(database_url, instance)
    with app.app_context():
        pupils_n = int(n * 0.45)
        parents_n = int(n * 0.45)
        staff_n = n - pupils_n - parents_n
        classes = [Division(libelle=f"{level} {letter}", ecole="A") for level in ("CP", "CE1", "CE2", "CM1", "CM2", "6e", "5e", "4e", "3e") for letter in "ABCDEFGH"]
        classes = classes[: max(1, pupils_n // 25)]
        db.session.add_all(classes)
        pupils = []
        for i in range(pupils_n):
            pupils.append(
                add_person(
                    f"eleve{i:05d}", rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES), "ELEVE",
                    divisions=[classes[i % len(classes)]], activated=rng.random() < 0.33,
                )
            )
        for i in range(parents_n):
            kids = rng.sample(pupils, rng.choice((1, 1, 2, 2, 3)))
            add_person(
                f"parent{i:05d}", rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES), "PARENT",
                enfants=kids, activated=rng.random() < 0.33, rue="3 rue des Lilas", ville="61000 Alençon",
            )
        for i in range(staff_n):
            add_person(
                f"prof{i:05d}", rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES), "PROF",
                divisions=rng.sample(classes, min(len(classes), 2)), activated=rng.random() < 0.5,
            )
        db.session.commit()
        db.engine.dispose()


# -- one measurement, in a fresh process --------------------------------------------------


def _scope() -> Any:
    from flask_publipostage.access import Scope

    return Scope(actor="bench", key="*", school_name="École Émile Zola")


def child_job(database_url: str, instance: str, template: str, zip_file: bool = False, celery: bool = False) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        config: dict[str, Any] = {}
        if celery:
            config = celery_backend(stack, database_url, instance)
        return timed_job(database_url, instance, template, zip_file, config)


def celery_backend(stack: contextlib.ExitStack, database_url: str, instance: str) -> dict[str, Any]:
    """Two Celery worker processes on a queue of their own (the tests' launcher),
    sharing the storage folder with this process; the settings of its app."""
    sys.path.insert(0, str(ROOT))
    from tests.celery_workers import celery_workers, delete_queue, make_celery, new_queue

    folder = Path(instance) / "celery"
    folder.mkdir(parents=True, exist_ok=True)
    queue = new_queue()
    stack.callback(delete_queue, queue)
    shared = {"PUBLIPOSTAGE_ENT_NAME": "ENT Lumière", "PUBLIPOSTAGE_ENT_URL": "https://ent.lumiere.example.fr",
              "PUBLIPOSTAGE_PDF_SYNC_LIMIT": 0, "PUBLIPOSTAGE_STORAGE_DIR": str(folder / "storage")}
    stack.enter_context(celery_workers(database_url, folder, queue, shared, concurrency=1))
    return {**shared, "PUBLIPOSTAGE_JOB_BACKEND": "celery", "PUBLIPOSTAGE_CELERY_APP": make_celery(queue)}


def timed_job(database_url: str, instance: str, template: str, zip_file: bool, config: dict[str, Any]) -> dict[str, Any]:
    import sqlalchemy as sa

    from flask_publipostage.pdf import pipeline, render
    from flask_publipostage.runs import core
    from flask_publipostage.runs.models import RunItem
    from flask_publipostage.selection import Selection

    app = bench_app(database_url, instance, **config)
    with app.app_context():
        selection = Selection.from_args({"sort": "class"}, _scope(), extra_params=())
        worker_peak = 0.0
        stop = threading.Event()

        def watch_workers() -> None:
            nonlocal worker_peak
            while not stop.is_set():
                for pid in children_pids():
                    worker_peak = max(worker_peak, hwm_mib(pid))
                time.sleep(0.05)

        watcher = threading.Thread(target=watch_workers, daemon=True)
        watcher.start()
        started = time.perf_counter()
        run_id = pipeline.start(selection, render.Options(template=template, zip=zip_file))[0].id
        first = None
        # Two cheap queries a poll (the page's status costs more, once a second).
        some_done = sa.select(RunItem.id).where(RunItem.run_id == run_id, RunItem.state != "pending").limit(1)
        while core.is_active(run_id):
            if first is None:
                with core.engine().connect() as conn:
                    if conn.execute(some_done).first() is not None:
                        first = time.perf_counter() - started
            time.sleep(0.02)
        wall = time.perf_counter() - started
        app.extensions["publipostage"].runner.shutdown(wait=True)
        stop.set()
        watcher.join()
        run = core.get(run_id)
        if run.state != "done":
            raise SystemExit(f"run ended {run.state}: {run.last_error}")
        pages = run.pages
        accounts = core.count_accounts([run_id])[run_id]
        size = os.path.getsize(run.file_path)
    return {
        "wall": wall,
        "pages": pages,
        "accounts": accounts,
        "rss": hwm_mib(),
        "worker_rss": worker_peak,
        "first": first,
        "bytes": size,
    }


def child_single(database_url: str, instance: str, template: str = "letter") -> dict[str, Any]:
    from flask_babel import force_locale
    from xhtml2pdf import pisa

    from flask_publipostage.pdf import fonts, pipeline, render
    from flask_publipostage.runs import core
    from flask_publipostage.selection import Selection

    # The same HTML as (a), or (b), in one piece: the run is one chunk.
    app = bench_app(database_url, instance, PUBLIPOSTAGE_PDF_SYNC_LIMIT=10_000_000)
    with app.app_context(), force_locale("fr"):
        selection = Selection.from_args({"sort": "class"}, _scope(), extra_params=())
        built = time.perf_counter()
        options = render.Options(template=template)
        run = pipeline.start(selection, options, inline=True)[0]
        job = pipeline.Job(run, core.frozen_scope(run))
        html = job.html(0)
        settings = job.settings
        html_seconds = time.perf_counter() - built
        core.cancel(run, _scope())  # its HTML was all we wanted: no process may take it over
    Path(instance).mkdir(parents=True, exist_ok=True)
    target = Path(instance) / "single.pdf"
    started = time.perf_counter()
    with open(target, "wb") as out:
        status = pisa.CreatePDF(html, dest=out, resource_policy=fonts.resource_policy(settings.roots))
    wall = time.perf_counter() - started
    if status.err:
        raise SystemExit("pisa failed")
    from pypdf import PdfReader

    return {
        "wall": wall,
        "pages": len(PdfReader(str(target)).pages),
        "rss": hwm_mib(),
        "html_seconds": html_seconds,
        "bytes": target.stat().st_size,
        "first": wall,
    }


def child_canvas(database_url: str, instance: str) -> dict[str, Any]:
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.units import mm
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont
    from reportlab.pdfgen import canvas

    from flask_publipostage.pdf import fonts
    from flask_publipostage.recipients import iter_batches
    from flask_publipostage.selection import Selection

    app = bench_app(database_url, instance)
    for name, family, bold in (("S", "PPSans", False), ("SB", "PPSans", True), ("M", "PPMono", False), ("MB", "PPMono", True)):
        pdfmetrics.registerFont(TTFont(name, fonts.font_path(family, bold)))
    Path(instance).mkdir(parents=True, exist_ok=True)
    target = Path(instance) / "canvas.pdf"
    steps = [
        "1. Rendez-vous sur https://ent.lumiere.example.fr/auth/activation",
        "2. Saisissez votre identifiant et votre code d'activation.",
        "3. Choisissez votre mot de passe : au moins 8 caractères.",
        "4. Indiquez une adresse électronique personnelle.",
        "5. Lisez et acceptez la charte d'utilisation.",
    ]
    with app.app_context():
        selection = Selection.from_args({"sort": "class"}, _scope(), extra_params=())
        started = time.perf_counter()
        pdf = canvas.Canvas(str(target), pagesize=A4)
        pages = 0
        for batch in iter_batches(selection):
            for r in batch:
                y = 280 * mm
                pdf.setFont("SB", 13)
                pdf.drawString(17 * mm, y, "ENT Lumière")
                pdf.setFont("S", 9)
                pdf.drawRightString(193 * mm, y, r.group)
                pdf.setFont("SB", 19)
                pdf.drawString(17 * mm, y - 12 * mm, "Ma première connexion" if r.activation_code else "Informations sur mon compte")
                pdf.setFont("SB", 15)
                pdf.drawString(17 * mm, y - 24 * mm, r.full_name[:60])
                pdf.setFont("S", 11)
                detail = ", ".join(c.full_name for c in r.children) or ", ".join(r.classes)
                pdf.drawString(17 * mm, y - 31 * mm, detail[:90])
                pdf.rect(17 * mm, y - 70 * mm, 176 * mm, 32 * mm)
                pdf.setFont("MB", 15)
                pdf.drawString(21 * mm, y - 50 * mm, r.login)
                if r.activation_code:
                    pdf.drawString(21 * mm, y - 62 * mm, r.activation_code)
                pdf.setFont("S", 10.5)
                for index, step in enumerate(steps):
                    pdf.drawString(17 * mm, y - (82 + 7 * index) * mm, step)
                pdf.showPage()
                pages += 1
        pdf.save()
        wall = time.perf_counter() - started
    return {"wall": wall, "pages": pages, "rss": hwm_mib(), "bytes": target.stat().st_size, "first": wall}


def run_child(method: str, database_url: str, instance: str) -> dict[str, Any]:
    command = [sys.executable, "-m", "bench.bench_pdf", "--child", method, "--db", database_url, "--instance", instance]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"method {method} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- main -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="accounts (default 2000)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions; medians are printed (default 3)")
    parser.add_argument("--methods", default="a,b,c,d,e,f,g",
                        help="subset of a,b,c,d,e,f,g (default all; f only with PUBLIPOSTAGE_TEST_REDIS_URL)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--instance", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        import logging

        logging.disable(logging.WARNING)  # xhtml2pdf's CSS notices
        if args.child in ("a", "b", "e", "f"):
            result = child_job(args.db, args.instance, "cards" if args.child == "b" else "letter", zip_file=args.child == "e",
                               celery=args.child == "f")
        elif args.child in ("c", "g"):
            result = child_single(args.db, args.instance, "cards" if args.child == "g" else "letter")
        else:
            result = child_canvas(args.db, args.instance)
        print(json.dumps(result))
        return 0

    methods = [m for m in args.methods.split(",") if m in METHODS]
    if "f" in methods and not REDIS_URL:
        methods.remove("f")
        print("(f) 2 Celery workers: skipped, set PUBLIPOSTAGE_TEST_REDIS_URL (e.g. redis://127.0.0.1:6379/0)")
    with tempfile.TemporaryDirectory(prefix="bench_pdf_") as tmp:
        database_url = f"sqlite:///{tmp}/bench.sqlite3"
        print(f"Generating {args.n} accounts into {database_url} ...", flush=True)
        populate(database_url, f"{tmp}/populate", args.n)
        print(f"cpus: {os.cpu_count()}, load: {os.getloadavg()[0]:.2f}; {args.reps} repetition(s), methods interleaved", flush=True)
        results: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
        for rep in range(args.reps):
            for method in methods:
                instance = f"{tmp}/{method}{rep}"
                result = run_child(method, database_url, instance)
                results[method].append(result)
                print(
                    f"  rep {rep + 1} {method}: {result['wall']:.2f} s, {result['pages']} pages, "
                    f"RSS {result['rss']:.0f} MiB" + (f", worker {result['worker_rss']:.0f} MiB" if "worker_rss" in result else "")
                    + (f", first progress {result['first']:.2f} s" if method in "abef" and result.get("first") else ""),
                    flush=True,
                )
    print()
    print(f"{args.n} accounts, medians of {args.reps} run(s)")
    print()
    print("| method | wall s | pages | pages/s | peak RSS MiB (process / worker) | first progress s |")
    print("|---|---|---|---|---|---|")
    for method in methods:
        rows = results[method]
        wall = statistics.median(r["wall"] for r in rows)
        pages = rows[0]["pages"]
        worker = statistics.median(r.get("worker_rss", 0) for r in rows)
        first = statistics.median(r["first"] for r in rows if r.get("first") is not None) if method in "abef" else None
        memory = f"{statistics.median(r['rss'] for r in rows):.0f}" + (f" / {worker:.0f}" if method in "abef" else "")
        first_text = f"{first:.2f}" if first is not None else "–"
        print(f"| ({method}) {METHODS[method]} | {wall:.2f} | {pages} | {pages / wall:.0f} | {memory} | {first_text} |")
    print()
    for top, bottom in (("a", "c"), ("a", "d"), ("b", "g"), ("b", "d"), ("e", "a"), ("f", "a")):
        if top in results and bottom in results:
            ratios = [x["wall"] / y["wall"] for x, y in zip(results[top], results[bottom])]
            ratio = statistics.median(ratios)
            limit = TARGETS.get((top, bottom))
            target = f"; target ≤ {limit}: {'met' if ratio <= limit else 'MISSED'}" if limit is not None else ""
            print(f"({top})/({bottom}) = {ratio:.3f}  (per repetition: {', '.join(f'{r:.3f}' for r in ratios)}){target}")
    if "a" in results:
        firsts = [r["first"] for r in results["a"] if r.get("first") is not None]
        if firsts:
            first = statistics.median(firsts)
            print(f"(a) first progress {first:.2f} s; target ≤ {FIRST_TARGET}: {'met' if first <= FIRST_TARGET else 'MISSED'}")
    if "c" in results:
        print(f"(c) building its HTML (not timed above): {statistics.median(r['html_seconds'] for r in results['c']):.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
