"""Search index tables for every search parameter type.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _ordered_text() -> sa.types.TypeEngine:
    # Byte-order text on PostgreSQL so prefix ranges match SQLite's binary comparison.
    return sa.Text(collation="C") if op.get_bind().dialect.name == "postgresql" else sa.Text()


def _owner() -> list[sa.Column]:
    return [
        sa.Column("resource_type", sa.String(64), nullable=False),
        sa.Column("resource_id", sa.String(64), nullable=False),
        sa.Column("param", sa.String(64), nullable=False),
    ]


def _table(
    name: str, columns: list[sa.Column], lookup: list[str], extra: dict[str, list[str]]
) -> None:
    op.create_table(name, *_owner(), *columns)
    short = name.removeprefix("search_")
    op.create_index(f"ix_{short}_lookup", name, ["resource_type", "param", *lookup])
    op.create_index(f"ix_{short}_owner", name, ["resource_type", "resource_id"])
    for index_name, cols in extra.items():
        op.create_index(index_name, name, cols)


def upgrade() -> None:
    with op.batch_alter_table("search_token") as batch:
        batch.add_column(sa.Column("display", sa.Text, nullable=True))
        batch.add_column(sa.Column("type_system", sa.Text, nullable=True))
        batch.add_column(sa.Column("type_code", sa.Text, nullable=True))
    _table(
        "search_string",
        [
            sa.Column("value", _ordered_text(), nullable=False),
            sa.Column("exact", sa.Text, nullable=False),
        ],
        ["value"],
        {},
    )
    _table(
        "search_reference",
        [
            sa.Column("target_type", sa.String(64), nullable=True),
            sa.Column("target_id", sa.String(64), nullable=True),
            sa.Column("url", sa.Text, nullable=True),
            sa.Column("identifier_system", sa.Text, nullable=True),
            sa.Column("identifier_value", sa.Text, nullable=True),
        ],
        ["target_id", "target_type"],
        {"ix_reference_target": ["target_type", "target_id", "param"]},
    )
    _table(
        "search_date",
        [
            sa.Column("low", sa.BigInteger, nullable=False),
            sa.Column("high", sa.BigInteger, nullable=False),
        ],
        ["low", "high"],
        {},
    )
    _table("search_number", [sa.Column("value", sa.Numeric, nullable=False)], ["value"], {})
    _table(
        "search_quantity",
        [
            sa.Column("value", sa.Numeric, nullable=False),
            sa.Column("system", sa.Text, nullable=True),
            sa.Column("code", sa.Text, nullable=True),
            sa.Column("unit", sa.Text, nullable=True),
        ],
        ["code", "value"],
        {},
    )
    _table("search_uri", [sa.Column("value", _ordered_text(), nullable=False)], ["value"], {})


def downgrade() -> None:
    for name in (
        "search_uri",
        "search_quantity",
        "search_number",
        "search_date",
        "search_reference",
        "search_string",
    ):
        op.drop_table(name)
    with op.batch_alter_table("search_token") as batch:
        batch.drop_column("type_code")
        batch.drop_column("type_system")
        batch.drop_column("display")
