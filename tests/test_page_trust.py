"""A page a school admin can trust: presets that do what they say, the campaign
restriction kept in sight, mail counts that add up, no live code in a sample,
French local times, options that say why they cannot apply, feedback in sight."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_publipostage.recipients import local_time
from flask_publipostage.runs.models import Run
from flask_publipostage.views import school_year_start

from .browser import admin_page, launched_browser, live_server, require_chromium
from .hosts import Division, add_person, db
from .smtp import SmtpServer
from .test_pdf_support import pages_text, post_pdf
from .test_security_support import build_security_school, campaign_id_of, post_mail

BASE = "/imports-exports/publipostage"

sync_api = require_chromium()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with launched_browser(sync_api) as browser:
        yield browser


@pytest.fixture
def app_config(smtp: SmtpServer) -> dict[str, Any]:
    return {**smtp.config(), "PUBLIPOSTAGE_PDF_QR_CODE": False}


@pytest.fixture
def school(app_ctx: Flask) -> Any:
    return build_security_school()


@pytest.fixture
def page(browser: Any, app: Flask, school: Any) -> Iterator[Any]:
    with live_server(app) as url, admin_page(browser, url) as page:
        yield page


def text_of(body: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", body)).split())


def text(response: Any) -> str:
    """The page as words: tags dropped, spaces collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", response.get_data(as_text=True))).split())


# -- 1. quick selections ---------------------------------------------------------------------


def test_school_year_starts_on_1_september() -> None:
    assert school_year_start(datetime(2026, 12, 1).date()).isoformat() == "2026-09-01"
    assert school_year_start(datetime(2027, 8, 31).date()).isoformat() == "2026-09-01"
    assert school_year_start(datetime(2027, 9, 1).date()).isoformat() == "2027-09-01"


def test_the_back_to_school_preset_prints_cards_of_this_years_pupils(app: Flask, page: Any) -> None:
    start = school_year_start()
    with app.app_context():
        cp = db.session.execute(sa.select(Division).where(Division.libelle.like("CP de Mme%"))).scalar_one()
        for n in range(9):
            add_person(f"nouveau.{n}", f"Nouveau{n}", "Rentrée", "ELEVE", divisions=[cp],
                       created=datetime.combine(start, datetime.min.time()) + timedelta(days=3, hours=n))
        db.session.commit()
    page.goto(f"{BASE}/")
    preset = page.get_by_role("link", name="Rentrée : élèves créés depuis le 1er septembre, par classe, 8 par page")
    preset.click()
    page.wait_for_load_state()
    assert page.input_value("#pp-created-since") == start.isoformat()
    assert page.is_checked("#pp-pdf input[name=template][value=cards]")
    assert int(page.get_attribute("#pp-results .pp-counters", "data-selected")) == 9
    with page.expect_download() as download:
        page.click("#pp-pdf button[type=submit]")
    data = open(download.value.path(), "rb").read()
    texts = pages_text(data)
    # Nine cards: two sheets of 8 per page, not nine letters.
    assert len(texts) == 2 and "nouveau.8" in texts[1]


# -- 2. the accounts a campaign did not reach ---------------------------------------------------


