"""The ``flask publipostage`` command group, and what its commands share.

Without a request there is no logged-in admin: a command runs as the actor and
perimeter given on its command line (``--as-actor``, ``--scope-key``), with a global
scope unless the host registered ``extras["cli_scope"]``, a callable
``(actor, scope_key) -> Scope`` restricting the accounts as the console would. The
selection options are made from the table of filters, so every filter of the page
is an option of every command that selects accounts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import click
import sqlalchemy as sa
from flask.cli import AppGroup, with_appcontext
from flask_babel import force_locale

from . import history
from .access import Scope
from .config import config_value
from .i18n import gettext as _
from .i18n import ngettext
from .models import metadata
from .runs import core, files
from .selection import FILTERS, Selection, SelectionError
from .state import state


def selection_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """One option per filter of the table (``--class`` repeatable, ``--activation``
    a choice...), plus who runs the command. Values are checked by the selection,
    as the page's are: a bad one gets the page's French message."""
    for param in reversed(list(FILTERS)):
        found = FILTERS[param]
        kwargs: dict[str, Any] = {"help": found.help or str(found.label)}
        if found.multiple:
            kwargs["multiple"] = True
        if found.choices:
            kwargs.update(metavar="[" + "|".join(v for v, _label in found.choices) + "]", default=found.default,
                          show_default=True)
        command = click.option(f"--{param.replace('_', '-')}", f"opt_{param}", **kwargs)(command)
    command = click.option("--as-actor", default="cli", show_default=True, help="Who the journal and the audit record.")(command)
    command = click.option("--scope-key", default="*", show_default=True,
                           help="Perimeter the run belongs to ('*': super admins).")(command)
    command = click.option("--school-name", default="", help="School name printed in the outputs.")(command)
    return command


def selection_from_options(options: dict[str, Any]) -> tuple[Selection, Scope]:
    """The selection the options of :func:`selection_options` describe (removed
    from ``options``); a French :class:`click.ClickException` when they are bad."""
    scope = cli_scope(options.pop("as_actor"), options.pop("scope_key"), options.pop("school_name"))
    args: dict[str, list[str]] = {}
    for param in FILTERS:
        value = options.pop(f"opt_{param}", None)
        values = list(value) if isinstance(value, (tuple, list)) else ([] if value is None else [str(value)])
        if values and values != [FILTERS[param].default]:
            args[param] = values
    try:
        return Selection.from_args(args, scope, extra_params=()), scope
    except SelectionError as exc:
        raise click.ClickException(exc.message) from None


def cli_scope(actor: str, scope_key: str, school_name: str = "") -> Scope:
    factory = state().extras.get("cli_scope")
    if callable(factory):
        scope = factory(actor, scope_key)
        if scope is None:
            raise click.ClickException(_("Unknown perimeter “%(key)s”.", key=scope_key))
        return scope  # type: ignore[no-any-return]
    return Scope(actor=actor, key=scope_key, school_name=school_name)


def follow(run_id: int, line: Callable[[core.Progress], str], label: str = "", every: float = 1.0) -> core.Progress:
    """Wait for the run to end, then print ``line(progress)``. On a terminal a
    progress bar (Click's) counts its weight meanwhile (a PDF's pages, a campaign's
    emails) with ``line(progress)`` beside it; elsewhere (a log) ``label`` is
    printed once."""
    session = state().session
    progress = _progress_of(run_id)
    if not progress.finished:
        with click.progressbar(
            length=max(1, progress.counts.weight_total),
            label=label,
            item_show_func=lambda shown: line(shown) if shown is not None else None,
            show_eta=False,
        ) as bar:
            while not progress.finished:
                session.rollback()
                time.sleep(every)
                progress = _progress_of(run_id)
                # A PDF's weights are known once it is planned.
                bar.length = max(1, progress.counts.weight_total)
                bar.update(max(0, progress.counts.weight_done - bar.pos), progress)
    click.echo(line(progress))
    return progress


def _progress_of(run_id: int) -> core.Progress:
    state().session.expire_all()
    run = core.get(run_id)
    assert run is not None
    return core.progress(run)


@click.command("purge-files")
@with_appcontext
def purge_files() -> None:
    """Delete downloaded or expired PDF files and the work files of runs that are over."""
    with force_locale("fr"):
        removed = files.purge()
        click.echo(ngettext("%(num)d file deleted.", "%(num)d files deleted.", removed))


@click.command("purge-history")
@with_appcontext
def purge_history() -> None:
    """Delete the distribution history older than PUBLIPOSTAGE_HISTORY_DAYS: the
    runs over since then and their items (run it daily, from cron)."""
    with force_locale("fr"):
        removed = history.purge()
        click.echo(
            ngettext(
                "%(num)d history item older than %(days)d days deleted.",
                "%(num)d history items older than %(days)d days deleted.",
                removed,
                days=int(config_value("HISTORY_DAYS")),
            )
        )


#: Tables of version 0.1, read once by ``upgrade-db``.
OLD_TABLES = ("publipostage_campaign", "publipostage_delivery", "publipostage_campaign_perimeter")
OLD_TRANSIENT = ("publipostage_pdf_job", "publipostage_pdf_job_item", "publipostage_pdf_job_perimeter")


#: Columns the log gained with the journal of every run's lifecycle.
AUDIT_RUN_COLUMNS = ("run_id INTEGER", "audience VARCHAR(20)", "file_name VARCHAR(200)")


@click.command("upgrade-db")
@with_appcontext
def upgrade_db() -> None:
    """Bring the extension's tables of an earlier version up to date: copy the
    campaigns of version 0.1 (their recipients become the items of runs, with the
    same ids) into the tables of runs (PDF jobs of 0.1 are not kept: their files
    expired within the hour); let a PDF hold an account in several bundles; give
    the items what the distribution history reads; create the tables and the
    indexes of the items added since (the saved selections, the latest code's)."""
    with force_locale("fr"):
        _upgrade()


#: Before a bundle for every class, one item per account and run.
OLD_ITEM_CONSTRAINT = "uq_publipostage_run_item_user"
OLD_ITEM_POSITION = "ix_publipostage_run_item_position"


def _upgrade() -> None:
    engine = core.engine()
    inspector = sa.inspect(engine)
    existing = set(inspector.get_table_names())
    # Tables a newer version added (the saved selections): created as init_app
    # creates them, for a host that does not let it (``CREATE_TABLES = False``).
    missing = [table for table in metadata.sorted_tables if table.name not in existing]
    if missing:
        metadata.create_all(engine, tables=missing)
        click.echo(_("Tables created: %(names)s.", names=", ".join(table.name for table in missing)))
        inspector = sa.inspect(engine)
        existing = set(inspector.get_table_names())
    audit_columns = {c["name"] for c in inspector.get_columns("publipostage_audit")} if "publipostage_audit" in existing else set()
    if audit_columns and "actor_name" not in audit_columns:
        with engine.begin() as conn:
            conn.execute(sa.text("ALTER TABLE publipostage_audit ADD COLUMN actor_name VARCHAR(200)"))
        click.echo(_("The log now records the name of each admin."))
    if core.item_t.name in existing and _history_columns(engine, inspector):
        click.echo(_("The items now record when the credentials left, for the distribution history."))
        inspector = sa.inspect(engine)  # a fresh one: the indexes changed
    if core.item_t.name in existing:
        constraints = {c["name"] for c in inspector.get_unique_constraints(core.item_t.name)}
        if OLD_ITEM_CONSTRAINT in constraints:
            _items_per_bundle(engine, {i["name"] for i in inspector.get_indexes(core.item_t.name)})
            click.echo(_("A PDF may now hold an account in several bundles (a bundle for every class)."))
    item_columns = {c["name"] for c in inspector.get_columns("publipostage_run_item")} if "publipostage_run_item" in existing else set()
    if item_columns and "renewal_issued_at" not in item_columns:
        timestamp = sa.DateTime().compile(dialect=engine.dialect)
        with engine.begin() as conn:
            conn.execute(sa.text(f"ALTER TABLE publipostage_run_item ADD COLUMN renewal_issued_at {timestamp}"))
        click.echo(_("The runs now record when a renewal code was issued."))
    if audit_columns and "run_id" not in audit_columns:
        with engine.begin() as conn:
            for column in AUDIT_RUN_COLUMNS:
                conn.execute(sa.text(f"ALTER TABLE publipostage_audit ADD COLUMN {column}"))
            # The run a row is about was written in its result ("run 12").
            conn.execute(sa.text(
                "UPDATE publipostage_audit SET run_id = CAST(SUBSTR(result, 5) AS INTEGER), result = 'ok' "
                "WHERE result LIKE 'run %'"
            ))
            conn.execute(sa.text("CREATE INDEX IF NOT EXISTS ix_publipostage_audit_run_id ON publipostage_audit (run_id)"))
        click.echo(_("The log now records each run's stop, resumption, take-over and download."))
    if core.item_t.name in existing:
        present = {index["name"] for index in sa.inspect(engine).get_indexes(core.item_t.name)}
        added = sorted((index for index in core.item_t.indexes if index.name not in present), key=lambda i: str(i.name))
        for index in added:
            index.create(engine)
        if added:
            click.echo(_("Indexes created: %(names)s.", names=", ".join(str(index.name) for index in added)))
    if OLD_TABLES[0] not in existing:
        click.echo(_("Nothing to upgrade: no table of version 0.1."))
        return
    old = sa.MetaData()
    campaign, delivery, perimeter = (sa.Table(name, old, autoload_with=engine) for name in OLD_TABLES)
    run, item, frozen = core.run_t, core.item_t, core.perimeter_t
    c, d = campaign.c, delivery.c
    with engine.begin() as conn:
        if conn.execute(sa.select(run.c.id).where(run.c.id.in_(sa.select(c.id)))).first() is not None:
            raise click.ClickException(_("The runs already hold some of these ids: upgrade before the first new run."))
        state = sa.case((c.state == "waiting_smtp", "waiting"), else_=c.state)
        conn.execute(run.insert().from_select(
            ["id", "token", "kind", "actor", "scope_key", "school_name", "selection", "options", "scope_users",
             "scope_classes", "state", "created_at", "started_at", "heartbeat_at", "takeovers", "finished_at",
             "waiting_since", "last_error", "file_name"],
            sa.select(c.id, c.token, sa.literal("mail"), c.actor, c.scope_key, c.school_name, c.selection,
                      sa.literal("{}"), c.scope_users, c.scope_classes, state, c.created_at, c.started_at,
                      c.heartbeat_at, sa.literal(0), c.finished_at, c.waiting_since, c.last_error, sa.literal("")),
        ))
        conn.execute(item.insert().from_select(
            ["run_id", "user_id", "position", "kind", "state", "name", "email", "weight", "attempts", "reason",
             "done_at", "message_id", "possibly_duplicate", "next_attempt_at"],
            sa.select(d.campaign_id, d.user_id, d.id, sa.literal("email"), d.state, d.name, d.email,
                      sa.case((d.state == "skipped", 0), else_=1), d.attempts, d.reason, d.sent_at, d.message_id,
                      d.possibly_duplicate, d.next_attempt_at),
        ))
        conn.execute(frozen.insert().from_select(["run_id", "user_id"], sa.select(perimeter.c.campaign_id, perimeter.c.user_id)))
        if engine.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT setval(pg_get_serial_sequence('publipostage_run', 'id'), "
                                 "(SELECT coalesce(max(id), 1) FROM publipostage_run))"))
        runs = conn.execute(sa.select(sa.func.count()).select_from(campaign)).scalar()
        items = conn.execute(sa.select(sa.func.count()).select_from(delivery)).scalar()
    click.echo(
        _(
            "%(campaigns)s and %(recipients)s copied into the runs.",
            campaigns=ngettext("%(num)d campaign", "%(num)d campaigns", runs),
            recipients=ngettext("%(num)d recipient", "%(num)d recipients", items),
        )
    )
    old_names = [name for name in (*OLD_TABLES, *OLD_TRANSIENT) if name in existing]
    click.echo(_("The old tables are no longer read; drop them when you are ready:"))
    click.echo("  " + "; ".join(f"DROP TABLE {name}" for name in reversed(old_names)) + ";")


