"""The event archive: every event of every topic, append-only, partitioned by month.

Fed like a projection (idempotent by (occurred_at, event_id), progress in projection_progress),
it outlives the broker's retention: the embedded broker's topics are restored from it at start,
and `reconguard replay --source archive` rebuilds projections from it. Monthly partitions are
created by the archiver as months arrive; retention is dropping old partitions (docs/operations.md).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("CREATE SEQUENCE event_archive_seq")
    op.execute("""
        CREATE TABLE event_archive (
            occurred_at timestamptz NOT NULL,
            event_id uuid NOT NULL,
            topic varchar(249) NOT NULL,
            partition integer NOT NULL,
            "offset" bigint NOT NULL,
            event_type varchar(128) NOT NULL,
            account_id varchar(64) NOT NULL,
            key bytea,
            value bytea NOT NULL,
            seq bigint NOT NULL DEFAULT nextval('event_archive_seq'::regclass),
            archived_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT pk_event_archive PRIMARY KEY (occurred_at, event_id)
        ) PARTITION BY RANGE (occurred_at)""")
    op.execute("CREATE INDEX ix_event_archive_topic_partition_seq ON event_archive (topic, partition, seq)")
    op.execute("CREATE INDEX ix_event_archive_account_id_occurred_at ON event_archive (account_id, occurred_at)")
    # An append-only table: rows can be added, never changed (old months are dropped whole).
    op.execute("""
        CREATE FUNCTION event_archive_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'event_archive is append-only'; END $$""")
    op.execute("""
        CREATE TRIGGER event_archive_append_only BEFORE UPDATE OR DELETE ON event_archive
        FOR EACH ROW EXECUTE FUNCTION event_archive_append_only()""")


def downgrade() -> None:
    op.execute("DROP TABLE event_archive")
    op.execute("DROP FUNCTION event_archive_append_only()")
    op.execute("DROP SEQUENCE event_archive_seq")
