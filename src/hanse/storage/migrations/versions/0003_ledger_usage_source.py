"""The ledger says where each row's token counts come from (reported, counted, estimated), how many
prompt tokens were served from the provider's cache, and what the balance could not pay.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ledger") as batch:
        batch.add_column(
            sa.Column("cached_prompt_tokens", sa.Integer(), server_default="0", nullable=False)
        )
        batch.add_column(
            sa.Column(
                "usage_source", sa.String(length=16), server_default="reported", nullable=False
            )
        )
        batch.add_column(
            sa.Column("unpaid_pico", sa.BigInteger(), server_default="0", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("ledger") as batch:
        batch.drop_column("unpaid_pico")
        batch.drop_column("usage_source")
        batch.drop_column("cached_prompt_tokens")
