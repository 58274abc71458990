"""Who received their credentials, who activated, who needs a reminder.

Each account's history read back from the page (the "Distribution" column, its
history, the JSON), the ``distributed`` filters against hand-built histories
(days of Europe/Paris, both ends inclusive), the reminder preset, the page
"Suivi des activations" against a hand count (its links, its CSV, its
perimeter), the search, the one-account reprint, the stale-code flag, the
retention and the upgrade of older tables; never a code in any table.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import html
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote_plus

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_publipostage.audit import AuditEntry
from flask_publipostage.models import local, metadata, utcnow
from flask_publipostage.runs.models import Run, RunItem

from .hosts import Division, Ecole, Personne, add_person, db
from .runs import stop_active_runs
from .smtp import SmtpServer
from .test_pdf_support import pages_text, post_pdf
from .test_security_support import all_codes, build_security_school, campaign_id_of, count_rows, post_mail

BASE = "/imports-exports/publipostage"
PREVIEW = f"{BASE}/preview.json"
FOLLOW_UP = f"{BASE}/follow-up"


@pytest.fixture
def app_config(smtp: SmtpServer) -> dict[str, Any]:
    return {**smtp.config(), "PUBLIPOSTAGE_PDF_QR_CODE": False}


@pytest.fixture(autouse=True)
def stop_campaigns(app: Flask) -> Iterator[None]:
    yield
    with app.app_context():
        stop_active_runs()


@dataclass(frozen=True)
class Built:
    """Class ids of the hand-built school (its objects do not outlive a session)."""

    cp: int
    foreign: int


@pytest.fixture
def school(app_ctx: Flask) -> Built:
    built = build_security_school()
    return Built(built.cp.ref, built.other_school_class.ref)


def text_of(body: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", body)).split())


def accounts(client: Any, query: str = "", role: str = "adml_a") -> list[dict[str, Any]]:
    response = client.get(f"{PREVIEW}?{query}", role)
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    data = response.get_json()
    assert data["pages"] == 1
    return data["accounts"]  # type: ignore[no-any-return]


def logins(client: Any, query: str = "", role: str = "adml_a") -> list[str]:
    return sorted(a["login"] for a in accounts(client, query, role))


def today() -> str:
    return local(utcnow()).strftime("%d/%m")


def uid(login: str) -> int:
    return int(db.session.execute(sa.select(Personne.uid).where(Personne.identifiant == login)).scalar_one())


def record(login: str, at: datetime | None, *, kind: str = "letter", state: str = "printed",
           run_kind: str = "pdf", code: bool = False) -> None:
    """A finished run of one item for ``login``, distributed at ``at`` (UTC, naive)."""
    created = at or utcnow()
    run = Run(kind=run_kind, actor="adml_a", scope_key="ecole:A", selection="{}", state="done",
              created_at=created, finished_at=created)
    db.session.add(run)
    db.session.flush()
    digest = None
    if code:
        from flask_publipostage.history import code_digest

        digest = code_digest(str(uid(login)), db.session.get(Personne, uid(login)).jeton)
    db.session.add(RunItem(run_id=run.id, user_id=str(uid(login)), position=1, kind=kind, state=state, name=login,
                           done_at=created, distributed_at=at, code_hmac=digest))
    db.session.commit()


# -- 1. the history, read back -------------------------------------------------------------------


@pytest.mark.parametrize("smtp_options", [{"refuse": lambda a: a.startswith("sam.")}], indirect=True)
def test_history_after_a_pdf_a_campaign_and_a_csv_export(app: Flask, client: Any, school: Built) -> None:
    pdf = post_pdf(client, "profile=Teacher&sort=class")
    assert pdf.status_code == 200 and pdf.data.startswith(b"%PDF")
    campaign_id_of(post_mail(client, "adml_a", "profile=Relative&profile=Personnel"))
    assert client.get(f"{BASE}/export.csv?profile=Guest", "adml_a").data.count(b"\r\n") == 2
    with app.app_context():
        day = today()
    found = {a["login"]: a["distribution"] for a in accounts(client)}
    # Printed (sorted by class: in the bundle of its first class in school order), emailed, exported.
    assert found["anne.prof"]["summary"] == f"Imprimé le {day} · liasse CP de Mme Émery"
    assert found["jean.prof"]["summary"] == f"Imprimé le {day} · liasse CE2 de Mme Élise"
    assert found["marie.abel"]["summary"] == f"Courriel envoyé le {day}"
    assert found["ines.invite"]["summary"] == f"Exporté en CSV le {day}"
    # Failed and skipped emails are no distribution, but the history says them.
    assert found["sam.pers"]["summary"] == "Jamais"
    [failed] = found["sam.pers"]["history"]
    assert failed["label"] == f"Courriel en échec le {day}" and "550" in failed["reason"]
    assert found["paul.etienne"]["summary"] == "Jamais"
    assert [e["label"] for e in found["paul.etienne"]["history"]] == [f"Sans adresse électronique (campagne du {day})"]
    assert found["zoe.abel"] == {"summary": "Jamais", "stale": None, "history_total": 0, "history": []}
    assert {e["by"] for f in found.values() for e in f["history"]} == {"adml_a"}
    # The page says the same, with each history at hand.
    page = client.get(f"{BASE}/?profile=Teacher&profile=Personnel", "adml_a").get_data(as_text=True)
    rows = {m.group(1): text_of(m.group(2)) for m in re.finditer(r'<tr data-login="([^"]+)">(.*?)</tr>', page, re.S)}
    assert f"Imprimé le {day} · liasse CE2 de Mme Élise Historique (1)" in rows["jean.prof"]
    assert re.search(r"Lettre · imprimé, téléchargé · liasse CE2 de Mme Élise · fichier PDF \d+ · par adml_a", rows["jean.prof"])
    assert rows["sam.pers"].startswith("Durand Sam") and f"Jamais Courriel en échec le {day}" in rows["sam.pers"]
    with app.app_context():
        items = db.session.execute(sa.select(RunItem.kind, RunItem.state, RunItem.distributed_at.is_not(None))).all()
        assert sorted({tuple(i) for i in items}) == [
            ("email", "failed", False), ("email", "sent", True), ("email", "skipped", False),
            ("export", "exported", True), ("letter", "printed", True),
        ]


def test_a_pdf_never_downloaded_is_no_distribution(app: Flask, client: Any, school: Built) -> None:
    app.config["PUBLIPOSTAGE_PDF_SYNC_LIMIT"] = 1  # prepared in the background, downloaded later
    job = post_pdf(client, "profile=Teacher")
    assert job.status_code == 303
    with app.app_context():
        day = today()
    assert logins(client, "distributed=yes") == []
    assert {a["distribution"]["history"][0]["label"] for a in accounts(client, "profile=Teacher")} == {
        f"PDF du {day} non téléchargé"}
    assert accounts(client, "profile=Teacher")[0]["distribution"]["summary"] == "Jamais"
    download = client.get(job.headers["Location"] + "/download", "adml_a")
    assert download.status_code == 200 and download.data.startswith(b"%PDF")
    assert logins(client, "distributed=yes") == ["anne.prof", "jean.prof"]


def test_a_long_history_costs_the_page_no_more_than_a_short_one(app: Flask, client: Any, school: Built) -> None:
    """An account printed again and again: the row says its latest distribution,
    the failures since and the length of its history, and lists its newest items
    only; the page reads as many rows whatever the history's length."""
    from flask_publipostage.history import SHOWN

    start = datetime(2025, 9, 1, 8, 0)

    def histories(days: range) -> None:
        for n in days:  # printed and downloaded on each day after ``start``
            record("zoe.abel", start + timedelta(days=n))
            record("marie.abel", start + timedelta(days=n))
        # Then emails that failed, more than the row lists: its latest distribution is older.
        for _ in range(SHOWN + 2):
            record("marie.abel", None, kind="email", state="failed", run_kind="mail")

    def read() -> tuple[dict[str, dict[str, Any]], str, list[int]]:
        with count_rows() as counts:
            found = {a["login"]: a["distribution"] for a in accounts(client, "profile=Student&profile=Relative")}
        page = client.get(f"{BASE}/?profile=Student&profile=Relative", "adml_a").get_data(as_text=True)
        return found, page, counts

    with app.app_context():
        histories(range(SHOWN + 1))
    _found, _page, short = read()
    with app.app_context():
        histories(range(SHOWN + 1, 140))
        last_day = local(start + timedelta(days=139)).strftime("%d/%m")
    found, page, long = read()

    zoe, marie = found["zoe.abel"], found["marie.abel"]
    assert zoe["summary"] == f"Imprimé le {last_day}" and zoe["history_total"] == 140
    assert [e["at"][:10] for e in zoe["history"]] == [
        (start + timedelta(days=n)).date().isoformat() for n in range(139, 139 - SHOWN, -1)]
    assert marie["summary"] == f"Imprimé le {last_day}" and marie["history_total"] == 140 + 2 * (SHOWN + 2)
    assert [e["state"] for e in marie["history"]] == ["failed"] * SHOWN
    rows = {m.group(1): text_of(m.group(2)) for m in re.finditer(r'<tr data-login="([^"]+)">(.*?)</tr>', page, re.S)}
    assert f"Imprimé le {last_day} Historique (140)" in rows["zoe.abel"]
    assert rows["zoe.abel"].count("Lettre · imprimé, téléchargé") == SHOWN
    assert f"et {140 - SHOWN} éléments plus anciens" in rows["zoe.abel"]
    assert rows["marie.abel"].count(f"Courriel en échec le {today()}") == SHOWN
    # As many rows read for 140 items (and 164) as for 11 (and 35): the histories' query
    # brings SHOWN items of Zoé's, and SHOWN of Marie's and her latest distribution.
    assert long == short and 2 * SHOWN + 1 in short, (short, long)