#: Before the distribution history, an index on the items' account alone.
OLD_ITEM_USER_INDEX = "ix_publipostage_run_item_user"


def _history_columns(engine: sa.Engine, inspector: Any) -> bool:
    """Add ``distributed_at`` and ``code_hmac`` to items of an earlier version,
    filled from what they say (a message sent, a sheet of a downloaded PDF; no
    hash: the codes were never kept), and the index of the history in place of
    the one on the account alone. False when there was nothing to do."""
    items, runs = core.item_t, core.run_t
    columns = {c["name"] for c in inspector.get_columns(items.name)}
    indexes = {i["name"] for i in inspector.get_indexes(items.name)}
    missing = [c for c in (items.c.distributed_at, items.c.code_hmac) if c.name not in columns]
    index = next(i for i in items.indexes if i.name == "ix_publipostage_run_item_distributed")
    if not missing and index.name in indexes and OLD_ITEM_USER_INDEX not in indexes:
        return False
    with engine.begin() as conn:
        for column in missing:
            kind = column.type.compile(dialect=engine.dialect)
            conn.execute(sa.text(f"ALTER TABLE {items.name} ADD COLUMN {column.name} {kind}"))
        if items.c.distributed_at in missing:
            i = items.c
            conn.execute(sa.update(items).where(i.kind == "email", i.state == "sent").values(distributed_at=i.done_at))
            downloaded = (
                sa.select(runs.c.downloaded_at).where(runs.c.id == i.run_id, runs.c.file_path.is_(None))
                .scalar_subquery()
            )
            conn.execute(sa.update(items).where(i.state == "printed").values(distributed_at=downloaded))
        if OLD_ITEM_USER_INDEX in indexes:
            conn.execute(sa.text(f"DROP INDEX {OLD_ITEM_USER_INDEX}"))
        if index.name not in indexes:
            index.create(conn)
    return True


