-- meshwatch schema v3: the SOC analyst feed: API tokens and sessions, alert feedback and the
-- feedback rules it creates, and projections that keep `GET /api/v1/alerts` fast at 1M alerts.
-- Deterministic keys on ReplacingMergeTree(version) tables: a replayed write rewrites the same
-- row (read with FINAL); the highest version is the current state.

-- API tokens (`meshwatch token create`) and browser sessions (exchanged for a token at login).
-- Only a salted scrypt hash of the secret is kept; `id` is the public prefix used for lookup.
CREATE TABLE IF NOT EXISTS {db}.api_tokens
(
    id String,
    kind LowCardinality(String),
    name String,
    role LowCardinality(String),
    parent String,
    salt String,
    hash String,
    created_at DateTime64(3, 'UTC'),
    created_by String,
    expires_at Nullable(DateTime64(3, 'UTC')),
    revoked_at Nullable(DateTime64(3, 'UTC')),
    revoked_by String,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY id
TTL toDateTime(created_at) + INTERVAL 30 DAY WHERE kind = 'session';

-- The latest verdict per alert (the history is in alert_actions): precision is computed here.
CREATE TABLE IF NOT EXISTS {db}.alert_feedback
(
    alert_id String,
    fingerprint String,
    detector LowCardinality(String),
    verdict LowCardinality(String),
    comment String,
    actor String,
    ts DateTime64(3, 'UTC'),
    rule_id String,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY alert_id;

-- Rules a false-positive / benign verdict creates: findings of `detector` from `source` to
-- `destination` ('' = any) score `score_factor` times lower until `expires_at`. The id is a
-- hash of (detector, source, destination): marking the same pattern again extends one rule.
CREATE TABLE IF NOT EXISTS {db}.feedback_rules
(
    id String,
    detector LowCardinality(String),
    source String,
    destination String,
    score_factor Float64,
    verdict LowCardinality(String),
    alert_id String,
    created_by String,
    comment String,
    created_at DateTime64(3, 'UTC'),
    expires_at DateTime64(3, 'UTC'),
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY id;

-- The feed reads candidates in sort order from a projection (no FINAL, read in reverse order,
-- stops after a page), then verifies them against the current rows by primary key. Merges
-- rebuild the projections from the deduplicated rows, so stale versions do not pile up.
ALTER TABLE {db}.alerts MODIFY SETTING deduplicate_merge_projection_mode = 'rebuild';

-- The projections hold whole rows, so a page comes from consecutive rows of one projection;
-- reading a page's rows by id instead decompresses one granule per alert (~100 ms a page at
-- 1M alerts). Time-ordered pages are bounded (an hour back, then a day ...), which the
-- projection's primary key turns into a few granules. Sorting by count or score reads the
-- table's own top-K (measured: `meshwatch bench api`); projections there did not help.
ALTER TABLE {db}.alerts ADD PROJECTION IF NOT EXISTS feed_last_seen
(
    SELECT * ORDER BY (last_seen, id)
);

ALTER TABLE {db}.alerts ADD PROJECTION IF NOT EXISTS feed_first_seen
(
    SELECT * ORDER BY (first_seen, id)
);

ALTER TABLE {db}.alerts MATERIALIZE PROJECTION feed_last_seen;

ALTER TABLE {db}.alerts MATERIALIZE PROJECTION feed_first_seen;

-- The audit trail is read per alert (ORDER BY alert_id, ts): no change needed.
