"""Every account state gets the right letter, card and email: not activated (with
the code's validity), activated with and without a renewal code, federated,
expired, blocked; the filters and counters of the page; renewal codes refused
without the capability ``renew`` and outside the perimeter; no code in logs or
in the extension's tables. PDFs are read back, emails received by a real SMTP
server."""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_publipostage import renewal
from flask_publipostage.access import Scope
from flask_publipostage.recipients import build
from flask_publipostage.runs.models import Run, RunItem
from flask_publipostage.selection import Selection

from . import hosts
from .hosts import Division, Personne, Renouvellement, db
from .smtp import SmtpServer
from .states import CODE_MARKERS, States, build_states, extension_tables_text
from .test_pdf_support import URL, count_word, page_count, pages_text, post_pdf


@pytest.fixture
def app_config() -> dict[str, Any]:
    return {"states": True, "renew": hosts.renew_codes}


@pytest.fixture(autouse=True)
def fresh_calls() -> Iterator[None]:
    hosts.RENEW_CALLS.clear()
    yield
    hosts.RENEW_CALLS.clear()


@pytest.fixture
def states(app_ctx: Flask) -> States:
    return build_states()


def raw(response: Any) -> str:
    return html.unescape(response.get_data(as_text=True))


def text(response: Any) -> str:
    """What the page says: tags removed, white space collapsed."""
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", response.get_data(as_text=True)))).replace(" ,", ",")


def accounts(client: Any, query: str = "", role: str = "adml_a") -> dict[str, dict[str, Any]]:
    data = client.get(f"{URL}/preview.json?{query}", role).get_json()
    return {a["login"]: a for a in data["accounts"]}


def counters(client: Any, query: str = "", role: str = "adml_a") -> dict[str, int]:
    return client.get(f"{URL}/preview.json?{query}", role).get_json()["counters"]  # type: ignore[no-any-return]


def letters_by_login(data: bytes, logins: list[str]) -> dict[str, str]:
    """Each letter's text, by the login it names (one login a page)."""
    found = {}
    for page in pages_text(data):
        named = [login for login in logins if count_word(page, login)]
        assert len(named) == 1, (named, page[:300])
        found[named[0]] = page
    return found


def pdf(response: Any) -> bytes:
    assert response.status_code == 200, text(response)[:800]
    assert response.mimetype == "application/pdf"
    return response.data  # type: ignore[no-any-return]


def items_of_last_run() -> dict[str, RunItem]:
    db.session.expire_all()
    run_id = db.session.execute(sa.select(sa.func.max(Run.id))).scalar_one()
    rows = db.session.execute(sa.select(RunItem).where(RunItem.run_id == run_id)).scalars()
    logins = dict(db.session.execute(sa.select(sa.cast(Personne.uid, sa.String), Personne.identifiant)).tuples().all())
    return {logins[item.user_id]: item for item in rows}


def renewal_codes() -> dict[str, str]:
    """The codes the host holds now, by login."""
    db.session.expire_all()
    rows = db.session.execute(
        sa.select(Personne.identifiant, Renouvellement.code).join(Renouvellement, Renouvellement.uid == Personne.uid)
    ).tuples()
    return dict(rows.all())


ALL_A = ["leo.nouveau", "ines.expire", "zoe.active", "anne.active", "paul.federe", "max.bloque"]


# -- the page: filters, counters, the list --------------------------------------------------------------


def test_blocked_accounts_are_left_out_by_default_and_counted(client: Any, states: States) -> None:
    shown = accounts(client)
    assert "max.bloque" not in shown and "root.super" not in shown and "bob.autre" not in shown
    assert set(shown) == set(ALL_A) - {"max.bloque"}
    found = counters(client)
    assert (found["selected"], found["blocked_left_out"], found["blocked"]) == (5, 1, 0)
    assert set(accounts(client, "blocked=only")) == {"max.bloque"}
    assert counters(client, "blocked=only")["blocked"] == 1
    assert set(accounts(client, "blocked=all")) == set(ALL_A)
    assert counters(client, "blocked=all")["blocked_left_out"] == 0
    page = text(client.get(f"{URL}/preview", "adml_a"))
    assert "1 compte bloqué écarté (filtre « Comptes bloqués »)" in page
    page = text(client.get(f"{URL}/preview?blocked=all", "adml_a"))
    assert "Bloqué" in page and "max.bloque" in page