def test_unreached_accounts_stay_restricted_until_removed(app: Flask, page: Any, smtp: SmtpServer) -> None:
    client = app.test_client()
    response = client.post(f"{BASE}/mail/send", headers={"X-Test-User": "adml_a"})
    campaign = int(response.headers["Location"].rsplit("/", 1)[-1])
    report = client.get(f"{BASE}/mail/campaigns/{campaign}", headers={"X-Test-User": "adml_a"})
    assert f'href="{BASE}/?campaign={campaign}#pp-pdf"' in report.get_data(as_text=True)
    page.goto(f"{BASE}/?campaign={campaign}#pp-pdf")
    banner = page.locator("[data-pp-restriction=campaign]")
    assert "Comptes non joints par la campagne du" in banner.inner_text()
    assert banner.inner_text().strip().split(" : ")[-1].startswith("6")
    assert int(page.get_attribute("#pp-results .pp-counters", "data-selected")) == 6
    # Another filter: the restriction stays (the six without an address are pupils and parents).
    page.check("input[name=profile][value=Student]")
    page.wait_for_function("() => new URL(location.href).searchParams.get('profile') === 'Student'")
    page.wait_for_function("() => !document.querySelector('#pp-results').hasAttribute('aria-busy')")
    assert f"campaign={campaign}" in page.url
    assert banner.is_visible()
    assert int(page.get_attribute("#pp-results .pp-counters", "data-selected")) == 4
    # Resetting the filters keeps it too: it goes only on purpose.
    page.click(".pp-reset")
    page.wait_for_function("() => !new URL(location.href).searchParams.get('profile')")
    assert f"campaign={campaign}" in page.url and banner.is_visible()
    page.click("[data-pp-remove=campaign]")
    page.wait_for_function("() => !new URL(location.href).searchParams.get('campaign')")
    page.wait_for_function("() => !document.querySelector('#pp-results').hasAttribute('aria-busy')")
    assert not banner.is_visible()
    assert int(page.get_attribute("#pp-results .pp-counters", "data-selected")) == 10


def test_the_banner_without_javascript(client: Any, school: Any, smtp: SmtpServer) -> None:
    campaign = campaign_id_of(post_mail(client, "adml_a", ""))
    page = client.get(f"{BASE}/?campaign={campaign}&profile=Student", "adml_a").get_data(as_text=True)
    assert "Comptes non joints par la campagne du" in text_of(page)
    assert f'href="{BASE}/?profile=Student"' in page  # "Retirer cette restriction"


# -- 3, 4, 5. the mail confirmation and the sample ------------------------------------------------


def test_the_confirmation_counts_recipients_only(client: Any, school: Any, app: Flask) -> None:
    with app.app_context():
        # An activated parent with an address, and a non-activated pupil without one.
        add_person("mere.activee", "Mère", "Activée", "PARENT", email="mere@example.org", activated=True)
        db.session.commit()
    body = text(client.get(f"{BASE}/mail", "adml_a"))
    # 5 recipients: marie (code), jean (code), sam (code), anne (activated), the new mother (activated).
    assert "5 courriels seront envoyés" in body
    assert "3 reçoivent leur code d'activation, 2 un rappel pour choisir un nouveau mot de passe." in body
    assert "6 comptes sélectionnés n'ont pas d'adresse électronique" in body


def test_before_sending_again_say_who_already_got_it(client: Any, school: Any, smtp: SmtpServer) -> None:
    campaign_id_of(post_mail(client, "adml_a", "profile=Teacher"))
    assert smtp.count() == 2
    body = text(client.get(f"{BASE}/mail", "adml_a"))
    assert "2 d'entre eux ont déjà reçu leurs identifiants par courriel lors d'une campagne précédente." in body
    assert f"{BASE}/mail?emailed=never" in client.get(f"{BASE}/mail", "adml_a").get_data(as_text=True)
    again = text(client.get(f"{BASE}/mail?emailed=never", "adml_a"))
    assert "2 courriels seront envoyés" in again  # marie and sam only
    campaign_id_of(post_mail(client, "adml_a", "emailed=never"))
    assert sorted(smtp.by_recipient().values()) == [1, 1, 1, 1]


def test_the_sample_never_carries_a_live_code(client: Any, school: Any, smtp: SmtpServer, app: Flask) -> None:
    assert client.post(f"{BASE}/mail/sample?profile=Relative", "adml_a").status_code == 303
    (sample,) = smtp.messages
    body = sample.parsed().get_body(("plain",)).get_content()
    assert "EXEMPLE-0000" in body and "marie.abel" in body
    with app.app_context():
        codes = {c for c in db.session.execute(sa.text("SELECT jeton FROM personne")).scalars() if c}
    assert codes and not any(code.encode() in sample.content for code in codes)


