"""The schema, as SQLAlchemy Core tables (migrations/ creates them; this module describes them).

Timestamps are stored as integer microseconds since the Unix epoch (UTC): identical on SQLite
and PostgreSQL, totally ordered, and cheap to compare for `_since` and paging.

`content` holds the exact JSON bytes we return (the client's JSON plus server-owned meta), so a
read never re-serializes. (No JSONB twin: it cost a third of every row insert and nothing read
it; migration 0011.)
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    text,
)

metadata = MetaData()

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
SequenceId = BigInteger().with_variant(Integer(), "sqlite")

resource = Table(
    "resource",
    metadata,
    Column("resource_type", String(64), primary_key=True),
    Column("id", String(64), primary_key=True),
    Column("version_id", Integer, nullable=False),
    Column("last_updated", BigInteger, nullable=False),
    Column("deleted", Boolean, nullable=False, default=False),
    Column("content", LargeBinary, nullable=True),
    Index("ix_resource_type_updated", "resource_type", "last_updated"),
)

resource_history = Table(
    "resource_history",
    metadata,
    Column("resource_type", String(64), primary_key=True),
    Column("id", String(64), primary_key=True),
    Column("version_id", Integer, primary_key=True),
    Column("last_updated", BigInteger, nullable=False),
    Column("method", String(8), nullable=False),  # POST | PUT | PATCH | DELETE
    Column("content", LargeBinary, nullable=True),  # NULL for a delete
    # Whether this version created the resource (POST, update-as-create, a PUT after a
    # delete): history's 201. NULL in rows written before migration 0022.
    Column("created", Boolean, nullable=True),
    Index("ix_history_updated", "last_updated"),
    Index("ix_history_type_updated", "resource_type", "last_updated"),
)

# The transactional outbox: one row per committed change, written in the same transaction.
# Subscriptions and agents consume it (delivery at least once, by sequence).
change_event = Table(
    "change_event",
    metadata,
    Column("seq", SequenceId, primary_key=True, autoincrement=True),
    Column("resource_type", String(64), nullable=False),
    Column("resource_id", String(64), nullable=False),
    Column("version_id", Integer, nullable=False),
    Column("interaction", String(16), nullable=False),  # create | update | patch | delete
    Column("occurred_at", BigInteger, nullable=False),
    Column("request_id", String(64), nullable=True),
)

# ---------------------------------------------------------------- search indexes
# One narrow table per search parameter type, written at write time in the same transaction
# (app/fhir/search/indexer.py) and read by the search engine (app/fhir/search/criteria.py).
# Every table starts with (resource_type, resource_id, param): the owner and the parameter.
# Text that is range-compared (string prefixes, uri :below) uses the C collation on
# PostgreSQL so that byte order, and therefore prefix ranges, match SQLite's.

OrderedText = Text().with_variant(Text(collation="C"), "postgresql")
SearchNumber = Numeric(asdecimal=True)


def _owner_columns() -> list[Column]:  # type: ignore[type-arg]
    return [
        Column("resource_type", String(64), nullable=False),
        Column("resource_id", String(64), nullable=False),
        Column("param", String(64), nullable=False),
    ]


search_token = Table(
    "search_token",
    metadata,
    *_owner_columns(),
    Column("system", Text, nullable=True),
    Column("code", Text, nullable=True),
    Column("display", Text, nullable=True),  # normalized display / text, for :text
    Column("type_system", Text, nullable=True),  # Identifier.type, for :of-type
    Column("type_code", Text, nullable=True),
    Index("ix_token_lookup", "resource_type", "param", "code", "system"),
    Index("ix_token_owner", "resource_type", "resource_id", "param"),
)

search_string = Table(
    "search_string",
    metadata,
    *_owner_columns(),
    Column("value", OrderedText, nullable=False),  # normalized: case- and accent-folded
    Column("exact", Text, nullable=False),
    Index("ix_string_lookup", "resource_type", "param", "value"),
    Index("ix_string_owner", "resource_type", "resource_id", "param"),
)

search_reference = Table(
    "search_reference",
    metadata,
    *_owner_columns(),
    Column("target_type", String(64), nullable=True),
    Column("target_id", String(64), nullable=True),
    Column("url", Text, nullable=True),
    Column("identifier_system", Text, nullable=True),
    Column("identifier_value", Text, nullable=True),
    # The id last: a search walks its matches in id order (the default sort), page by page.
    Index(
        "ix_reference_lookup", "resource_type", "param", "target_id", "target_type", "resource_id"
    ),
    Index("ix_reference_target", "target_type", "target_id", "param"),
    Index("ix_reference_owner", "resource_type", "resource_id", "param"),
)

search_date = Table(
    "search_date",
    metadata,
    *_owner_columns(),
    Column("low", BigInteger, nullable=False),  # [low, high) in epoch microseconds
    Column("high", BigInteger, nullable=False),
    Index("ix_date_lookup", "resource_type", "param", "low", "high"),
    Index("ix_date_owner", "resource_type", "resource_id", "param"),
)

search_number = Table(
    "search_number",
    metadata,
    *_owner_columns(),
    Column("value", SearchNumber, nullable=False),
    Index("ix_number_lookup", "resource_type", "param", "value"),
    Index("ix_number_owner", "resource_type", "resource_id", "param"),
)

# The rows whose unit text is not their code (criteria.UNIT_NOT_CODE states it in a query)
QUANTITY_UNIT_ROWS = "unit IS NOT NULL AND (code IS NULL OR code <> unit)"

search_quantity = Table(
    "search_quantity",
    metadata,
    *_owner_columns(),
    Column("value", SearchNumber, nullable=False),
    Column("system", Text, nullable=True),
    Column("code", Text, nullable=True),
    Column("unit", Text, nullable=True),
    # The value in UCUM base units and their code (`5.4 mg`: 0.0054, "g"), for a Quantity of
    # the UCUM system whose code converts by a factor (app/fhir/ucum.py; migration 0019)
    Column("canonical_value", SearchNumber, nullable=True),
    Column("canonical_code", Text, nullable=True),
    Index("ix_quantity_lookup", "resource_type", "param", "code", "value"),
    Index("ix_quantity_canonical", "resource_type", "param", "canonical_code", "canonical_value"),
    # `number||unit` by the unit text, where it is not the code (migration 0021)
    Index(
        "ix_quantity_unit",
        "resource_type",
        "param",
        "unit",
        "value",
        postgresql_where=text(QUANTITY_UNIT_ROWS),
        sqlite_where=text(QUANTITY_UNIT_ROWS),
    ),
    Index("ix_quantity_owner", "resource_type", "resource_id", "param"),
)

search_uri = Table(
    "search_uri",
    metadata,
    *_owner_columns(),
    Column("value", OrderedText, nullable=False),
    Index("ix_uri_lookup", "resource_type", "param", "value"),
    Index("ix_uri_owner", "resource_type", "resource_id", "param"),
)

# Composite parameters (code-value-quantity, ...): one row per node of the composite's
# expression, pairing its first component (a token) with its second (token, quantity, date or
# string). These pairs are what makes `code=X and value>Y` hold on the *same* component.
search_composite = Table(
    "search_composite",
    metadata,
    *_owner_columns(),
    Column("c1_system", Text, nullable=True),
    Column("c1_code", Text, nullable=True),
    Column("c2_system", Text, nullable=True),  # token / quantity system
    Column("c2_code", Text, nullable=True),  # token code / quantity code
    Column("c2_value", SearchNumber, nullable=True),  # quantity value
    Column("c2_unit", Text, nullable=True),
    Column("c2_canonical_value", SearchNumber, nullable=True),  # as search_quantity's
    Column("c2_canonical_code", Text, nullable=True),
    Column("c2_low", BigInteger, nullable=True),  # date range
    Column("c2_high", BigInteger, nullable=True),
    Column("c2_text", OrderedText, nullable=True),  # normalized string
    Index("ix_composite_lookup", "resource_type", "param", "c1_code", "c2_code"),
    # A quantity second component in UCUM units, searched as such (migration 0020): only the
    # rows that have a canonical form
    Index(
        "ix_composite_canonical",
        "resource_type",
        "param",
        "c1_code",
        "c2_canonical_code",
        "c2_canonical_value",
        postgresql_where=text("c2_canonical_code IS NOT NULL"),
        sqlite_where=text("c2_canonical_code IS NOT NULL"),
    ),
    Index("ix_composite_owner", "resource_type", "resource_id", "param"),
)

INDEX_TABLES = {
    "token": search_token,
    "string": search_string,
    "reference": search_reference,
    "date": search_date,
    "number": search_number,
    "quantity": search_quantity,
    "uri": search_uri,
    "composite": search_composite,
}