def test_federated_and_code_filters(client: Any, states: States) -> None:
    assert set(accounts(client, "federated=only")) == {"paul.federe"}
    assert "paul.federe" not in accounts(client, "federated=exclude")
    assert set(accounts(client, "code=expired")) == {"ines.expire"}
    # Codes still valid: not activated, not federated (Paul's code is never given), not expired.
    assert set(accounts(client, "code=valid")) == {"leo.nouveau"}
    assert set(accounts(client, "code=valid&blocked=all")) == {"leo.nouveau", "max.bloque"}
    found = counters(client)
    assert (found["federated"], found["expired"]) == (1, 1)


def test_the_list_says_each_state(client: Any, states: States) -> None:
    shown = accounts(client, "blocked=all")
    assert shown["paul.federe"]["federated"] is True and shown["paul.federe"]["activation_code"] is None
    assert shown["ines.expire"]["code_expired"] is True and shown["ines.expire"]["activation_code"] is None
    assert shown["leo.nouveau"]["activation_code"] == "CODE-leo.nouveau"
    assert shown["leo.nouveau"]["code_valid_until"] == "2099-12-31"
    assert shown["max.bloque"]["blocked"] is True
    page = text(client.get(f"{URL}/preview?blocked=all", "adml_a"))
    assert "Compte fédéré" in page and "CODE-paul.federe" not in page
    assert "Code expiré le 15/01/2020" in page and "CODE-ines.expire" not in page
    assert "CODE-leo.nouveau" in page and "jusqu'au 31/12/2099" in page
    assert "1 code d'activation a expiré : il n'est ni imprimé ni envoyé." in page
    # The host issues renewal codes and this admin may ask: the way to new codes is said.
    assert "Générer un nouveau code pour les comptes dont le code d'activation a expiré" in page
    csv_text = client.get(f"{URL}/export.csv?blocked=all", "adml_a").get_data().decode("utf-8-sig")
    assert "Compte fédéré" in csv_text and "Code expiré" in csv_text
    assert "CODE-paul.federe" not in csv_text and "CODE-ines.expire" not in csv_text
    assert "CODE-leo.nouveau" in csv_text


def test_the_form_offers_the_filters_and_the_renewal_codes(client: Any, states: States) -> None:
    page = raw(client.get(f"{URL}/", "adml_a"))
    for param in ("federated", "code", "blocked"):
        assert f'name="{param}"' in page
    assert re.search(r'name="blocked" value="exclude"\s+checked', page)
    assert '"blocked"' in page and '"federated"' in page  # the script's parameters
    assert "Codes de renouvellement" in page and 'name="renew"' in page and 'name="renew_expired"' in page
    # Without the capability the option is not offered.
    assert 'name="renew"' not in raw(client.get(f"{URL}/", "printer_a"))