# -- 2. the filters ------------------------------------------------------------------------------

#: 1 September 2025 begins at 2025-08-31 22:00 UTC in Paris (summer time).
PARIS_MIDNIGHT = datetime(2025, 8, 31, 22, 0)


@pytest.fixture
def histories(app_ctx: Flask, school: Built) -> None:
    record("zoe.abel", PARIS_MIDNIGHT - timedelta(seconds=1))  # 31/08 23:59:59 in Paris
    record("marie.abel", PARIS_MIDNIGHT, kind="email", state="sent", run_kind="mail")  # 01/09 00:00
    record("lucas.etienne", PARIS_MIDNIGHT + timedelta(days=1, seconds=-1), kind="export", state="exported",
           run_kind="csv")  # 01/09 23:59:59
    record("anne.prof", datetime(2025, 8, 20, 10, 0))
    record("anne.prof", datetime(2025, 9, 10, 10, 0), kind="card")  # printed again later: her latest
    record("paul.etienne", None, kind="email", state="failed", run_kind="mail")  # never reached
    record("jean.prof", None)  # a PDF never downloaded
    db.session.remove()


@pytest.mark.parametrize(
    "query, expected",
    [
        ("distributed=yes", ["anne.prof", "lucas.etienne", "marie.abel", "zoe.abel"]),
        ("distributed=never", ["elodie.zidane", "ines.invite", "jean.prof", "nina.sansclasse", "paul.etienne",
                               "sam.pers"]),
        ("distributed_since=2025-09-01", ["anne.prof", "lucas.etienne", "marie.abel"]),
        ("distributed_since=2025-09-02", ["anne.prof"]),
        ("distributed_before=2025-09-01", ["lucas.etienne", "marie.abel", "zoe.abel"]),
        ("distributed_before=2025-08-31", ["zoe.abel"]),
        ("distributed_since=2025-09-01&distributed_before=2025-09-01", ["lucas.etienne", "marie.abel"]),
        ("distributed_before=2025-09-30", ["anne.prof", "lucas.etienne", "marie.abel", "zoe.abel"]),
        # With every other kind of filter.
        ("distributed=yes&activation=inactive", ["lucas.etienne", "marie.abel", "zoe.abel"]),
        ("distributed=never&profile=Teacher&email=with", ["jean.prof"]),
        ("distributed=yes&class={cp}&sort=class&then=profile", ["anne.prof", "marie.abel", "zoe.abel"]),
        ("distributed_before=2025-09-01&q=abel", ["marie.abel", "zoe.abel"]),
        ("distributed=never&created_before=2025-09-01&local_admin=exclude&emailed=never",
         ["elodie.zidane", "jean.prof", "nina.sansclasse", "paul.etienne", "sam.pers"]),
    ],
)
def test_distributed_filters_against_hand_counts(client: Any, school: Built, histories: None, query: str,
                                                  expected: list[str]) -> None:
    assert logins(client, query.format(cp=school.cp)) == expected


