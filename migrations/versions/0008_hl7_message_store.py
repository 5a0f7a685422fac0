"""The HL7 v2 message store (every inbound message, raw, with its status, ACK and produced
resources) and the feed's per-resource event clock (hl7_adapters/tables.py says why).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

HEADER = 200


def upgrade() -> None:
    op.create_table(
        "hl7_message",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("received", sa.BigInteger, nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("peer", sa.String(128), nullable=True),
        sa.Column("sending_application", sa.String(HEADER), nullable=False),
        sa.Column("sending_facility", sa.String(HEADER), nullable=False),
        sa.Column("receiving_application", sa.String(HEADER), nullable=False),
        sa.Column("receiving_facility", sa.String(HEADER), nullable=False),
        sa.Column("control_id", sa.String(HEADER), nullable=False),
        sa.Column("message_code", sa.String(16), nullable=False),
        sa.Column("trigger_event", sa.String(16), nullable=False),
        sa.Column("version", sa.String(16), nullable=False),
        sa.Column("event_time", sa.BigInteger, nullable=True),
        sa.Column("content_hash", sa.LargeBinary, nullable=False),
        sa.Column("raw", sa.LargeBinary, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("ack", sa.LargeBinary, nullable=True),
        sa.Column("ack_code", sa.String(2), nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("produced", sa.Text, nullable=True),
        sa.Column("provenance_id", sa.String(64), nullable=True),
        sa.Column("duplicate_of", sa.String(36), nullable=True),
        sa.Column("superseded_by", sa.String(36), nullable=True),
        sa.Column("control_id_reuse_of", sa.String(36), nullable=True),
        sa.Column("reprocess_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("reprocessed_at", sa.BigInteger, nullable=True),
    )
    op.create_index(
        "ix_hl7_message_sender_control",
        "hl7_message",
        ["sending_application", "sending_facility", "control_id", "content_hash"],
    )
    op.create_index("ix_hl7_message_status_received", "hl7_message", ["status", "received"])
    op.create_index("ix_hl7_message_received", "hl7_message", ["received"])
    op.create_table(
        "hl7_resource_clock",
        sa.Column("resource_type", sa.String(64), primary_key=True),
        sa.Column("resource_id", sa.String(64), primary_key=True),
        sa.Column("event_time", sa.BigInteger, nullable=False),
        sa.Column("message_id", sa.String(36), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("hl7_resource_clock")
    op.drop_table("hl7_message")