def test_the_command_line_has_the_filters(app: Flask, states: States, smtp: SmtpServer) -> None:
    app.config.update(smtp.config())
    runner = app.test_cli_runner()
    result = runner.invoke(args=["publipostage", "send", "--blocked", "only", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "1 compte sélectionné" in result.output
    result = runner.invoke(args=["publipostage", "send", "--code", "expired", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "1 code d'activation a expiré : il ne sera pas envoyé." in result.output
    assert "0 courriel à envoyer" in result.output
    assert smtp.count() == 0


# -- letters and cards ---------------------------------------------------------------------------------


def test_letter_for_each_state(client: Any, states: States) -> None:
    data = pdf(post_pdf(client, "blocked=all", renew="without_email"))
    printed = ["leo.nouveau", "zoe.active", "anne.active", "paul.federe", "max.bloque"]
    letters = letters_by_login(data, ALL_A)
    # One page per letter (nothing spills over), and none for the expired code.
    assert set(letters) == set(printed) and page_count(data) == len(printed)
    everything = "\n".join(letters.values())
    assert "CODE-ines.expire" not in everything and "ines.expire" not in everything

    leo = letters["leo.nouveau"]
    assert "Ma première connexion" in leo and "CODE-leo.nouveau" in leo
    assert "valable jusqu'au 31/12/2099" in leo

    codes = renewal_codes()
    zoe = letters["zoe.active"]  # activated, no email: a renewal code
    assert set(codes) == {"zoe.active"}
    assert "Choisir un nouveau mot de passe" in zoe and "Code de renouvellement" in zoe
    assert codes["zoe.active"] in zoe and "valable jusqu'au 30/11/2026" in zoe
    assert "Saisissez votre identifiant et votre code de renouvellement" in zoe
    assert "https://ent.test.example/auth/forgot" in zoe  # RENEWAL_URL defaults to the reset page

    anne = letters["anne.active"]  # activated with an email: "Mot de passe oublié"
    assert "Informations sur mon compte" in anne and "Mot de passe oublié" in anne
    assert "Code de renouvellement" not in anne and "RENEW" not in anne

    paul = letters["paul.federe"]  # federated: the academic identity, no code
    assert "Se connecter avec ÉduConnect" in paul and "https://educonnect.education.gouv.fr" in paul
    assert "CODE-paul.federe" not in paul and "Code d'activation" not in paul

    # The run says who got a renewal code (never which) and who got no letter, and why.
    found = items_of_last_run()
    assert [login for login, item in found.items() if item.renewal_issued_at] == ["zoe.active"]
    assert found["ines.expire"].state == "skipped" and "expiré" in (found["ines.expire"].reason or "")
    assert {found[login].state for login in printed} == {"printed"}
    assert not any(marker in extension_tables_text() for marker in CODE_MARKERS)


def test_cards_for_each_state(client: Any, states: States) -> None:
    data = pdf(post_pdf(client, "", template="cards", renew="activated"))
    (page,) = pages_text(data)
    codes = renewal_codes()
    assert set(codes) == {"zoe.active", "anne.active"}  # every activated account asked for
    for login in ("zoe.active", "anne.active"):
        assert codes[login] in page
    assert page.count("Code de renouvellement") == 2 and page.count("Code d'activation") == 1
    assert "CODE-leo.nouveau" in page and "valable jusqu'au 31/12/2099" in page
    assert "Connexion avec ÉduConnect : aucun code." in page.replace("\n", " ") and "CODE-paul.federe" not in page
    assert "ines.expire" not in page and "CODE-ines" not in page
    assert "max.bloque" not in page


def test_expired_codes_renewed_on_request(client: Any, states: States) -> None:
    data = pdf(post_pdf(client, "code=expired", renew_expired="y"))
    (letter,) = pages_text(data)
    codes = renewal_codes()
    assert set(codes) == {"ines.expire"}
    assert "ines.expire" in letter and codes["ines.expire"] in letter and "Code de renouvellement" in letter
    assert "CODE-ines.expire" not in letter
    assert items_of_last_run()["ines.expire"].state == "printed"


def test_without_the_capability_renew_nothing_is_issued(app: Flask, client: Any, states: States) -> None:
    for choice in ("without_email", "activated"):
        response = post_pdf(client, "", "printer_a", renew=choice)
        assert response.status_code == 403 and "codes de renouvellement" in text(response)
    assert post_pdf(client, "", "printer_a", renew_expired="y").status_code == 403
    assert post_pdf(client, "", "adml_a", renew="maybe").status_code == 400
    assert hosts.RENEW_CALLS == [] and renewal_codes() == {}
    assert db.session.execute(sa.select(sa.func.count()).select_from(Run)).scalar_one() == 0
    # Without the option, the same admin prints as usual.
    assert post_pdf(client, "", "printer_a").status_code == 200


def test_renewal_codes_never_outside_the_perimeter(app: Flask, client: Any, states: States) -> None:
    # A class of another school: refused before anything is issued.
    response = post_pdf(client, f"class={states.other_class.ref}", renew="activated")
    assert response.status_code == 403 and hosts.RENEW_CALLS == []
    pdf(post_pdf(client, "blocked=all", renew="activated"))
    asked = {uid for call in hosts.RENEW_CALLS for uid in call}
    assert asked == {states.uid("zoe.active"), states.uid("anne.active")}
    assert states.uid("bob.autre") not in asked and states.uid("root.super") not in asked
    # Blocked and federated accounts never get one, whatever the choice.
    assert states.uid("max.bloque") not in asked and states.uid("paul.federe") not in asked


def test_the_last_check_before_the_host_keeps_to_the_perimeter(app_ctx: Flask, states: States) -> None:
    """Whatever the recipients given, the host is asked only for accounts of the
    admin's perimeter."""
    host = app_ctx.extensions["publipostage"].host
    rows = db.session.execute(
        sa.select(*host.scalar_columns()).where(host.user_id.in_([states.uid("zoe.active"), states.uid("bob.autre"),
                                                                  states.uid("root.super")]))
    ).all()
    recipients = build(Selection(), rows)
    scope_a = Scope(actor="adml_a", users=sa.and_(Personne.ecole == "A", Personne.super_admin.is_(False)), key="ecole:A")
    printed, issued = renewal.issue(recipients, renewal.ACTIVATED, False, scope_a)
    assert issued == [states.uid("zoe.active")]
    assert hosts.RENEW_CALLS == [[states.uid("zoe.active")]]
    assert {r.login for r in printed if r.renewal_code} == {"zoe.active"}


def test_a_failing_host_prints_nothing(app: Flask, client: Any, states: States) -> None:
    def broken(ids: list[Any]) -> Any:
        raise ConnectionError("directory down: RENEW-SECRET")

    app.extensions["publipostage"].renew_callback = broken
    response = post_pdf(client, "", renew="without_email")
    assert response.status_code == 502
    assert "Les codes de renouvellement n'ont pas pu être émis : rien n'a été imprimé." in text(response)
    run = db.session.execute(sa.select(Run)).scalar_one()
    assert (run.state, run.last_error) == ("failed", "RenewalError")


def test_without_a_renew_callable_the_option_is_refused(app: Flask, client: Any, states: States) -> None:
    app.extensions["publipostage"].renew_callback = None
    assert 'name="renew"' not in raw(client.get(f"{URL}/", "adml_a"))
    response = post_pdf(client, "", renew="without_email")
    assert response.status_code == 400 and "n'émet pas de codes de renouvellement" in text(response)


def test_no_code_in_logs_or_tables(client: Any, states: States, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    logging.getLogger("flask_publipostage").setLevel(logging.DEBUG)
    pdf(post_pdf(client, "blocked=all", renew="activated", renew_expired="y"))
    pdf(post_pdf(client, "", template="cards", renew="without_email"))
    codes = set(renewal_codes().values())
    assert len(codes) == 3
    activation = {p.jeton for p in db.session.execute(sa.select(Personne)).scalars() if p.jeton}
    logged = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    assert "renewal codes issued" in logged
    tables = extension_tables_text()
    for code in codes | activation:
        assert code not in logged and code not in tables


# -- the background path: codes issued chunk by chunk ---------------------------------------------------


class TestBackground:
    @pytest.fixture
    def app_config(self) -> dict[str, Any]:
        return {
            "states": True,
            "renew": hosts.renew_codes,
            "PUBLIPOSTAGE_JOB_BACKEND": "thread",
            "PUBLIPOSTAGE_PDF_SYNC_LIMIT": 3,
            "PUBLIPOSTAGE_PDF_CHUNK_SIZE": 4,
            "PUBLIPOSTAGE_PDF_WORKERS": 2,
        }

    def test_codes_are_issued_per_chunk_and_kept_nowhere(self, app: Flask, client: Any) -> None:
        with app.app_context():
            run_in_background(app, client, activated=14)


class TestCelery:
    @pytest.fixture
    def app_config(self) -> dict[str, Any]:
        from .test_pdf_more import _eager_celery

        return {
            "states": True,
            "renew": hosts.renew_codes,
            "PUBLIPOSTAGE_JOB_BACKEND": "celery",
            "PUBLIPOSTAGE_CELERY_APP": _eager_celery(),
            "PUBLIPOSTAGE_PDF_SYNC_LIMIT": 3,
            "PUBLIPOSTAGE_PDF_CHUNK_SIZE": 4,
        }

    def test_codes_are_issued_by_the_chunk_tasks(self, app: Flask, client: Any) -> None:
        with app.app_context():
            run_in_background(app, client, activated=10)


def run_in_background(app: Flask, client: Any, activated: int) -> None:
    """A class of ``activated`` activated pupils without email and one expired
    code, printed in the background with renewal codes: each chunk asks for its
    own accounts, the file carries every code, the tables none."""
    import time

    states = build_states()
    pupils = [
        hosts.add_person(f"r{i:03d}", f"Prénom{i:03d}", f"Renouv{i:03d}", "ELEVE", divisions=[states.ce1], activated=True)
        for i in range(activated)
    ]
    db.session.commit()
    response = post_pdf(client, "profile=Student", renew="without_email")
    assert response.status_code == 303, text(response)[:500]
    job_id = response.headers["Location"].rsplit("/", 1)[-1]
    deadline = time.monotonic() + 120
    while True:
        status = client.get(f"{URL}/pdf/jobs/{job_id}/status", "adml_a").get_json()
        if status["state"] not in ("queued", "running"):
            break
        assert time.monotonic() < deadline, status
        time.sleep(0.1)
    assert status["state"] == "done", status
    calls = list(hosts.RENEW_CALLS)
    assert len(calls) >= 2  # one call per chunk, never the whole run at once
    asked = [uid for call in calls for uid in call]
    expected = {p.uid for p in pupils} | {states.uid("zoe.active")}
    assert sorted(asked) == sorted(expected)  # each account once
    page = text(client.get(f"{URL}/pdf/jobs/{job_id}", "adml_a"))
    assert f"{len(expected)} lettres portent un code de renouvellement" in page
    assert "1 compte n'a pas reçu de lettre : son code d'activation a expiré." in page
    with client.get(status["download_url"], "adml_a") as download:
        data = download.get_data()
    everything = "\n".join(pages_text(data))
    codes = renewal_codes()
    for pupil in pupils:
        assert codes[pupil.identifiant] in everything
    assert "ines.expire" not in everything
    assert page_count(data) == activated + 2  # the pupils, Zoé and Léo (Max is blocked)
    tables = extension_tables_text()
    assert not any(code in tables for code in codes.values())


# -- emails ---------------------------------------------------------------------------------------------


class TestEmails:
    @pytest.fixture
    def app_config(self, smtp: SmtpServer) -> dict[str, Any]:
        return {"states": True, "renew": hosts.renew_codes, **smtp.config()}

    def test_email_for_each_state(self, app: Flask, client: Any, states: States, smtp: SmtpServer) -> None:
        page = text(client.get(f"{URL}/mail?blocked=all", "adml_a"))
        assert "1 compte sélectionné a un code d'activation expiré : aucun courriel ne lui est envoyé." in page
        assert "Imprimer de nouveaux codes pour eux (PDF)" in page and "code=expired" in raw(client.get(f"{URL}/mail?blocked=all", "adml_a"))
        # Léo, Anne, Paul and Max: Inès's code has expired.
        assert "4 courriels seront envoyés" in page, page
        assert "1 la façon de se connecter avec son identité académique (compte fédéré)" in page
        response = client.post(f"{URL}/mail/send?blocked=all", "adml_a")
        assert response.status_code == 303
        from .smtp import wait_for

        wait_for(lambda: smtp.count() == 4)
        by_address = {m.rcpt_tos[0]: m.parsed() for m in smtp.messages}
        assert set(by_address) == {"leo@example.org", "anne@example.org", "paul@example.org", "max@example.org"}

        def body(address: str) -> str:
            return by_address[address].get_body(("plain",)).get_content()  # type: ignore[no-any-return]

        leo = body("leo@example.org")
        assert "Votre code d'activation : CODE-leo.nouveau (valable jusqu'au 31/12/2099)" in leo
        paul = body("paul@example.org")
        assert "ÉduConnect" in by_address["paul@example.org"]["Subject"]
        assert "Choisissez « Se connecter avec ÉduConnect »." in paul and "https://educonnect.education.gouv.fr" in paul
        assert "CODE-paul.federe" not in paul and "code d'activation :" not in paul.lower()
        html_body = by_address["paul@example.org"].get_body(("html",)).get_content()
        assert "CODE-paul.federe" not in html_body and "ÉduConnect" in html_body
        anne = body("anne@example.org")
        assert "Mot de passe oublié" in anne and "CODE-" not in anne and "RENEW" not in anne
        found = items_of_last_run()
        assert found["ines.expire"].state == "skipped" and "expiré" in (found["ines.expire"].reason or "")
        assert not any(b"CODE-ines" in m.content for m in smtp.messages)
        assert hosts.RENEW_CALLS == []  # emails never ask for renewal codes
        assert not any(marker in extension_tables_text() for marker in CODE_MARKERS)

    def test_blocked_accounts_get_no_email_by_default(self, app: Flask, client: Any, states: States, smtp: SmtpServer) -> None:
        assert client.post(f"{URL}/mail/send", "adml_a").status_code == 303
        from .smtp import wait_for

        wait_for(lambda: smtp.count() == 3)
        assert "max@example.org" not in {m.rcpt_tos[0] for m in smtp.messages}


# -- without the mapping, the page works as before ------------------------------------------------------


class TestWithoutTheFields:
    @pytest.fixture
    def app_config(self) -> dict[str, Any]:
        return {}

    def test_the_states_are_unknown_and_change_nothing(self, app: Flask, client: Any, states: States) -> None:
        # The columns hold blocked, federated and expired accounts, but nothing maps them.
        shown = accounts(client)
        assert set(shown) == set(ALL_A)
        assert shown["paul.federe"]["activation_code"] == "CODE-paul.federe"
        assert shown["ines.expire"]["activation_code"] == "CODE-ines.expire"
        for param in ("blocked=all", "federated=only", "code=expired"):
            response = client.get(f"{URL}/preview.json?{param}", "adml_a")
            assert response.status_code == 400, param
            assert "Paramètre inconnu" in response.get_json()["error"]
        page = raw(client.get(f"{URL}/", "adml_a"))
        for param in ("federated", "code", "blocked", "renew"):
            assert f'name="{param}"' not in page
        # The JSON is the one it was: no key of the states.
        assert set(counters(client)) == {"selected", "without_email", "not_activated"}
        assert not {"federated", "blocked", "code_expired", "code_valid_until"} & set(shown["paul.federe"])


# -- the new contents fit their page and their card -----------------------------------------------------


LONG_FIRST = "Marie-Chantal Bérénice Anne-Sophie Éléonore"
LONG_LAST = "de la Tour d’Auvergne-Saint-Exupéry de Montmorency-Laval et Rohan-Chabot-Gué"


def _longest_in_each_state() -> list[str]:
    """A federated parent of five long-named children, an activated pupil without
    email (a renewal code), a pupil whose code has a validity, all with 120-character
    names and a postal address."""
    from .states import VALID_UNTIL

    classes = [Division(libelle=f"Classe numéro {i} de Mme Longuenom-Interminable", ecole="A") for i in range(5)]
    db.session.add_all(classes)
    address = {"rue": "12 rue des Lilas", "ville": "75011 Paris"}
    kids = [
        hosts.add_person(f"kid{i}", f"Enfant{i} Prénom-Composé-Très-Long", "Descendant-Nombreux-De-La-Famille", "ELEVE",
                         divisions=[classes[i]], activated=True, **address)
        for i in range(5)
    ]
    hosts.add_person("long.federe", LONG_FIRST, LONG_LAST, "PARENT", enfants=kids, federated=True, **address)
    hosts.add_person("long.renouv", LONG_FIRST, LONG_LAST, "ELEVE", divisions=classes[:1], activated=True, **address)
    hosts.add_person("long.code", LONG_FIRST, LONG_LAST, "ELEVE", divisions=classes[:1], code_until=VALID_UNTIL,
                     token="LONGCODE", **address)
    db.session.commit()
    return ["long.federe", "long.renouv", "long.code", *(f"kid{i}" for i in range(5))]


@pytest.mark.parametrize("postal", [None, "y"])
def test_every_letter_of_a_state_stays_on_its_page(app_ctx: Flask, client: Any, postal: str | None) -> None:
    from .test_pdf_support import word_boxes

    logins = _longest_in_each_state()
    data = pdf(post_pdf(client, "profile=Relative&profile=Student", postal=postal, renew="without_email"))
    assert page_count(data) == len(logins)  # one page each: nothing spills over
    letters = letters_by_login(data, logins)
    assert "Se connecter avec ÉduConnect" in letters["long.federe"]
    assert "Code de renouvellement" in letters["long.renouv"]
    assert "valable jusqu'au 31/12/2099" in letters["long.code"]
    for words in word_boxes(data):
        for w in words:
            assert 16 <= w.x0 and w.x1 <= 194 and w.y1 <= 290, w


def test_every_card_of_a_state_keeps_clear_of_its_qr_code(app_ctx: Flask, client: Any) -> None:
    from .test_pdf_qr import _cells, _inside
    from .test_pdf_support import image_boxes, overlaps, word_boxes

    logins = _longest_in_each_state()
    data = pdf(post_pdf(client, "profile=Relative&profile=Student", template="cards", renew="without_email"))
    (words,) = word_boxes(data)
    (images,) = image_boxes(data)
    assert len(images) == len(logins)
    for word in words:
        for qr in images:
            assert not overlaps(word, qr), (word, qr)
        # Every word inside one card's cell: nothing runs over the cut lines.
        assert word.y0 < 20 or any(_inside(word, cell) for cell in _cells()), word
    text = pages_text(data)[0].replace("\n", " ")
    assert "Connexion avec ÉduConnect : aucun code." in text
    assert "(code valable jusqu'au 31/12/2099)" in text and "(code valable jusqu'au 30/11/2026)" in text


# -- in Chromium: the filters and the renewal option drive the page and the PDF ------------------------


def test_the_page_in_chromium(app: Flask, states: States, tmp_path: Any) -> None:
    from .browser import admin_page, launched_browser, live_server, require_chromium

    sync_api = require_chromium()

    def wait_selected(page: Any, count: int) -> None:
        page.wait_for_function(
            "n => { const c = document.querySelector('#pp-results .pp-counters');"
            " return c && c.dataset.selected === String(n) && !document.getElementById('pp-results').hasAttribute('aria-busy'); }",
            arg=count,
        )

    with live_server(app) as base, launched_browser(sync_api) as browser, admin_page(browser, base) as page:
        page.goto(f"{URL}/")
        wait_selected(page, 5)
        assert page.is_checked("input[name=blocked][value=exclude]")
        assert "1 compte bloqué écarté" in page.inner_text("#pp-results")
        assert "1 code d'activation a expiré" in page.inner_text("#pp-results")
        page.get_by_label("Uniquement les comptes bloqués").check()
        wait_selected(page, 1)
        assert "blocked=only" in page.url
        page.get_by_label("Sauf les comptes bloqués").check()
        wait_selected(page, 5)
        assert "blocked" not in page.url  # the default stays out of the address
        page.get_by_label("Code expiré", exact=True).check()
        wait_selected(page, 1)
        assert "code=expired" in page.url
        page.get_by_label("Générer un nouveau code pour les comptes dont le code d'activation a expiré").check()
        with page.expect_download() as download:
            page.get_by_role("button", name="Générer en PDF").click()
        path = tmp_path / "renewed.pdf"
        download.value.save_as(path)
    (letter,) = pages_text(path.read_bytes())
    codes = renewal_codes()
    assert set(codes) == {"ines.expire"} and codes["ines.expire"] in letter and "Code de renouvellement" in letter


def test_the_journal_names_the_filters(client: Any, states: States) -> None:
    pdf(post_pdf(client, "blocked=only"))
    pdf(post_pdf(client, "federated=exclude&code=valid"))
    journal = text(client.get(f"{URL}/journal", "adml_a"))
    assert "Uniquement les comptes bloqués" in journal
    assert "Sauf les comptes fédérés · Code encore valable" in journal


def test_upgrade_db_adds_the_renewal_column(app: Flask) -> None:
    with app.app_context():
        with db.engine.begin() as conn:
            conn.execute(sa.text("ALTER TABLE publipostage_run_item DROP COLUMN renewal_issued_at"))
    result = app.test_cli_runner().invoke(args=["publipostage", "upgrade-db"])
    assert result.exit_code == 0, result.output
    assert "quand un code de renouvellement a été émis" in result.output
    with app.app_context():
        columns = {c["name"] for c in sa.inspect(db.engine).get_columns("publipostage_run_item")}
    assert "renewal_issued_at" in columns
    again = app.test_cli_runner().invoke(args=["publipostage", "upgrade-db"])
    assert "renouvellement" not in again.output