def test_the_same_selection_everywhere(app: Flask, client: Any, school: Built, histories: None) -> None:
    # A selection every output keeps as it is (each of them distributes again).
    query = "distributed=yes&activation=inactive&sort=class"
    expected = ["lucas.etienne", "marie.abel", "zoe.abel"]
    assert logins(client, query) == expected
    exported = client.get(f"{BASE}/export.csv?{query}", "adml_a").data.decode("utf-8-sig")
    assert sorted(row[3] for row in list(csv.reader(io.StringIO(exported), delimiter=";"))[1:]) == expected
    printed = " ".join(pages_text(post_pdf(client, query).data))
    assert all(login in printed for login in expected) and "anne.prof" not in printed
    # The command line reads the same table of filters.
    result = app.test_cli_runner().invoke(
        args=["publipostage", "send", "--distributed", "yes", "--activation", "inactive", "--dry-run"])
    assert result.exit_code == 0 and "3 comptes sélectionnés" in result.output, result.output
    # An export of those never distributed holds them, and they are distributed once it is downloaded.
    exported = client.get(f"{BASE}/export.csv?distributed=never&profile=Teacher", "adml_a", buffered=False)
    assert logins(client, "distributed=never&profile=Teacher") == ["jean.prof"]
    assert b"jean.prof" in exported.get_data()
    assert logins(client, "distributed=never&profile=Teacher") == []


