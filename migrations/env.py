"""Alembic environment: models from search.store.schema, SQLite in batch mode."""

from logging.config import fileConfig

from alembic import context
from sqlalchemy import engine_from_config, pool

from search.paths import Paths
from search.store.schema import Base, is_fts_table

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name)

if not config.get_main_option("sqlalchemy.url"):
    config.set_main_option("sqlalchemy.url", f"sqlite:///{Paths.resolve().db}")

target_metadata = Base.metadata


def include_name(name, type_, parent_names) -> bool:
    """The keyword index's FTS5 tables are not in the metadata: leave them (and only them) out."""
    return not (type_ == "table" and name and is_fts_table(name))


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
        include_name=include_name,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connectable = engine_from_config(
        config.get_section(config.config_ini_section, {}), prefix="sqlalchemy.", poolclass=pool.NullPool
    )
    with connectable.connect() as connection:
        context.configure(
            connection=connection, target_metadata=target_metadata, render_as_batch=True, include_name=include_name
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