# -- 6. times in French local time -------------------------------------------------------------------


def test_times_are_shown_in_the_schools_time_zone(client: Any, school: Any, app: Flask, smtp: SmtpServer) -> None:
    campaign = campaign_id_of(post_mail(client, "adml_a", "profile=Teacher"))
    with app.app_context():
        # 12:21 UTC on 3 September is 14:21 in Paris.
        db.session.execute(sa.update(Run).where(Run.id == campaign).values(created_at=datetime(2026, 9, 3, 12, 21)))
        db.session.execute(sa.text("UPDATE publipostage_audit SET created_at = :at"), {"at": datetime(2026, 9, 3, 12, 21)})
        db.session.commit()
    for url in (f"{BASE}/mail/campaigns/{campaign}", f"{BASE}/mail/campaigns", f"{BASE}/journal", f"{BASE}/"):
        body = text(client.get(url, "adml_a"))
        assert "03/09/2026 14:21" in body, url
        assert "12:21" not in body and "UTC" not in body, url
    result = app.test_cli_runner().invoke(args=["publipostage", "status", str(campaign)])
    assert "03/09/2026 14:21" in result.output


# -- 8. options that cannot apply --------------------------------------------------------------------


def test_options_that_cannot_apply_are_refused_not_ignored(client: Any, school: Any) -> None:
    postal = post_pdf(client, "sort=class", template="cards", postal="y")
    assert postal.status_code == 400 and "1 par page" in text(postal)
    signoff = post_pdf(client, "sort=profile", signoff="y")
    assert signoff.status_code == 400 and "tri d'abord par classe" in text(signoff)
    assert post_pdf(client, "sort=class", signoff="y").status_code == 200


def test_options_that_cannot_apply_are_greyed_with_their_reason(page: Any) -> None:
    page.goto(f"{BASE}/")
    assert page.is_disabled("#pp-pdf input[name=signoff]")
    assert page.is_visible("#pp-signoff-why") and "triez d'abord par classe" in page.inner_text("#pp-signoff-why").lower()
    page.select_option("#pp-sort", "class")
    page.wait_for_function("() => !document.querySelector('#pp-pdf input[name=signoff]').disabled")
    assert not page.is_visible("#pp-signoff-why")
    assert page.is_enabled("#pp-pdf input[name=postal]")
    page.check("#pp-pdf input[name=postal]")
    page.check("#pp-pdf input[name=template][value=cards]")
    assert page.is_disabled("#pp-pdf input[name=postal]") and not page.is_checked("#pp-pdf input[name=postal]")
    assert "1 par page" in page.inner_text("#pp-postal-why")
    page.check("#pp-pdf input[name=template][value=letter]")
    assert page.is_enabled("#pp-pdf input[name=postal]") and not page.is_visible("#pp-postal-why")


