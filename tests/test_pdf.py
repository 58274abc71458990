"""PDF letters and cards generated in the request, read back with pypdf and
pdftotext: order, contents, groups, fonts, escaping, fitting, access, audit."""

from __future__ import annotations

import math
from typing import Any

import pytest

from flask_publipostage.access import Scope
from flask_publipostage.audit import AuditEntry
from flask_publipostage.recipients import iter_recipients
from flask_publipostage.selection import Selection

from .hosts import Division, add_person, db
from .test_pdf_support import (
    URL,
    add_class_of,
    count_word,
    page_count,
    pages_text,
    pdftotext,
    post_pdf,
    word_boxes,
)

SCOPE_A = None


def _order(app: Any, query: dict[str, Any]) -> list[Any]:
    """The selection's own order, as the preview shows it, for school A's admin."""
    import sqlalchemy as sa

    from .hosts import Personne

    scope = Scope(
        actor="adml_a",
        users=sa.and_(Personne.ecole == "A", Personne.super_admin.is_(False)),
        classes=Division.ecole == "A",
        key="ecole:A",
    )
    return list(iter_recipients(Selection.from_args(query, scope, extra_params=())))


def _pdf(response: Any) -> bytes:
    assert response.status_code == 200, response.get_data(as_text=True)[:800]
    assert response.mimetype == "application/pdf"
    return response.data


def test_letters_one_per_account_in_order(app_ctx: Any, client: Any, school: Any) -> None:
    data = _pdf(post_pdf(client, ""))
    recipients = _order(app_ctx, {})
    texts = pages_text(data)
    assert len(texts) == len(recipients) == 10
    assert "root.admin" not in "".join(texts)  # a super admin never prints for a local admin
    for text, recipient in zip(texts, recipients):
        assert count_word(text, recipient.login) == 1, recipient.login
        if recipient.activated:
            assert "Informations sur mon compte" in text
            assert "Mot de passe oublié" in text
            assert "https://ent.test.example/auth/forgot" in text
            assert "Code d'activation" not in text and "CODE-" not in text
        else:
            assert "Ma première connexion" in text
            assert recipient.activation_code in text
            assert "https://ent.test.example/auth/activation" in text
            assert "Acceptez" in text or "acceptez" in text
    everything = "\n".join(texts)
    for recipient in recipients:
        assert count_word(everything, recipient.login) == 1
    # "Parent de" each child, with the child's class.
    marie = texts[[r.login for r in recipients].index("marie.abel")]
    assert "Parent de" in marie and "Zoé Abel (CP de Mme Émery)" in marie
    assert "Élodie Zidane (CM1 de M. Zola)" in marie


def test_cards_pages_per_group_and_headers(app_ctx: Any, client: Any, school: Any) -> None:
    add_class_of("CE1 Grand", 19, prefix="ce")
    db.session.commit()
    data = _pdf(post_pdf(client, "sort=class", template="cards"))
    recipients = _order(app_ctx, {"sort": "class"})
    groups: dict[str, int] = {}
    for r in recipients:
        groups[r.group] = groups.get(r.group, 0) + 1
    texts = pages_text(data)
    assert len(texts) == sum(math.ceil(n / 8) for n in groups.values())
    page = 0
    for name, size in groups.items():
        sheets = math.ceil(size / 8)
        label = name
        for k in range(sheets):
            assert label in texts[page + k], (label, k)
            assert f"feuille {k + 1}/{sheets}" in texts[page + k]
        assert f"{size} compte" in texts[page]
        page += sheets
    everything = "\n".join(texts)
    positions = [everything.index(r.login + "\n") if r.login + "\n" in everything else everything.index(r.login) for r in recipients]
    assert positions == sorted(positions)
    for r in recipients:
        assert count_word(everything, r.login) == 1


def test_group_sheets_and_signoff(app_ctx: Any, client: Any, school: Any) -> None:
    add_class_of("CE1 Grand", 23, prefix="ce")
    db.session.commit()
    recipients = _order(app_ctx, {"sort": "class"})
    data = _pdf(post_pdf(client, "sort=class", signoff="y"))
    texts = pages_text(data)
    groups: list[tuple[str, list[Any]]] = []
    for r in recipients:
        if not groups or groups[-1][0] != r.group:
            groups.append((r.group, []))
        groups[-1][1].append(r)
    signoff_pages = sum(math.ceil(len(m) / 20) for g, m in groups if g != "Sans classe")
    assert len(texts) == len(recipients) + signoff_pages
    page = 0
    for name, members in groups:
        if name != "Sans classe":
            for _k in range(math.ceil(len(members) / 20)):
                assert "Liste d'émargement" in texts[page] and name in texts[page]
                for column in ("Nom", "Prénom", "Profil", "Identifiant", "Signature"):
                    assert column in texts[page]
                page += 1
            listed = "\n".join(texts[page - math.ceil(len(members) / 20) : page])
            for member in members:
                assert count_word(listed, member.login) == 1
        for index, member in enumerate(members):
            assert count_word(texts[page], member.login) == 1
            assert f"{index + 1}/{len(members)}" in texts[page]
            page += 1
    # A parent appears once, under the first class of their children.
    # (School order of her children's classes: "CP de Mme Émery" before "CM1 de M. Zola").
    by_group = {g: [m.login for m in members] for g, members in groups}
    assert "marie.abel" in by_group["CP de Mme Émery"]
    assert "marie.abel" not in by_group["CM1 de M. Zola"]


