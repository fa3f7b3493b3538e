-- meshwatch schema v2: alert delivery (notification groups, log, outbox, attempts) and silences.
-- Every table has a deterministic key on a ReplacingMergeTree(version): a replayed write
-- rewrites the same row, and the highest version is the current state (read with FINAL).
-- Retention counts from when the row was written (`written_at`, the server's clock), not from
-- the times in the rows, which come from the notifier's clock.

-- Alerts waiting in notification groups: the durable half of group_wait. A row per
-- (group, alert); `removed` = 1 once the alert left the group (resolved and flushed, silenced).
CREATE TABLE IF NOT EXISTS {db}.notify_groups
(
    group_key String,
    alert_id String,
    route_path String,
    receiver String,
    group_labels String,
    alert String,
    removed UInt8,
    updated_at DateTime64(3, 'UTC'),
    version UInt64,
    written_at DateTime('UTC') DEFAULT now()
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (group_key, alert_id)
TTL written_at + INTERVAL 30 DAY;

-- What each integration was last sent per group (Alertmanager's notification log): decides
-- whether a flush has news, and numbers notifications so their ids stay deterministic.
CREATE TABLE IF NOT EXISTS {db}.notify_log
(
    group_key String,
    integration String,
    firing Array(String),
    resolved Array(String),
    sent_at DateTime64(3, 'UTC'),
    seq Int64,
    version UInt64,
    written_at DateTime('UTC') DEFAULT now()
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (group_key, integration)
TTL written_at + INTERVAL 30 DAY;

-- The outbox: a notification is written here before any delivery attempt and leaves the
-- `pending` state only on a 2xx (`delivered`) or a permanent failure / give-up (`failed`).
CREATE TABLE IF NOT EXISTS {db}.notify_outbox
(
    notification_id String,
    receiver String,
    integration String,
    sink LowCardinality(String),
    group_key String,
    alert_ids Array(String),
    payload String,
    state LowCardinality(String),
    attempts UInt32,
    created_at DateTime64(3, 'UTC'),
    next_attempt_at DateTime64(3, 'UTC'),
    last_status Nullable(Int32),
    last_error String,
    updated_at DateTime64(3, 'UTC'),
    version UInt64,
    written_at DateTime('UTC') DEFAULT now()
)
ENGINE = ReplacingMergeTree(version)
ORDER BY notification_id
TTL written_at + INTERVAL 30 DAY;

-- One row per delivery attempt: the audit trail behind the failed-deliveries list.
CREATE TABLE IF NOT EXISTS {db}.notify_attempts
(
    notification_id String,
    attempt UInt32,
    integration String,
    ts DateTime64(3, 'UTC'),
    outcome LowCardinality(String),
    status Nullable(Int32),
    error String,
    duration_ms Float64,
    written_at DateTime('UTC') DEFAULT now()
)
ENGINE = ReplacingMergeTree
ORDER BY (notification_id, attempt)
TTL written_at + INTERVAL 30 DAY;

CREATE TABLE IF NOT EXISTS {db}.silences
(
    id String,
    matchers Array(String),
    starts_at DateTime64(3, 'UTC'),
    ends_at DateTime64(3, 'UTC'),
    created_by String,
    comment String,
    created_at DateTime64(3, 'UTC'),
    updated_at DateTime64(3, 'UTC'),
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY id;
