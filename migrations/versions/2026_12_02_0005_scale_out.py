"""scale-out: which process runs a voice turn, and rate counts shared by every process

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 14:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("voice_turn") as batch:
        batch.add_column(sa.Column("runner", sa.String(length=64), nullable=True))
    op.create_index("ix_voice_turn_status_runner", "voice_turn", ["status", "runner"])
    op.create_table(
        "rate_count",
        sa.Column("key", sa.String(length=300), nullable=False),
        sa.Column("window_start", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key", "window_start", name=op.f("pk_rate_count")),
    )
    op.create_index("ix_rate_count_window_start", "rate_count", ["window_start"])


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index("ix_rate_count_window_start", table_name="rate_count")
    op.drop_table("rate_count")
    op.drop_index("ix_voice_turn_status_runner", table_name="voice_turn")
    with op.batch_alter_table("voice_turn") as batch:
        batch.drop_column("runner")