SPECIAL_NAMES = [
    ("Nguyễn Thị", "Ánh"),
    ("Łukasz", "Żółć"),
    ("Şükrü", "İnce"),
    ("Jiří", "Dvořák"),
    ("Ștefan", "Țurcanu"),
    ("Œdipe", "L’Haÿ-Cœur"),
    ("Αλέξανδρος", "Дмитрий"),
]


@pytest.mark.parametrize("template", ["letter", "cards"])
def test_every_name_prints(app_ctx: Any, client: Any, template: str) -> None:
    cls = Division(libelle="CM2 Ünïcödé", ecole="A")
    db.session.add(cls)
    for index, (first, last) in enumerate(SPECIAL_NAMES):
        add_person(f"special{index}", first, last, "ELEVE", divisions=[cls], token=f"K{index}O0l1I")
    db.session.commit()
    data = _pdf(post_pdf(client, "", template=template))
    extracted = "\n".join(pages_text(data))
    poppler = pdftotext(data)
    for first, last in SPECIAL_NAMES:
        assert first in extracted and last in extracted, (first, last)
        assert first in poppler and last in poppler, (first, last)
    for index in range(len(SPECIAL_NAMES)):
        assert f"K{index}O0l1I" in extracted  # codes in the mono font, 0/O and 1/l/I kept
    assert "■" not in extracted


def test_user_data_is_escaped(app_ctx: Any, client: Any) -> None:
    add_person("weird1", "<pdf:nextpage>", "Balise", "ELEVE")
    add_person("weird2", "Image", '<img src="file:///etc/passwd">', "ELEVE")
    add_person("weird3", "<pdf:barcode value='x'>", "</div></body>", "ELEVE")
    db.session.commit()
    for template in ("letter", "cards"):
        data = _pdf(post_pdf(client, "", template=template))
        assert page_count(data) == (3 if template == "letter" else 1)
        text = "\n".join(pages_text(data))
        assert "<pdf:nextpage>" in text
        assert '<img src="file:///etc/passwd">' in text
        assert "root:" not in text


