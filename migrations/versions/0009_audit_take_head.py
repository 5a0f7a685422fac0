"""PostgreSQL: a function that takes a free audit partition head, or makes one.

An audited transaction appends its records in statements sent together with its COMMIT (one
network round trip, see audit/chain.py). Nothing can be decided between them, so taking a
head must not fail: `audit_take_head(n)` locks the lowest free partition (SKIP LOCKED) or
creates a new one, retrying when a concurrent transaction created the same number, reserves
`n` pseqs and returns "partition previous_pseq".

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-21
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

TAKE_HEAD = """
CREATE FUNCTION audit_take_head(n bigint) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    pid integer;
    prev bigint;
BEGIN
    LOOP
        UPDATE audit_partition SET last_pseq = last_pseq + n
        WHERE partition_id = (SELECT partition_id FROM audit_partition ORDER BY partition_id
                              LIMIT 1 FOR UPDATE SKIP LOCKED)
        RETURNING partition_id, last_pseq - n INTO pid, prev;
        IF FOUND THEN
            RETURN pid || ' ' || prev;
        END IF;
        -- every partition is held by a transaction in flight: add one (ours until commit)
        INSERT INTO audit_partition (partition_id, last_pseq, created)
        SELECT coalesce(max(partition_id), 0) + 1, n,
               (extract(epoch FROM clock_timestamp()) * 1000000)::bigint
        FROM audit_partition
        ON CONFLICT DO NOTHING
        RETURNING partition_id INTO pid;
        IF FOUND THEN
            RETURN pid || ' 0';
        END IF;
    END LOOP;
END $$;
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(TAKE_HEAD)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION audit_take_head(bigint)")
