"""PDF: real BE1D parents grouped under their children's classes (example
console), the Celery code path, the streaming merge, the resource policy, a
template overridden by the host, the logo."""

from __future__ import annotations

import io
import math
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask_babel import force_locale
from jinja2 import DictLoader
from pypdf import PdfReader

from flask_publipostage.access import Scope
from flask_publipostage.pdf import fonts, render, worker
from flask_publipostage.pdf.merge import DocumentInfo, StreamingPdfConcatenator, ZipOfPdfs
from flask_publipostage.recipients import iter_recipients
from flask_publipostage.runs.models import PRINTED, Run, RunItem
from flask_publipostage.selection import Selection

from .hosts import add_person, db
from .test_pdf_support import (
    URL,
    add_class_of,
    count_word,
    pages_text,
    pdf_of,
    post_pdf,
)

SAMPLES = Path(__file__).parents[2] / "shared/fixtures/entcore-samples"


# -- the example console with the real BE1D sample ------------------------------------


@pytest.fixture
def console(database_url: str, tmp_path: Path) -> Iterator[Any]:
    if not (SAMPLES / "be1d_emile_zola_responsables.csv").exists():
        pytest.skip(f"BE1D sample not found in {SAMPLES}")
    try:
        from examples.ent_console import create_app
        from examples.ent_console.models import db as console_db
        from examples.ent_console.seed import import_be1d
    except ImportError as exc:  # pragma: no cover - the console ships with the repository
        pytest.skip(f"example console not importable: {exc}")
    app = create_app(
        {
            "TESTING": True,
            "SQLALCHEMY_DATABASE_URI": database_url,
            "SECRET_KEY": "test",
            "WTF_CSRF_ENABLED": False,
            "PUBLIPOSTAGE_JOB_BACKEND": "eager",
        },
        instance_path=str(tmp_path / "console"),
    )
    with app.app_context():
        console_db.drop_all()
        console_db.create_all()
        etablissement = import_be1d(console_db.session, SAMPLES)
        console_db.session.commit()
        yield app, etablissement
        console_db.session.remove()
        console_db.drop_all()
        console_db.engine.dispose()