def test_a_bundle_for_every_class_and_the_zip_say_what_they_need_and_print(page: Any) -> None:
    page.goto(f"{BASE}/")
    for name in ("every_class", "zip"):
        assert page.is_disabled(f"#pp-pdf input[name={name}]")
    assert page.is_visible("#pp-every-class-why") and page.is_visible("#pp-zip-why")
    assert not page.is_visible("#pp-every-class-count")
    # Then by class: a bundle for every class applies, and says what it prints; a ZIP needs class first.
    page.select_option("#pp-sort", "profile")
    page.select_option("#pp-then", "class")
    page.wait_for_function("() => !document.querySelector('#pp-pdf input[name=every_class]').disabled")
    assert not page.is_visible("#pp-every-class-why")
    # Ticked, it says what it prints, before printing.
    page.check("#pp-pdf input[name=every_class]")
    page.wait_for_function("() => !document.querySelector('#pp-every-class-count').hidden")
    assert page.inner_text("#pp-every-class-count") == "12 fiches pour 10 comptes"
    assert "every_class=y" in page.url
    assert page.is_disabled("#pp-pdf input[name=zip]") and page.is_visible("#pp-zip-why")
    page.get_by_label("CP de Mme Émery", exact=True).check()
    page.wait_for_function("() => document.querySelector('#pp-every-class-count').textContent.trim() === '3 fiches pour 3 comptes'")
    page.select_option("#pp-sort", "class")
    page.wait_for_function("() => !document.querySelector('#pp-pdf input[name=zip]').disabled")
    assert not page.is_visible("#pp-zip-why")
    # A ZIP goes to its page in the background, which offers it once ready.
    assert page.is_checked("#pp-pdf input[name=every_class]")
    page.check("#pp-pdf input[name=zip]")
    page.get_by_role("button", name="Générer en PDF").click()
    page.wait_for_url("**/pdf/jobs/*")
    link = page.get_by_role("link", name="Télécharger le fichier ZIP")
    link.wait_for(timeout=60_000)
    assert page.get_by_text("CP de Mme Émery.pdf").count() == 1
    with page.expect_download() as info:
        link.click()
    assert info.value.suggested_filename.endswith(".zip")


# -- 9. feedback where the eyes are ------------------------------------------------------------------


def test_the_summary_stays_in_sight_and_inverted_dates_are_flagged(page: Any) -> None:
    page.set_viewport_size({"width": 1366, "height": 900})
    page.goto(f"{BASE}/")
    summary = page.locator("#pp-summary")
    assert summary.inner_text().startswith("10 comptes sélectionnés, 6 sans adresse électronique, 7 non activés")
    page.fill("#pp-created-since", "2026-01-20")
    page.fill("#pp-created-before", "2026-01-10")
    page.dispatch_event("#pp-created-before", "change")
    assert page.is_visible("#pp-dates-error")
    assert page.get_attribute("#pp-created-since", "aria-invalid") == "true"
    page.fill("#pp-created-since", "")
    page.dispatch_event("#pp-created-since", "change")
    assert not page.is_visible("#pp-dates-error")
    # Scrolled down to the last filter: the summary is still in the viewport, up to date.
    page.check("input[name=profile][value=Teacher]")
    page.wait_for_function("() => document.querySelector('#pp-summary').textContent.startsWith('2 ')")
    page.locator(".pp-filter-buttons").scroll_into_view_if_needed()
    page.mouse.wheel(0, 600)
    box = summary.bounding_box()
    assert box is not None and 0 <= box["y"] < 900


def test_the_list_does_not_scroll_sideways_at_1024_px(app: Flask, page: Any) -> None:
    with app.app_context():
        division = Division(libelle="CM2 de Mme Marie-Christine Delacroix-Beauregard", ecole="A")
        for n in range(3):
            login = f"marie-christine.delacroix-beauregard.{n}"
            add_person(login, "Marie-Christine", "Delacroix-Beauregard", "ELEVE", divisions=[division],
                       email=f"{login}.adresse.tres.longue@etablissement-scolaire.example.org", token=f"K{n:07d}")
        db.session.commit()
        ref = division.ref
    page.set_viewport_size({"width": 1024, "height": 768})
    page.goto(f"{BASE}/?class={ref}")
    overflow = page.evaluate(
        "() => { const w = document.querySelector('#pp-results .pp-table-wrap');"
        " return w.scrollWidth - w.clientWidth; }"
    )
    assert overflow <= 0, overflow




# -- 7. a journal a person can read -----------------------------------------------------------------


