"""voice turn segments: the sentences of a streamed spoken reply

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 13:40:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("voice_turn") as batch:
        batch.add_column(sa.Column("segments", sa.JSON(), server_default="[]", nullable=False))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("voice_turn") as batch:
        batch.drop_column("segments")