def test_be1d_parents_print_under_their_childrens_classes(console: Any) -> None:
    from examples.ent_console.models import Classe, Utilisateur

    app, etablissement = console
    scope = Scope(
        actor="adml",
        users=(Utilisateur.etablissement_id == etablissement.id) & Utilisateur.is_super_admin.is_(False),
        classes=Classe.etablissement_id == etablissement.id,
        key=f"etab:{etablissement.id}",
        school_name=etablissement.nom,
    )
    session = app.extensions["publipostage"].db.session
    chosen = session.execute(
        sa.select(Classe.id).where(Classe.etablissement_id == etablissement.id, Classe.nom.in_(["CP", "CE1", "CM2"]))
    ).scalars().all()
    assert len(chosen) == 3
    query = {"profile": ["Relative"], "class": [str(c) for c in chosen], "sort": "class"}
    selection = Selection.from_args(query, scope, extra_params=())
    parents = list(iter_recipients(selection))
    assert len(parents) > 50
    texts = pages_text(pdf_of(selection, render.Options(template=render.CARDS)))

    groups: dict[str, list[Any]] = {}
    for parent in parents:
        groups.setdefault(parent.group, []).append(parent)
    assert list(groups) == ["CP", "CE1", "CM2"]  # school order; each parent once
    assert len(texts) == sum(math.ceil(len(m) / 8) for m in groups.values())
    page = 0
    for name, members in groups.items():
        for k in range(math.ceil(len(members) / 8)):
            assert texts[page + k].startswith(name) or f"{name} ·" in texts[page + k]
        for index, parent in enumerate(members):
            classes = {c for child in parent.children for c in child.classes} & {"CP", "CE1", "CM2"}
            # Under the first of their children's chosen classes, in school order.
            assert name == min(classes, key=["CP", "CE1", "CM2"].index), (parent.login, classes)
            text = texts[page + index // 8]
            assert count_word(text, parent.login) == 1
            assert "Parent de" in text
        page += math.ceil(len(members) / 8)
    everything = "\n".join(texts)
    for parent in parents:
        assert count_word(everything, parent.login) == 1


@pytest.mark.parametrize("template", ["letter", "cards"])
def test_a_class_named_with_the_numbers_stand_in_keeps_its_name_and_numbers(
    app_ctx: Any, client: Any, template: str
) -> None:
    # Stamped sheets stand "¥" in for the number in the group's header: a class
    # whose name holds one is laid out whole.
    add_class_of("CM1 ¥ Lune", 3, prefix="yn")
    db.session.commit()
    response = post_pdf(client, "sort=class", template=template)
    assert response.status_code == 200
    texts = pages_text(response.data)
    numbers = ["1/3", "2/3", "3/3"] if template == "letter" else ["feuille 1/1"]
    assert len(texts) == len(numbers)
    for text, number in zip(texts, numbers):
        assert text.startswith("CM1 ¥ Lune ·") and number in text.splitlines()[0], text


# -- Celery: one task per chunk, the last one merges ----------------------------------------


def _eager_celery() -> Any:
    celery = pytest.importorskip("celery")
    app = celery.Celery("publipostage-test", broker="memory://", backend="cache+memory://")
    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = True
    return app


def _finished(app: Any, client: Any, response: Any) -> tuple[dict[str, Any], int]:
    """The status of the background PDF ``response`` started (done at once by
    eager Celery), and its run's id."""
    assert response.status_code == 303
    job_id = response.headers["Location"].rsplit("/", 1)[-1]
    status = client.get(f"{URL}/pdf/jobs/{job_id}/status", "adml_a").get_json()
    assert status["state"] == "done", status
    with app.app_context():
        run_id = db.session.execute(sa.select(Run.id).where(Run.token == job_id)).scalar_one()
        db.session.remove()
    return status, run_id


class TestCeleryPath:
    @pytest.fixture
    def app_config(self) -> dict[str, Any]:
        return {
            "PUBLIPOSTAGE_JOB_BACKEND": "celery",
            "PUBLIPOSTAGE_CELERY_APP": _eager_celery(),
            "PUBLIPOSTAGE_PDF_SYNC_LIMIT": 10,
            "PUBLIPOSTAGE_PDF_CHUNK_SIZE": 16,
        }

    def test_chunks_as_tasks_then_merge(self, app: Any, client: Any) -> None:
        with app.app_context():
            _, nord = add_class_of("CE2 Nord", 21, prefix="cn", activated_every=4)
            _, sud = add_class_of("CM1 Sud", 13, prefix="cs")
            elsewhere = add_person("autre.b", "Hors", "Périmètre", "ELEVE", school="B")
            add_person("parent.cs", "Mère", "Sud", "PARENT", enfants=[sud[3], nord[5], elsewhere])
            db.session.commit()
        status, run_id = _finished(app, client, post_pdf(client, "sort=class", signoff="y"))
        with app.app_context():
            chunks = db.session.execute(
                sa.select(RunItem.chunk, RunItem.state).where(RunItem.run_id == run_id)
            ).all()
            assert len({chunk for chunk, _state in chunks}) >= 3
            assert {item_state for _chunk, item_state in chunks} == {PRINTED}
        with client.get(status["download_url"], "adml_a") as download:
            data = download.get_data()
        texts = pages_text(data)
        # 35 letters (the parent under CE2, the first of her children's classes),
        # and the sign-off sheets (20 rows a page): 2 for CE2, 1 for CM1.
        assert len(texts) == 35 + 3 == status["pages_total"]
        for index, name in ((0, "CE2 Nord"), (1, "CE2 Nord"), (24, "CM1 Sud")):
            assert "Liste d'émargement" in texts[index] and name in texts[index]
        logins = [f"cn{i:04d}" for i in range(21)] + ["parent.cs"] + [f"cs{i:04d}" for i in range(13)]
        letters = texts[2:24] + texts[25:]
        parent = letters[21]
        assert "Parent de" in parent
        assert "Prénom0003 CSNom0003 (CM1 Sud)" in parent and "Prénom0005 CNNom0005 (CE2 Nord)" in parent
        assert "Périmètre" not in parent  # a child outside the admin's school stays unnamed
        for login, text in zip(logins, letters):
            assert count_word(text, login) == 1


    def test_chunks_finishing_together_ask_for_one_merge(self, app: Any, client: Any, monkeypatch: Any) -> None:
        # Two workers finishing the last chunks at the same moment each find every
        # chunk on disk: only one of them may hand the merge over.
        from flask_publipostage.pdf import pipeline
        from flask_publipostage.runs import backends

        merges: list[int] = []
        submit = backends.submit

        def recording(name: str, app: Any = None, **kwargs: Any) -> Any:
            if name == pipeline.FINISH_TASK:
                merges.append(kwargs["run_id"])
                return None
            return submit(name, app=app, **kwargs)

        monkeypatch.setattr(backends, "submit", recording)
        with app.app_context():
            add_class_of("CE2 Nord", 40, prefix="cn")
            db.session.commit()
        response = post_pdf(client, "sort=class")
        assert response.status_code == 303
        with app.app_context():
            run = db.session.execute(sa.select(Run).order_by(Run.id.desc())).scalars().first()
            assert run is not None and run.state == "running" and merges == [run.id]
            pipeline.chunk_task(run.id, 0)  # the other worker's chunk, done at the same moment
            pipeline.chunk_task(run.id, 1)
        assert merges == [run.id]

    # Letters: the first chunk's numbers have one digit, the next ones' two (a
    # header of its own); cards: one kind, five sheets of eight.
    @pytest.mark.parametrize("template, renders", [("letter", 2), ("cards", 1)])
    def test_chunk_tasks_lay_out_each_kind_once(
        self, app: Any, client: Any, monkeypatch: Any, template: str, renders: int
    ) -> None:
        # Each chunk task has a job of its own: the layouts one made are found in
        # the run's work folder by the others, not laid out again.
        from flask_publipostage.pdf import pipeline

        layouts: list[str] = []
        render_file = pipeline.worker.render_file

        def spying(html: Any, path: str, roots: Any, collect: bool = True) -> str:
            if Path(path).parent.name == "stamps":
                layouts.append(path)
            return render_file(html, path, roots, collect)

        monkeypatch.setattr(pipeline.worker, "render_file", spying)
        with app.app_context():
            add_class_of("CE2 Nord", 40, prefix="cn")
            db.session.commit()
        status, run_id = _finished(app, client, post_pdf(client, "sort=class", template=template))
        with app.app_context():
            chunks = {chunk for (chunk,) in db.session.execute(sa.select(RunItem.chunk).where(RunItem.run_id == run_id))}
        assert len(chunks) >= 3 and len(layouts) == renders, layouts
        with client.get(status["download_url"], "adml_a") as download:
            text = "\n".join(pages_text(download.get_data()))
        for i in range(40):
            assert count_word(text, f"cn{i:04d}") == 1

    def test_a_zip_from_chunk_tasks(self, app: Any, client: Any) -> None:
        with app.app_context():
            _, nord = add_class_of("CE2 Nord", 21, prefix="cn")
            _, sud = add_class_of("CM1 Sud", 13, prefix="cs")
            add_person("parent.cs", "Mère", "Sud", "PARENT", enfants=[sud[3], nord[5]])
            db.session.commit()
        response = post_pdf(client, "sort=class", every_class="y", zip="y")
        assert response.status_code == 303
        job_id = response.headers["Location"].rsplit("/", 1)[-1]
        status = client.get(f"{URL}/pdf/jobs/{job_id}/status", "adml_a").get_json()
        assert status["state"] == "done" and (status["sheets"], status["accounts"]) == (36, 35), status
        with client.get(status["download_url"], "adml_a") as download:
            archive = zipfile.ZipFile(io.BytesIO(download.get_data()))
        # CE2 in two chunks of 16, CM1 in one: each class's chunks make its file, the parent in both.
        assert archive.namelist() == ["CE2 Nord.pdf", "CM1 Sud.pdf"]
        for name, prefix, size in (("CE2 Nord.pdf", "cn", 21), ("CM1 Sud.pdf", "cs", 13)):
            texts = pages_text(archive.read(name))
            assert len(texts) == size + 1
            logins = [login for t in texts for login in re.findall(rf"(?<![\w.-])(?:{prefix}\d{{4}}|parent\.cs)(?![\w.-])", t)]
            assert sorted(set(logins)) == sorted([f"{prefix}{i:04d}" for i in range(size)] + ["parent.cs"])
            assert all(t.startswith(name.removesuffix(".pdf") + " · ") for t in texts)


# -- merge, policy, overrides ------------------------------------------------------------------


def test_zip_files_are_named_after_their_bundles(tmp_path: Path) -> None:
    chunk = tmp_path / "chunk.pdf"
    chunk.write_bytes(_small_pdf(["une page"]))
    target = tmp_path / "all.zip"
    archive = ZipOfPdfs(str(target), tmp_path)
    for label in ("CP de Mme Dumas", "CE1/CE2 : Bleus?", "CP de Mme Dumas", "..", "Classe\x00 « Été »"):
        archive.start_file(label)
        archive.append(str(chunk))
    archive.close()
    assert zipfile.ZipFile(target).namelist() == [
        "CP de Mme Dumas.pdf", "CE1-CE2 - Bleus-.pdf", "CP de Mme Dumas (2).pdf", "_.pdf", "Classe « Été ».pdf"
    ]
    assert archive.page_count == 5 and not list(tmp_path.glob("zip-*"))


def _small_pdf(words: list[str]) -> bytes:
    css = fonts.font_face_css() + " body { font-family: PPSans; }"
    body = "".join(
        f'<div style="page-break-before: {"auto" if i == 0 else "always"}">{w}</div>' for i, w in enumerate(words)
    )
    return worker.render_bytes(f"<html><head><style>{css}</style></head><body>{body}</body></html>", fonts.allowed_roots(None))


def test_streaming_merge_keeps_every_page(tmp_path: Path) -> None:
    parts = [_small_pdf(["Łukasz un", "Ștefan deux"]), _small_pdf(["Nguyễn trois"]), _small_pdf(["Œ quatre", "’ cinq", "İnce six"])]
    paths = []
    for index, data in enumerate(parts):
        path = tmp_path / f"{index}.pdf"
        path.write_bytes(data)
        paths.append(path)
    target = tmp_path / "all.pdf"
    merger = StreamingPdfConcatenator(str(target), info=DocumentInfo(title="École Émile Zola"))
    assert [merger.append(str(p)) for p in paths] == [2, 1, 3]
    merger.close()
    reader = PdfReader(io.BytesIO(target.read_bytes()))
    assert reader.metadata.title == "École Émile Zola"
    texts = [p.extract_text() for p in reader.pages]
    for text, word in zip(texts, ["Łukasz un", "Ștefan deux", "Nguyễn trois", "Œ quatre", "’ cinq", "İnce six"]):
        assert word in text


def test_resource_policy_reads_only_the_assets_and_the_logo(tmp_path: Path) -> None:
    from xhtml2pdf.config.resources import ResourceAccessError

    logo = tmp_path / "logo.png"
    logo.write_bytes(b"")
    policy = fonts.resource_policy(fonts.allowed_roots(str(logo)))
    policy.check_path(fonts.font_path("PPSans"))
    policy.check_path(str(logo))
    for forbidden in ("/etc/passwd", str(tmp_path / "other.png"), str(Path.cwd() / "setup.cfg")):
        with pytest.raises(ResourceAccessError):
            policy.check_path(forbidden)
    with pytest.raises(ResourceAccessError):
        policy.check_url("https://example.org/logo.png")
    # A document asking for another file gets nothing from it.
    html = '<html><body><p>avant</p><img src="/etc/passwd"><img src="file:///etc/hostname"><p>après</p></body></html>'
    text = "\n".join(pages_text(worker.render_bytes(html, fonts.allowed_roots(None))))
    assert "avant" in text and "root" not in text


class TestLogoAndOverride:
    @pytest.fixture
    def app_config(self, tmp_path: Path) -> dict[str, Any]:
        from PIL import Image

        logo = tmp_path / "logo.png"
        Image.new("RGB", (120, 40), (29, 79, 145)).save(logo)
        return {"PUBLIPOSTAGE_LOGO_PATH": str(logo), "PUBLIPOSTAGE_PDF_QR_CODE": False}

    def test_logo_is_printed(self, app_ctx: Any, client: Any) -> None:
        add_class_of("CP Logo", 2, prefix="lg")
        db.session.commit()
        data = post_pdf(client, "").data
        reader = PdfReader(io.BytesIO(data))
        images = [name for page in reader.pages for name in page.images]
        assert len(reader.pages) == 2 and len(images) == 2

    def test_the_logo_is_in_the_file_once(self, app_ctx: Any, client: Any) -> None:
        # Each chunk embeds it: the merge keeps one copy, as it does of the fonts.
        from .test_pdf_preflight import background_file

        app_ctx.config.update(PUBLIPOSTAGE_PDF_CHUNK_SIZE=4, PUBLIPOSTAGE_PDF_SYNC_LIMIT=0)
        add_class_of("CP Logo", 14, prefix="lg")
        db.session.commit()
        reader = PdfReader(io.BytesIO(background_file(client, "")))
        drawn = [image.indirect_reference.idnum for page in reader.pages for image in page.images]
        assert len(reader.pages) == len(drawn) == 14 and len(set(drawn)) == 1

    def test_host_overrides_a_template_by_path(self, app_ctx: Any, client: Any) -> None:
        add_class_of("CP Surcharge", 3, prefix="ov")
        db.session.commit()
        app_ctx.jinja_loader.loaders.insert(
            0, DictLoader({"publipostage/pdf/letter.html": "<p>Lettre maison {{ sheet.data.v.r.login }}</p>"})
        )
        texts = pages_text(post_pdf(client, "").data)
        assert [t.strip() for t in texts] == [f"Lettre maison ov{i:04d}" for i in range(3)]


def test_qr_code_with_login_when_configured(app_ctx: Any) -> None:
    app_ctx.config["PUBLIPOSTAGE_PDF_QR_PARAMS"] = "?login={login}"
    with force_locale("fr"):
        settings = render.Settings.from_config()
    add_class_of("CP QR", 1, prefix="qr")
    db.session.commit()
    (recipient,) = list(iter_recipients(Selection.from_args({}, Scope(actor="t"), extra_params=())))
    assert render.qr_target(recipient, settings) == settings.activation_url + "?login=qr0000"
    assert render.card_view(recipient, settings)["qr"] == render.qr_data_uri(settings.activation_url + "?login=qr0000")