def test_long_names_and_many_children_stay_inside(app_ctx: Any, client: Any) -> None:
    long_name = ("Marie-Chantal de la Tour d’Auvergne " * 4)[:120]
    classes = [Division(libelle=f"Classe numéro {i} de Mme Longuenom-Interminable", ecole="A") for i in range(5)]
    db.session.add_all(classes)
    kids = [
        add_person(f"kid{i}", f"Enfant{i} Prénom-Composé-Très-Long", "Descendant-Nombreux", "ELEVE", divisions=[classes[i]])
        for i in range(5)
    ]
    add_person("longparent", long_name, long_name, "PARENT", enfants=kids, token="LONGCODE")
    add_person("manyclasses", "Prof", "Partout", "PROF", divisions=classes, token="PROFCODE")
    add_person("x" * 40, "W" * 120, "W" * 120, "ELEVE", token="WIDECODE")
    db.session.commit()
    n = 8

    letters = _pdf(post_pdf(client, ""))
    assert page_count(letters) == n  # one page each, whatever the data
    for words in word_boxes(letters):
        for w in words:
            assert 16 <= w.x0 and w.x1 <= 194, w
            assert w.y1 <= 290, w
    text = "\n".join(pages_text(letters))
    assert "LONGCODE" in text and "PROFCODE" in text and "WIDECODE" in text
    assert "…" in text

    cards = _pdf(post_pdf(client, "", template="cards"))
    assert page_count(cards) == 1
    (words,) = word_boxes(cards)
    # Every card is in its own cell of the 2 x 4 grid, and nothing crosses a cut line.
    labels = [w for w in words if w.text == "Identifiant"]
    assert len(labels) == n
    cells = {(int(w.x0 > 105), int((w.y0 - 14) // 67)) for w in labels}
    assert len(cells) == n
    # Each card starts with the ENT's name: those lines give the rows' tops.
    tops = sorted({round(w.y0, 1) for w in words if w.text == "ENT" and w.x0 > 9})
    assert len(tops) == 4
    bottoms = [*tops[1:], 291.0]
    for w in words:
        if w.y0 < tops[0] - 1:
            continue  # the page header
        column_right = 105 if w.x0 < 105 else 202
        assert w.x1 <= column_right + 0.5, w
        row = max(i for i, top in enumerate(tops) if w.y0 >= top - 0.5)
        assert w.y1 <= bottoms[row] - 2, w
    for code in ("LONGCODE", "PROFCODE", "WIDECODE"):
        assert code in "\n".join(pages_text(cards))


def test_postal_letters_window_and_missing_list(app_ctx: Any, client: Any, school: Any) -> None:
    app_ctx.config["PUBLIPOSTAGE_SCHOOL_ADDRESS"] = ("École A", "1 rue de l'École", "75011 Paris")
    data = _pdf(post_pdf(client, "profile=Relative&profile=Student", postal="y"))
    recipients = _order(app_ctx, {"profile": ["Relative", "Student"]})
    with_address = [r for r in recipients if r.postal_address]
    without = [r for r in recipients if not r.postal_address]
    assert with_address and without
    texts = pages_text(data)
    assert len(texts) == len(recipients) + 1
    boxes = word_boxes(data)
    for index, recipient in enumerate(recipients):
        if recipient.postal_address:
            street = [w for w in boxes[index] if w.text == "Lilas"]
            assert street, recipient.login
            for w in street:  # inside a DL envelope's window, on the right
                assert 100 <= w.x0 and w.x1 <= 200 and 45 <= w.y0 and w.y1 <= 95, w
        assert "1 rue de l'École" in texts[index] or "rue de l" in texts[index]
    last = texts[-1]
    assert "Comptes sans adresse postale" in last
    for recipient in without:
        assert count_word(last, recipient.login) == 1
    for recipient in with_address:
        assert count_word(last, recipient.login) == 0


def test_audit_and_access(app_ctx: Any, client: Any, school: Any) -> None:
    assert post_pdf(client, "", None).status_code == 401
    assert post_pdf(client, "", "viewer_a").status_code == 403
    assert post_pdf(client, "", "teacher").status_code == 403
    bad = post_pdf(client, "", template="sixteen")
    assert bad.status_code == 400
    assert "Modèle de publipostage PDF invalide" in bad.get_data(as_text=True)
    assert post_pdf(client, "sort=nope").status_code == 400
    outside = school.other_school_class.ref
    assert post_pdf(client, f"class={outside}").status_code == 403
    assert db.session.query(AuditEntry).count() == 0  # refused: no trace, no side effect

    response = post_pdf(client, "profile=Student&sort=class", template="cards")
    assert response.status_code == 200
    assert response.headers["Content-Disposition"].startswith('attachment; filename="publipostage_ecole-a_')
    entry = db.session.query(AuditEntry).filter_by(action="pdf").one()  # its download has a row too
    assert (entry.action, entry.template, entry.count, entry.actor) == ("pdf", "cards", 4, "adml_a")
    assert "CODE-" not in entry.selection and entry.selection_args["profile"] == ["Student"]


@pytest.fixture
def csrf_config() -> dict[str, Any]:
    return {"WTF_CSRF_ENABLED": True}


class TestCsrf:
    @pytest.fixture
    def app_config(self) -> dict[str, Any]:
        return {"WTF_CSRF_ENABLED": True}

    def test_post_without_token_is_refused(self, app_ctx: Any, client: Any, school: Any) -> None:
        response = post_pdf(client, "")
        assert response.status_code == 400
        page = client.get(f"{URL}/", "adml_a").get_data(as_text=True)
        assert 'name="csrf_token"' in page and "Générer en PDF" in page
        assert db.session.query(AuditEntry).count() == 0


def test_action_fragment_on_the_page(app_ctx: Any, client: Any, school: Any) -> None:
    page = client.get(f"{URL}/?sort=class&class={school.cp.ref}", "adml_a").get_data(as_text=True)
    assert "Modèle de publipostage PDF" in page and "1 par page" in page and "8 par page" in page
    assert f"/pdf?sort=class&amp;class={school.cp.ref}" in page or f"/pdf?class={school.cp.ref}&amp;sort=class" in page
    assert "émargement" in page
    viewer = client.get(f"{URL}/", "viewer_a").get_data(as_text=True)
    assert "Générer en PDF" not in viewer


def test_a_bare_post_generates_nothing(app_ctx: Any, client: Any, school: Any) -> None:
    response = client.post(f"{URL}/pdf", "adml_a", data={})
    assert response.status_code == 400
    assert "Modèle de publipostage PDF invalide" in response.get_data(as_text=True)
    assert db.session.query(AuditEntry).count() == 0