def test_an_export_broken_off_distributes_nothing(app: Flask, client: Any, school: Built) -> None:
    # The admin's browser stopped after the header: nobody knows what was received.
    never = logins(client, "distributed=never&profile=Teacher")
    assert never
    exported = client.get(f"{BASE}/export.csv?distributed=never&profile=Teacher", "adml_a", buffered=False)
    chunks = iter(exported.response)
    assert next(chunks).startswith("\ufeff".encode())
    exported.close()
    assert logins(client, "distributed=never&profile=Teacher") == never
    with app.app_context():
        run = db.session.execute(sa.select(Run).where(Run.kind == "csv")).scalar_one()
        assert db.session.execute(sa.select(sa.func.count()).select_from(RunItem).where(RunItem.run_id == run.id)).scalar() == 0
        assert db.session.execute(sa.select(AuditEntry.count).where(AuditEntry.run_id == run.id)).scalar() == len(never)


def test_bad_distribution_filters_are_refused_in_french(client: Any, school: Built) -> None:
    for query, status, words in [
        ("distributed=maybe", 400, "Distribution"),
        ("distributed_before=2025-13-01", 400, "Dernière distribution au plus tard le"),
        ("distributed_since=2025-09-02&distributed_before=2025-09-01", 400, "ne peut pas être postérieure"),
        ("q=a+b+c+d+e+f", 400, "5 mots au plus"),
        ("account=abc", 400, "Compte invalide"),
    ]:
        response = client.get(f"{PREVIEW}?{query}", "adml_a")
        assert response.status_code == status and words in response.get_json()["error"], (query, response.get_json())


# -- 3. the reminder -------------------------------------------------------------------------------


def test_the_reminder_preset(app: Flask, client: Any, school: Built) -> None:
    with app.app_context():
        now = utcnow()
        record("zoe.abel", now - timedelta(days=20))  # to remind
        record("marie.abel", now - timedelta(days=20))
        record("marie.abel", now - timedelta(days=2))  # reprinted since: not yet
        record("elodie.zidane", now - timedelta(days=20))  # activated meanwhile
        record("lucas.etienne", now - timedelta(days=13))  # too recent
        reminder_day = (local(now) - timedelta(days=14)).date()
        db.session.remove()
    page = client.get(f"{BASE}/", "adml_a").get_data(as_text=True)
    form = re.search(r'<form class="pp-reminder".*?</form>', page, re.S).group(0)
    assert "Relance : distribués il y a plus de 14 jours et toujours non activés" in text_of(form)
    fields = dict(re.findall(r'<input type="(?:hidden|date)"[^>]*?name="([^"]+)"[^>]*?value="([^"]*)"', form))
    # It sets every field it names; the day, two weeks ago, may be changed.
    assert fields == {"activation": "inactive", "sort": "class", "template": "letter",
                      "distributed_before": reminder_day.isoformat()}
    query = "&".join(f"{k}={v}" for k, v in fields.items())
    assert logins(client, query) == ["zoe.abel"]
    shown = client.get(f"{BASE}/?{query}", "adml_a").get_data(as_text=True)
    assert re.search(rf'name="distributed_before" min="1900-01-01" max="2999-12-31"\s+value="{reminder_day.isoformat()}"', shown)
    assert re.search(r'name="activation" value="inactive"\s+checked', shown)
    earlier = (reminder_day - timedelta(days=7)).isoformat()
    assert logins(client, query.replace(reminder_day.isoformat(), earlier)) == []


# -- 4. the follow-up page ---------------------------------------------------------------------------


