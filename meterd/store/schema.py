"""The schema as a list of forward migrations, shared by every backend.

Migration N brings a database from version N-1 to N. Statements use only SQL
that SQLite and PostgreSQL both accept (BIGINT, TEXT, ON CONFLICT), so one
list serves both; a backend applies the ones newer than its stored version,
each in its own transaction.
"""

from __future__ import annotations

MIGRATIONS: list[list[str]] = [
    # 1: customers, meters, readings and hourly rollups
    [
        """CREATE TABLE customers (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            ligacao TEXT NOT NULL,
            limit_w BIGINT NOT NULL,
            limit_wh BIGINT NOT NULL,
            tz TEXT NOT NULL,
            token_hash TEXT NOT NULL UNIQUE,
            created_ms BIGINT NOT NULL
        )""",
        """CREATE TABLE meters (
            customer_id TEXT NOT NULL REFERENCES customers (id),
            meter_id BIGINT NOT NULL,
            mode TEXT NOT NULL,
            key_hex TEXT NOT NULL,
            created_ms BIGINT NOT NULL,
            last_ts BIGINT,
            last_wh BIGINT,
            last_seen_ms BIGINT,
            PRIMARY KEY (customer_id, meter_id)
        )""",
        """CREATE TABLE readings (
            customer_id TEXT NOT NULL,
            meter_id BIGINT NOT NULL,
            ts BIGINT NOT NULL,
            wh BIGINT NOT NULL,
            received_ms BIGINT NOT NULL,
            PRIMARY KEY (customer_id, meter_id, ts)
        )""",
        """CREATE TABLE rollups (
            customer_id TEXT NOT NULL,
            meter_id BIGINT NOT NULL,
            hour BIGINT NOT NULL,
            n BIGINT NOT NULL,
            first_ts BIGINT NOT NULL,
            first_wh BIGINT NOT NULL,
            last_ts BIGINT NOT NULL,
            last_wh BIGINT NOT NULL,
            sum_wh BIGINT NOT NULL,
            PRIMARY KEY (customer_id, meter_id, hour)
        )""",
    ],
]

LATEST = len(MIGRATIONS)

VERSION_TABLE = "CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)"

UPSERT_ROLLUP = """
INSERT INTO rollups (customer_id, meter_id, hour, n, first_ts, first_wh, last_ts, last_wh, sum_wh)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (customer_id, meter_id, hour) DO UPDATE SET
    n = rollups.n + excluded.n,
    first_ts = CASE WHEN excluded.first_ts < rollups.first_ts THEN excluded.first_ts ELSE rollups.first_ts END,
    first_wh = CASE WHEN excluded.first_ts < rollups.first_ts THEN excluded.first_wh ELSE rollups.first_wh END,
    last_ts = CASE WHEN excluded.last_ts > rollups.last_ts THEN excluded.last_ts ELSE rollups.last_ts END,
    last_wh = CASE WHEN excluded.last_ts > rollups.last_ts THEN excluded.last_wh ELSE rollups.last_wh END,
    sum_wh = rollups.sum_wh + excluded.sum_wh
"""
