"""The console's own directory: schools, accounts and classes.

These are the host's names (French, as in the console's database); the extension
only knows them through the field mapping given to ``init_app``.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from flask_login import UserMixin
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import Mapped, column_property, mapped_column, relationship
from werkzeug.security import check_password_hash

db = SQLAlchemy()

PROFILS = ("Teacher", "Student", "Relative", "Personnel", "Guest")
TYPES_ETABLISSEMENT = ("école", "collège")

utilisateur_classe = sa.Table(
    "utilisateur_classe",
    db.metadata,
    sa.Column("utilisateur_id", sa.ForeignKey("utilisateur.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("classe_id", sa.ForeignKey("classe.id", ondelete="CASCADE"), primary_key=True),
    # The primary key serves user -> classes; this one serves class -> members.
    sa.Index("ix_utilisateur_classe_classe", "classe_id", "utilisateur_id"),
)

lien_parent_enfant = sa.Table(
    "lien_parent_enfant",
    db.metadata,
    sa.Column("parent_id", sa.ForeignKey("utilisateur.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("enfant_id", sa.ForeignKey("utilisateur.id", ondelete="CASCADE"), primary_key=True),
    # Parents of a class are found from the pupils: child -> parents must be indexed.
    sa.Index("ix_lien_parent_enfant_enfant", "enfant_id", "parent_id"),
)


class Etablissement(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "etablissement"
    __table_args__ = (sa.CheckConstraint("type IN ('école', 'collège')", name="ck_etablissement_type"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    nom: Mapped[str] = mapped_column(sa.String(200))
    uai: Mapped[str] = mapped_column(sa.String(8), unique=True)
    type: Mapped[str] = mapped_column(sa.String(20))
    adresse_ligne1: Mapped[str | None] = mapped_column(sa.String(200))
    code_postal: Mapped[str | None] = mapped_column(sa.String(10))
    ville: Mapped[str | None] = mapped_column(sa.String(100))

    classes: Mapped[list[Classe]] = relationship(back_populates="etablissement", order_by="Classe.nom")

    def __repr__(self) -> str:
        return f"<Etablissement {self.uai} {self.nom!r}>"


class Classe(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "classe"

    id: Mapped[int] = mapped_column(primary_key=True)
    nom: Mapped[str] = mapped_column(sa.String(100))
    niveau: Mapped[str | None] = mapped_column(sa.String(20))
    etablissement_id: Mapped[int] = mapped_column(sa.ForeignKey("etablissement.id"), index=True)

    etablissement: Mapped[Etablissement] = relationship(back_populates="classes")
    membres: Mapped[list[Utilisateur]] = relationship(secondary=utilisateur_classe, back_populates="classes")

    def __repr__(self) -> str:
        return f"<Classe {self.nom!r}>"


class Utilisateur(UserMixin, db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "utilisateur"
    __table_args__ = (
        sa.CheckConstraint(
            "profil IN ('Teacher', 'Student', 'Relative', 'Personnel', 'Guest')",
            name="ck_utilisateur_profil",
        ),
        sa.Index("ix_utilisateur_etablissement_profil", "etablissement_id", "profil"),
        sa.Index("ix_utilisateur_nom_prenom", "nom", "prenom"),
        # A code names one account across every school (NULLs, the activated accounts, repeat).
        sa.Index("ix_utilisateur_code_activation", "code_activation", unique=True),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    login: Mapped[str] = mapped_column(sa.String(100), unique=True)
    prenom: Mapped[str] = mapped_column(sa.String(100))
    nom: Mapped[str] = mapped_column(sa.String(100))
    profil: Mapped[str] = mapped_column(sa.String(20))
    courriel: Mapped[str | None] = mapped_column(sa.String(254))
    #: NULL once the account is activated.
    code_activation: Mapped[str | None] = mapped_column(sa.String(20))
    #: The last moment the activation code works (naive UTC); NULL: no limit.
    code_activation_expire_le: Mapped[datetime | None] = mapped_column(sa.DateTime)
    #: Signs in with ÉduConnect: no activation code, no password of the console.
    federe: Mapped[bool] = mapped_column(default=False)
    #: Blocked by an admin: may not sign in.
    bloque: Mapped[bool] = mapped_column(default=False)
    #: Naive UTC.
    date_creation: Mapped[datetime] = mapped_column(sa.DateTime)
    etablissement_id: Mapped[int | None] = mapped_column(sa.ForeignKey("etablissement.id"))
    is_adml: Mapped[bool] = mapped_column(default=False)
    is_super_admin: Mapped[bool] = mapped_column(default=False)
    mot_de_passe_hash: Mapped[str | None] = mapped_column(sa.String(255))
    adresse_ligne1: Mapped[str | None] = mapped_column(sa.String(200))
    adresse_code_postal: Mapped[str | None] = mapped_column(sa.String(10))
    adresse_ville: Mapped[str | None] = mapped_column(sa.String(100))

    #: "37000 Tours", the second line of a postal address (NULL without an address).
    adresse_cp_ville = column_property(adresse_code_postal + " " + adresse_ville)

    etablissement: Mapped[Etablissement | None] = relationship()
    classes: Mapped[list[Classe]] = relationship(
        secondary=utilisateur_classe, back_populates="membres", order_by="Classe.nom"
    )
    enfants: Mapped[list[Utilisateur]] = relationship(
        secondary=lien_parent_enfant,
        primaryjoin=lambda: Utilisateur.id == lien_parent_enfant.c.parent_id,
        secondaryjoin=lambda: Utilisateur.id == lien_parent_enfant.c.enfant_id,
        back_populates="parents",
        order_by=lambda: (Utilisateur.nom, Utilisateur.prenom),
    )
    parents: Mapped[list[Utilisateur]] = relationship(
        secondary=lien_parent_enfant,
        primaryjoin=lambda: Utilisateur.id == lien_parent_enfant.c.enfant_id,
        secondaryjoin=lambda: Utilisateur.id == lien_parent_enfant.c.parent_id,
        back_populates="enfants",
    )

    @property
    def nom_complet(self) -> str:
        return f"{self.prenom} {self.nom}"

    @property
    def est_admin(self) -> bool:
        return bool(self.is_super_admin or self.is_adml)

    def verifier_mot_de_passe(self, mot_de_passe: str) -> bool:
        if self.bloque:
            return False
        # Accounts created by imports have no console password at all.
        if not self.mot_de_passe_hash:
            return False
        return check_password_hash(self.mot_de_passe_hash, mot_de_passe)

    def __repr__(self) -> str:
        return f"<Utilisateur {self.login}>"


class CodeRenouvellement(db.Model):  # type: ignore[name-defined,misc]
    """A renewal code issued for an account (see ``renouvellement.py``): only its
    keyed digest is kept, the code itself is printed on the letter."""

    __tablename__ = "code_renouvellement"

    utilisateur_id: Mapped[int] = mapped_column(sa.ForeignKey("utilisateur.id", ondelete="CASCADE"), primary_key=True)
    empreinte: Mapped[str] = mapped_column(sa.String(64))
    #: Naive UTC.
    valable_jusqu_au: Mapped[datetime] = mapped_column(sa.DateTime)
    cree_le: Mapped[datetime] = mapped_column(sa.DateTime)
