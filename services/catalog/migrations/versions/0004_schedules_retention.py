"""schedules, retention policies, legal hold, timer leases

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 19:40:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0004'
down_revision: Union[str, None] = '0003'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        'schedules',
        sa.Column('id', sa.String(length=32), nullable=False),
        sa.Column('tenant', sa.String(length=63), nullable=False),
        sa.Column('name', sa.String(length=63), nullable=False),
        sa.Column('source_id', sa.String(length=32), nullable=True),
        sa.Column('scope', sa.String(length=16), nullable=True),
        sa.Column('cron', sa.String(length=128), nullable=False),
        sa.Column('preset', sa.JSON(), nullable=True),
        sa.Column('timezone', sa.String(length=64), nullable=False),
        sa.Column('retention', sa.JSON(), nullable=True),
        sa.Column('note', sa.Text(), nullable=True),
        sa.Column('enabled', sa.Boolean(), nullable=False),
        sa.Column('next_run', sa.DateTime(), nullable=True),
        sa.Column('pending_slot', sa.DateTime(), nullable=True),
        sa.Column('claimed_at', sa.DateTime(), nullable=True),
        sa.Column('last_run', sa.JSON(), nullable=True),
        sa.Column('created_by', sa.String(length=128), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('updated_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['tenant'], ['tenants.name']),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('schedules', schema=None) as batch_op:
        batch_op.create_index('ux_schedules_tenant_name', ['tenant', 'name'], unique=True)
        batch_op.create_index(batch_op.f('ix_schedules_next_run'), ['next_run'], unique=False)
        batch_op.create_index(batch_op.f('ix_schedules_source_id'), ['source_id'], unique=False)

    op.create_table(
        'timer_leases',
        sa.Column('name', sa.String(length=32), nullable=False),
        sa.Column('holder', sa.String(length=64), nullable=False),
        sa.Column('expires_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('name'),
    )
    with op.batch_alter_table('sources', schema=None) as batch_op:
        batch_op.add_column(sa.Column('retention', sa.JSON(), nullable=True))
    with op.batch_alter_table('backups', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('legal_hold', sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.add_column(sa.Column('schedule_id', sa.String(length=32), nullable=True))
        batch_op.create_index(batch_op.f('ix_backups_schedule_id'), ['schedule_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('backups', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_backups_schedule_id'))
        batch_op.drop_column('schedule_id')
        batch_op.drop_column('legal_hold')
    with op.batch_alter_table('sources', schema=None) as batch_op:
        batch_op.drop_column('retention')
    op.drop_table('timer_leases')
    with op.batch_alter_table('schedules', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_schedules_source_id'))
        batch_op.drop_index(batch_op.f('ix_schedules_next_run'))
        batch_op.drop_index('ux_schedules_tenant_name')
    op.drop_table('schedules')