def _items_per_bundle(engine: sa.Engine, indexes: set[str]) -> None:
    """Items unique by position, no longer by account (except a campaign's).
    SQLite cannot drop a constraint: the table is copied into a new one."""
    items = core.item_t
    with engine.begin() as conn:
        if engine.dialect.name != "sqlite":
            conn.execute(sa.text(f"ALTER TABLE {items.name} DROP CONSTRAINT {OLD_ITEM_CONSTRAINT}"))
            if OLD_ITEM_POSITION in indexes:
                conn.execute(sa.text(f"DROP INDEX {OLD_ITEM_POSITION}"))
            for index in items.indexes:
                if index.name not in indexes:
                    index.create(conn)
            return
        old = f"{items.name}_before_bundles"
        for name in indexes:
            conn.execute(sa.text(f'DROP INDEX "{name}"'))
        conn.execute(sa.text(f"ALTER TABLE {items.name} RENAME TO {old}"))
        items.create(conn)
        columns = ", ".join(c.name for c in items.columns)
        conn.execute(sa.text(f"INSERT INTO {items.name} ({columns}) SELECT {columns} FROM {old}"))
        conn.execute(sa.text(f"DROP TABLE {old}"))


def make_group(commands: Iterable[click.Command]) -> AppGroup:
    group = AppGroup("publipostage", help="Publipostage des comptes.")
    for command in (purge_files, purge_history, upgrade_db, *commands):
        group.add_command(command)
    return group