def test_the_journal_reads_like_a_journal(client: Any, school: Any, app: Flask, smtp: SmtpServer,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from . import hosts

    monkeypatch.setitem(hosts.ROLES, "leroy", {**hosts.ROLES["adml_a"], "actor": "user:10", "name": "Mme Leroy (leroy)"})
    cp = school.cp.ref
    client.get(f"{BASE}/export.csv?profile=Relative&class={cp}&email=with", "leroy").get_data()
    assert post_pdf(client, "profile=Teacher&sort=class", "leroy", template="cards").status_code == 200
    campaign = campaign_id_of(post_mail(client, "leroy", "profile=Teacher"))
    body = text(client.get(f"{BASE}/journal", "adml_a"))
    assert "Mme Leroy (leroy)" in body and "user:10" not in body
    assert "Parents · CP de Mme Émery · Avec courriel" in body
    assert "Cartes, 8 par page" in body and "Export CSV" in body and "Envoi par courriel" in body
    assert f"Campagne {campaign}" in body and "Fait" in body
    assert " ok " not in f" {body} " and "job" not in body
    raw = client.get(f"{BASE}/journal", "adml_a").get_data(as_text=True)
    assert f'href="{BASE}/mail/campaigns/{campaign}"' in raw
    # Filtered by output and day; exported as CSV with the same words.
    only_csv = text(client.get(f"{BASE}/journal?output=csv", "adml_a"))
    assert "Export CSV" in only_csv and "Cartes, 8 par page" not in only_csv
    with app.app_context():  # the school's day, not the machine's (they differ an hour a day in Paris)
        today = local_time(datetime.now(timezone.utc)).date().isoformat()
    assert "Cartes" in text(client.get(f"{BASE}/journal?since={today}&until={today}", "adml_a"))
    assert "Aucune entrée pour ces critères." in text(client.get(f"{BASE}/journal?until=2020-01-01", "adml_a"))
    assert client.get(f"{BASE}/journal?since=2020-13-01", "adml_a").status_code == 400
    assert client.get(f"{BASE}/journal?output=fax", "adml_a").status_code == 400
    exported = client.get(f"{BASE}/journal.csv?output=csv", "adml_a")
    assert exported.status_code == 200 and exported.mimetype == "text/csv"
    lines = exported.get_data(as_text=True).lstrip("\ufeff").splitlines()
    assert lines[0].startswith("Date;Par;Sortie;Sélection") and len(lines) == 2
    assert "Mme Leroy (leroy);Export CSV;Parents · CP de Mme Émery · Avec courriel;1;Fait" in lines[1]


def test_the_journal_has_pages(client: Any, school: Any) -> None:
    for _ in range(55):
        client.get(f"{BASE}/export.csv?profile=Teacher", "adml_a").get_data()
    first = client.get(f"{BASE}/journal", "adml_a").get_data(as_text=True)
    assert first.count("<tr>") == 1 + 50 and "Page 1 sur 2" in text_of(first)
    second = client.get(f"{BASE}/journal?page=2", "adml_a").get_data(as_text=True)
    assert second.count("<tr>") == 1 + 5


# -- 17. the HTTP reference ---------------------------------------------------------------------------


def test_the_readme_lists_every_route_and_parameter(app: Flask) -> None:
    from pathlib import Path

    from flask_publipostage.selection import FILTERS

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    reference = readme.split("## HTTP reference", 1)[1].split("\n## ", 1)[0]
    prefix = app.config["PUBLIPOSTAGE_URL_PREFIX"]
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith("publipostage.") and rule.endpoint != "publipostage.static":
            path = rule.rule[len(prefix):] or "/"
            path = path.replace("<job_id>", "<token>").replace("<campaign_id>", "<id>")
            assert f"| `{path}` |" in reference, path
    for param, found in FILTERS.items():
        row = next((line for line in reference.splitlines() if f"`{param}`" in line), "")
        assert row, param
        for value, _label in found.choices:
            assert f"`{value}`" in row, (param, value)


def test_the_preview_as_json(client: Any, school: Any, app: Flask) -> None:
    app.config["PUBLIPOSTAGE_PAGE_SIZE"] = 4
    first = client.get(f"{BASE}/preview.json?profile=Student&profile=Relative&sort=class", "adml_a")
    assert first.status_code == 200 and first.headers["Cache-Control"] == "no-store"
    data = first.get_json()
    assert data["counters"] == {"selected": 6, "without_email": 5, "not_activated": 4}
    assert (data["page"], data["pages"]) == (1, 2)
    assert [a["login"] for a in data["accounts"]] == ["marie.abel", "zoe.abel", "lucas.etienne", "paul.etienne"]
    assert data["accounts"][2]["activation_code"] == "CODE-lucas.etienne"
    assert data["accounts"][2]["group"] == "CE2 de Mme Élise"
    assert data["accounts"][0]["group"] == "CP de Mme Émery"
    assert data["accounts"][0]["children"][0]["classes"] == ["CP de Mme Émery"]
    second = client.get(data["links"]["next"], "adml_a").get_json()
    assert [a["login"] for a in second["accounts"]] == ["elodie.zidane", "nina.sansclasse"]
    # Codes only for those who may print; errors in French, as JSON.
    assert client.get(f"{BASE}/preview.json?profile=Student&activation=inactive", "viewer_a").get_json()["accounts"][0]["activation_code"] is None
    bad = client.get(f"{BASE}/preview.json?activation=maybe", "adml_a")
    assert bad.status_code == 400 and bad.get_json()["field"] == "activation" and "Activation" in bad.get_json()["error"]
    assert client.get(f"{BASE}/preview.json", None).status_code == 401


# -- 13. French text, read by a French admin ----------------------------------------------------------


def test_letters_and_emails_say_the_same_steps_in_good_french(client: Any, school: Any, smtp: SmtpServer, app: Flask) -> None:
    from .test_pdf_support import pdftotext

    app.config["PUBLIPOSTAGE_PDF_QR_CODE"] = True
    letters = " ".join(pdftotext(post_pdf(client, "profile=Teacher").data).split())
    assert "charte d'utilisation de l'ENT" in letters and "de ENT" not in letters
    assert "Rendez-vous sur la page « Mot de passe oublié », https://ent.test.example/auth/forgot, ou scannez le QR code." in letters
    assert "). (" not in letters
    campaign_id_of(post_mail(client, "adml_a", "profile=Teacher"))
    bodies = {m.rcpt_tos[0]: m.parsed() for m in smtp.messages}
    jean = bodies["jean.prof@example.org"].get_body(("plain",)).get_content()
    assert "5. Lisez et acceptez la charte d'utilisation de l'ENT." in jean  # the letter's five steps
    anne = bodies["anne.prof@example.org"]
    assert "mot de passe" in anne["Subject"] and "identifiant et mot de passe" not in anne["Subject"]


def test_counts_use_plural_forms(client: Any, school: Any, smtp: SmtpServer, app: Flask) -> None:
    from flask_publipostage.views import time_left_label

    campaign = campaign_id_of(post_mail(client, "adml_a", ""))
    pages = [client.get(url, "adml_a") for url in (f"{BASE}/", f"{BASE}/mail", f"{BASE}/mail/campaigns/{campaign}")]
    for page in pages:
        assert "(s)" not in text(page).replace("Classe(s)", ""), page.request.path
    assert "4 envoyés, 0 en échec, 6 ignorés (sans courriel)." in text(pages[2])
    assert "courriels à envoyer" in text(pages[0]) and "comptes sans adresse (ignorés)" in text(pages[0])
    with app.test_request_context():
        assert time_left_label(0) == "moins d'une minute"  # never "environ 0 s restantes"
    result = app.test_cli_runner().invoke(args=["publipostage", "send", "--profile", "Teacher", "--dry-run"])
    assert "2 comptes sélectionnés : 2 courriels à envoyer, 0 compte sans adresse (ignoré)." in result.output