def table(body: str) -> dict[str, list[str]]:
    """Row label -> its cells as text (accounts, activated, %, not activated,
    distributed, never, changed codes)."""
    found = {}
    for label, cells in re.findall(r'<tr [^>]*data-pp-row="([^"]+)"[^>]*>(.*?)</tr>', body, re.S):
        texts = [text_of(c) for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", cells, re.S)]
        found[html.unescape(label)] = texts[1:]
    return found


def links(body: str) -> list[tuple[str, str, int]]:
    return [(html.unescape(href), column, int(number))
            for href, column, number in re.findall(r'<a href="([^"]+)" data-pp-column="(\w+)">(\d+)</a>', body)]


def check_links(client: Any, body: str, role: str) -> int:
    """Every number's link lists exactly that many accounts."""
    found = links(body)
    for href, column, number in found:
        path, _mark, query = href.partition("?")
        assert path == f"{BASE}/", href
        response = client.get(f"{PREVIEW}?{query}", role)
        assert response.get_json()["counters"]["selected"] == number, (column, href)
    return len(found)


def test_the_follow_up_against_a_hand_count(app: Flask, client: Any, school: Built) -> None:
    cp = school.cp
    assert post_pdf(client, f"class={cp}").data.startswith(b"%PDF")  # Zoé, her mother, her teacher: downloaded
    response = client.get(FOLLOW_UP, "adml_a")
    assert response.status_code == 200
    body = response.get_data(as_text=True)
    assert table(body) == {
        "CE2 de Mme Élise": ["3", "1", "33 %", "2", "0", "3", "0"],
        "CM1 de M. Zola": ["3", "2", "67 %", "1", "2", "1", "0"],
        "CP de Mme Émery": ["3", "1", "33 %", "2", "3", "0", "0"],
        "Personnels": ["1", "0", "0 %", "1", "0", "1", "0"],
        "Invités": ["1", "0", "0 %", "1", "0", "1", "0"],
        "Enseignants, élèves et parents sans classe": ["1", "0", "0 %", "1", "0", "1", "0"],
        "total": ["10", "3", "30 %", "7", "3", "7", "0"],
    }
    assert '<rect class="pp-bar-done" width="26" height="10"/>' in body  # 33 % of 80
    assert " style=" not in body and "<script" not in body.split('<div class="publipostage"')[1]
    assert check_links(client, body, "adml_a") == 6 * 5  # the row of the accounts in no class has no filter
    # The class's "non activés" lists its accounts not yet activated, ready to print.
    [(href, _column, _n)] = [link for link in links(body) if link[1] == "not_activated" and f"class={cp}&" in link[0]]
    assert logins(client, href.split("?", 1)[1]) == ["marie.abel", "zoe.abel"]
    exported = client.get(f"{FOLLOW_UP}.csv", "adml_a")
    rows = list(csv.reader(io.StringIO(exported.data.decode("utf-8-sig")), delimiter=";"))
    assert rows[0][:3] == ["Établissement", "Ligne", "Comptes"]  # then the classes in school order: CP first
    assert rows[1] == ["", "CP de Mme Émery", "3", "1", "33", "2", "3", "0", "0"]
    assert rows[-1] == ["", "Total", "10", "3", "30", "7", "3", "7", "0"]
    assert exported.headers["Content-Disposition"].startswith('attachment; filename="publipostage_ecole-a_suivi_')
    # A selection narrows it; the page links there from the main page.
    narrowed = table(client.get(f"{FOLLOW_UP}?profile=Student&distributed=never", "adml_a").get_data(as_text=True))
    assert narrowed == {
        "CE2 de Mme Élise": ["1", "0", "0 %", "1", "0", "1", "0"],
        "CM1 de M. Zola": ["1", "1", "100 %", "0", "0", "1", "0"],
        "Enseignants, élèves et parents sans classe": ["1", "0", "0 %", "1", "0", "1", "0"],
        "total": ["3", "1", "33 %", "2", "0", "3", "0"],
    }
    assert f'href="{FOLLOW_UP}"' in client.get(f"{BASE}/", "adml_a").get_data(as_text=True)


def test_the_follow_up_keeps_to_the_perimeter(client: Any, school: Built) -> None:
    foreign = school.foreign
    assert client.get(f"{FOLLOW_UP}?class={foreign}", "adml_a").status_code == 403
    assert client.get(f"{FOLLOW_UP}.csv?class={foreign}", "adml_a").status_code == 403
    assert client.get(f"{FOLLOW_UP}?class={school.cp}", "adml_b").status_code == 403
    assert client.get(FOLLOW_UP, "teacher").status_code == 403
    assert client.get(FOLLOW_UP, None).status_code == 401
    assert client.get(f"{FOLLOW_UP}?school=A", "adml_a").status_code == 400  # no school dimension here
    # School B's admin counts school B only; a viewer may read it.
    assert table(client.get(FOLLOW_UP, "adml_b").get_data(as_text=True))["total"][0] == "2"
    assert client.get(FOLLOW_UP, "viewer_a").status_code == 200


FERRY, CURIE = "École Jules Ferry", "École Marie Curie"


@pytest.mark.parametrize("app_config", [{"schools": True, "PUBLIPOSTAGE_PDF_QR_CODE": False}])
def test_a_super_admin_follows_school_then_class(app: Flask, client: Any) -> None:
    with app.app_context():
        db.session.add_all([Ecole(code="A", appellation=FERRY), Ecole(code="B", appellation=CURIE)])
        ce1_a, cp_a, ce1_b = (Division(libelle="CE1", ecole="A"), Division(libelle="CP", ecole="A"),
                              Division(libelle="CE1", ecole="B"))
        db.session.add_all([ce1_a, cp_a, ce1_b])
        lea = add_person("lea.a", "Léa", "Arnaud", "ELEVE", divisions=[ce1_a])
        add_person("tom.a", "Tom", "Brun", "ELEVE", divisions=[cp_a], activated=True)
        add_person("ana.a", "Ana", "Petit", "PARENT", enfants=[lea])
        add_person("max.b", "Max", "Caron", "ELEVE", school="B", divisions=[ce1_b])
        add_person("rose.b", "Rose", "Dumas", "PERS", school="B", activated=True)
        db.session.commit()
        ids = {"ce1_a": ce1_a.ref, "ce1_b": ce1_b.ref}
        record("max.b", utcnow())
        db.session.remove()
    body = client.get(FOLLOW_UP, "super").get_data(as_text=True)
    assert table(body) == {
        FERRY: ["3", "1", "33 %", "2", "0", "3", "0"],
        CURIE: ["2", "1", "50 %", "1", "1", "1", "0"],
        "total": ["5", "2", "40 %", "3", "1", "4", "0"],
    }
    assert check_links(client, body, "super") == 3 * 5
    # A school's name opens its classes, named with their school where two share a name.
    school_a = html.unescape(re.search(rf'<a href="([^"]+)">{FERRY}</a>', body).group(1))
    assert school_a == f"{FOLLOW_UP}?school=A"
    detail = client.get(school_a, "super").get_data(as_text=True)
    assert table(detail) == {
        FERRY: ["3", "1", "33 %", "2", "0", "3", "0"],
        "CE1": ["2", "0", "0 %", "2", "0", "2", "0"],
        "CP": ["1", "1", "100 %", "0", "0", "1", "0"],
        "total": ["3", "1", "33 %", "2", "0", "3", "0"],
    }
    check_links(client, detail, "super")
    both = table(client.get(f"{FOLLOW_UP}?school=A&school=B", "super").get_data(as_text=True))
    assert both["Personnels"] == ["1", "1", "100 %", "0", "0", "1", "0"]
    assert both[f"CE1 ({CURIE})"] == ["1", "0", "0 %", "1", "1", "0", "0"]  # two schools' CE1 told apart
    # A local admin sees their school by class, and nothing of the other.
    assert list(table(client.get(FOLLOW_UP, "adml_a").get_data(as_text=True))) == ["CP", "CE1", "total"]  # school order
    assert client.get(f"{FOLLOW_UP}?school=B", "adml_a").status_code == 403
    assert client.get(f"{FOLLOW_UP}?class={ids['ce1_b']}", "adml_a").status_code == 403


# -- 5. search and the one-account reprint ------------------------------------------------------------


@pytest.mark.parametrize(
    "q, expected",
    [
        ("elo", ["elodie.zidane"]),
        ("ÉLO", ["elodie.zidane"]),  # accents and case ignored, both ways
        ("etien", ["lucas.etienne", "paul.etienne"]),
        ("Étienne", ["lucas.etienne", "paul.etienne"]),
        ("oe", ["anne.prof"]),  # Œillet
        ("abel zo", ["zoe.abel"]),  # every word starts a name or the login
        ("zoé abel", ["zoe.abel"]),
        ("jean.p", ["jean.prof"]),  # the login
        ("bel", []),  # the start only
        ("ines", ["ines.invite"]),
        ("  marie   ", ["marie.abel"]),
    ],
)
def test_search(client: Any, school: Built, q: str, expected: list[str]) -> None:
    assert logins(client, f"q={quote_plus(q)}") == expected


def test_search_combines_and_keeps_to_the_perimeter(client: Any, school: Built) -> None:
    assert logins(client, "q=abel&profile=Student") == ["zoe.abel"]
    assert logins(client, "q=bernard") == []  # school B's pupil
    assert logins(client, "q=bernard", "adml_b") == ["bea.b", "bob.b"]
    assert logins(client, "q=root") == []  # a super admin's account
    page = client.get(f"{BASE}/?q=%C3%89lo", "adml_a").get_data(as_text=True)
    assert re.search(r'id="pp-q" name="q" class="pp-search" autocomplete="off" maxlength="64"\s+value="Élo"', page)


def test_print_their_sheet(app: Flask, client: Any, school: Built) -> None:
    page = client.get(f"{BASE}/?profile=Student", "adml_a").get_data(as_text=True)
    forms = dict(re.findall(r'<tr data-login="([^"]+)">.*?<form method="post" class="pp-reprint" action="([^"]+)"',
                            page, re.S))
    assert set(forms) == {"zoe.abel", "elodie.zidane", "lucas.etienne", "nina.sansclasse"}
    assert "Imprimer sa fiche" in text_of(page)
    action = html.unescape(forms["zoe.abel"])
    response = client.post(action, "adml_a", data={"template": "letter"})
    assert response.status_code == 200 and response.mimetype == "application/pdf"
    [letter] = pages_text(response.data)
    assert "zoe.abel" in letter and "CODE-zoe.abel" in letter and "Ma première connexion" in letter
    # An activated account gets the letter of an activated account, without a code.
    response = client.post(html.unescape(forms["elodie.zidane"]), "adml_a", data={"template": "letter"})
    [letter] = pages_text(response.data)
    assert "elodie.zidane" in letter and "Mot de passe oublié" in letter and "CODE" not in letter
    with app.app_context():
        day = today()
        zoe, bob = uid("zoe.abel"), uid("bob.b")
        db.session.remove()
    assert [a["distribution"]["summary"] for a in accounts(client, f"account={zoe}")] == [f"Imprimé le {day}"]
    banner = text_of(client.get(f"{BASE}/?account={zoe}", "adml_a").get_data(as_text=True))
    assert "Un seul compte : Zoé Abel (zoe.abel)" in banner
    # Another school's account, or none: refused.
    assert client.post(f"{BASE}/pdf?account={bob}", "adml_a", data={"template": "letter"}).status_code == 403
    assert client.post(f"{BASE}/pdf?account=999999", "adml_a", data={"template": "letter"}).status_code == 403
    assert client.get(f"{BASE}/?account={zoe}", "viewer_a").get_data(as_text=True).count("pp-reprint") == 0


# -- 6. stale codes, and no code anywhere -------------------------------------------------------------


def test_a_code_changed_since_printing_is_flagged(app: Flask, client: Any, school: Built, smtp: SmtpServer) -> None:
    cp = school.cp
    assert post_pdf(client, f"class={cp}").data.startswith(b"%PDF")
    campaign_id_of(post_mail(client, "adml_a", "profile=Teacher"))  # Jean gets his code by email
    assert all(a["distribution"]["stale"] is None for a in accounts(client))
    with app.app_context():
        for login in ("zoe.abel", "jean.prof"):
            db.session.get(Personne, uid(login)).jeton = f"NEW-{login}"
        db.session.commit()
    found = {a["login"]: a["distribution"]["stale"] for a in accounts(client)}
    assert found["zoe.abel"] == "code modifié depuis l'impression"
    assert found["jean.prof"] == "code modifié depuis l'envoi"
    assert {k for k, v in found.items() if v} == {"zoe.abel", "jean.prof"}
    page = text_of(client.get(f"{BASE}/?class={cp}", "adml_a").get_data(as_text=True))
    assert "code modifié depuis l'impression" in page
    rows = table(client.get(FOLLOW_UP, "adml_a").get_data(as_text=True))
    assert rows["CP de Mme Émery"][-1] == "1" and rows["CE2 de Mme Élise"][-1] == "1" and rows["total"][-1] == "2"
    # Printed again with the new code: no longer stale.
    with app.app_context():
        zoe = uid("zoe.abel")
        db.session.remove()
    assert "NEW-zoe.abel" in pages_text(client.post(f"{BASE}/pdf?account={zoe}", "adml_a",
                                                    data={"template": "letter"}).data)[0]
    assert accounts(client, f"account={zoe}")[0]["distribution"]["stale"] is None
    assert table(client.get(FOLLOW_UP, "adml_a").get_data(as_text=True))["total"][-1] == "1"


def test_no_code_or_reversible_form_in_any_table(app: Flask, client: Any, school: Built, smtp: SmtpServer) -> None:
    assert post_pdf(client, "sort=class", template="cards").data.startswith(b"%PDF")
    campaign_id_of(post_mail(client, "adml_a", ""))
    client.get(f"{BASE}/export.csv", "adml_a").get_data()
    client.get(FOLLOW_UP, "adml_a")
    with app.app_context():
        codes = all_codes()
        stored = []
        for table_ in metadata.sorted_tables:
            for row in db.session.execute(sa.select(table_)).all():
                stored += [str(v) for v in row]
        hashes = db.session.execute(sa.select(RunItem.user_id, RunItem.code_hmac)
                                    .where(RunItem.code_hmac.is_not(None))).all()
        db.session.remove()
    text = "\n".join(stored)
    assert codes and hashes
    for code in codes:
        variants = {code, code.lower(), code[::-1], code.encode().hex(), hashlib.sha256(code.encode()).hexdigest()[:32],
                    hashlib.md5(code.encode()).hexdigest(), base64.b64encode(code.encode()).decode().rstrip("=")}
        assert not any(v in text for v in variants), code
    # The hash is keyed: another secret key makes other hashes.
    from flask_publipostage.history import code_digest

    user_id, digest = hashes[0]
    with app.app_context():
        code = db.session.get(Personne, int(user_id)).jeton
        assert code_digest(user_id, code) == digest
        app.secret_key = "another key"
        assert code_digest(user_id, code) != digest


# -- 7. retention and older tables ------------------------------------------------------------------


def test_purge_history_keeps_history_days(app: Flask, client: Any, school: Built) -> None:
    with app.app_context():
        now = utcnow()
        record("zoe.abel", now - timedelta(days=401))
        record("marie.abel", now - timedelta(days=399))
        db.session.remove()
    app.config["PUBLIPOSTAGE_HISTORY_DAYS"] = 400
    result = app.test_cli_runner().invoke(args=["publipostage", "purge-history"])
    assert result.exit_code == 0 and "1 élément d'historique de plus de 400 jours supprimé." in result.output
    assert logins(client, "distributed=yes") == ["marie.abel"]
    with app.app_context():
        assert db.session.execute(sa.select(sa.func.count()).select_from(Run)).scalar() == 1
        db.session.remove()


def test_upgrade_db_creates_the_latest_code_index(app: Flask, client: Any, school: Built) -> None:
    """An install of before the partial index on the items that carried a code
    (the stale-code flag reads one entry of it an account) gets it."""
    with app.app_context():
        db.session.execute(sa.text("DROP INDEX ix_publipostage_run_item_code"))
        db.session.commit()
    result = app.test_cli_runner().invoke(args=["publipostage", "upgrade-db"])
    assert result.exit_code == 0 and "Index créés : ix_publipostage_run_item_code." in result.output, result.output
    with app.app_context():
        names = {index["name"] for index in sa.inspect(db.engine).get_indexes("publipostage_run_item")}
        assert "ix_publipostage_run_item_code" in names
        db.session.remove()
    again = app.test_cli_runner().invoke(args=["publipostage", "upgrade-db"])
    assert again.exit_code == 0 and "Index créés" not in again.output


def test_upgrade_db_gives_older_items_their_history(app: Flask, client: Any, school: Built, smtp: SmtpServer) -> None:
    assert post_pdf(client, "profile=Teacher").data.startswith(b"%PDF")
    campaign_id_of(post_mail(client, "adml_a", "profile=Relative"))
    items = RunItem.__table__
    # The requests ran in the test's app context: its session goes before the tables change.
    db.session.remove()
    with app.app_context():
        rows = [dict(r._mapping) for r in db.session.execute(sa.select(items).order_by(items.c.id)).all()]
        db.session.remove()
        items.drop(db.engine)
        old = sa.MetaData()
        sa.Table("publipostage_run", old, autoload_with=db.engine)
        kept = [c for c in items.columns if c.name not in ("distributed_at", "code_hmac")]
        before = sa.Table(items.name, old, *(c._copy() for c in kept),
                          sa.Index("ix_publipostage_run_item_user", "user_id"))
        before.create(db.engine)
        with db.engine.begin() as conn:
            conn.execute(before.insert(), [{k: v for k, v in r.items() if k in before.c} for r in rows])
    result = app.test_cli_runner().invoke(args=["publipostage", "upgrade-db"])
    assert result.exit_code == 0 and "historique de distribution" in result.output, result.output
    with app.app_context():
        indexes = {i["name"] for i in sa.inspect(db.engine).get_indexes(items.name)}
        assert "ix_publipostage_run_item_distributed" in indexes and "ix_publipostage_run_item_user" not in indexes
        db.session.remove()
    # The sent email and the downloaded letters are distributions again.
    assert logins(client, "distributed=yes") == ["anne.prof", "jean.prof", "marie.abel"]
    again = app.test_cli_runner().invoke(args=["publipostage", "upgrade-db"])
    assert again.exit_code == 0 and "historique de distribution" not in again.output
