-- meshwatch schema v1. `{db}` is replaced by the configured database name.
-- Retention TTLs count from when meshwatch received the data (ingested_at / updated_at), not
-- from event time, so replaying last month's logs does not expire them on arrival.
-- Every table has a deterministic key and a Replacing/Aggregating engine so that replaying
-- records after a crash leaves no duplicates (query with FINAL or GROUP BY the key).

CREATE TABLE IF NOT EXISTS {db}.edge_events
(
    event_id String,
    ts DateTime64(3, 'UTC'),
    origin LowCardinality(String),
    reporter LowCardinality(String),
    source_workload Nullable(String),
    source_namespace Nullable(String),
    source_principal Nullable(String),
    source_address Nullable(String),
    destination_service Nullable(String),
    destination_workload Nullable(String),
    destination_namespace Nullable(String),
    destination_principal Nullable(String),
    destination_port Nullable(UInt16),
    protocol Nullable(String),
    method Nullable(String),
    path Nullable(String),
    response_code Nullable(Int32),
    response_flags Nullable(String),
    bytes_sent Nullable(UInt64),
    bytes_received Nullable(UInt64),
    duration_ms Nullable(Float64),
    mtls Nullable(Bool),
    tls_version Nullable(String),
    peer_cert_not_after Nullable(DateTime64(3, 'UTC')),
    request_id Nullable(String),
    trace_id Nullable(String),
    edge_src String,
    edge_dst String,
    record_origin String,
    ingested_at DateTime('UTC') DEFAULT now()
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (ts, event_id)
TTL ingested_at + INTERVAL 7 DAY;

CREATE TABLE IF NOT EXISTS {db}.edge_windows
(
    window_start DateTime('UTC'),
    window_seconds UInt32,
    edge_src String,
    edge_dst String,
    part UInt16,
    src_kind LowCardinality(String),
    src_workload Nullable(String),
    src_namespace Nullable(String),
    src_principal Nullable(String),
    src_address Nullable(String),
    dst_kind LowCardinality(String),
    dst_service Nullable(String),
    dst_port Nullable(UInt16),
    dst_workload Nullable(String),
    dst_namespace Nullable(String),
    dst_principal Nullable(String),
    requests UInt64,
    errors_4xx UInt64,
    errors_5xx UInt64,
    denials UInt64,
    conn_failures UInt64,
    bytes_sent UInt64,
    bytes_received UInt64,
    latency_count UInt64,
    latency_p50 Nullable(Float64),
    latency_p95 Nullable(Float64),
    latency_p99 Nullable(Float64),
    latency_sketch String,
    mtls_true UInt64,
    mtls_false UInt64,
    mtls_unknown UInt64,
    tls_versions Array(String),
    peer_principals Array(String),
    source_addresses Array(String),
    first_seen DateTime64(3, 'UTC'),
    last_seen DateTime64(3, 'UTC'),
    min_cert_not_after Nullable(DateTime64(3, 'UTC')),
    ingested_at DateTime('UTC') DEFAULT now()
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(window_start)
ORDER BY (window_start, edge_src, edge_dst, part)
TTL ingested_at + INTERVAL 90 DAY;

-- First/last seen per edge and per node. min/max are idempotent, so replays cannot skew them.
CREATE TABLE IF NOT EXISTS {db}.edges
(
    edge_src String,
    edge_dst String,
    first_seen SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    last_seen SimpleAggregateFunction(max, DateTime64(3, 'UTC'))
)
ENGINE = AggregatingMergeTree
ORDER BY (edge_src, edge_dst);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.edges_mv TO {db}.edges AS
SELECT edge_src, edge_dst, min(first_seen) AS first_seen, max(last_seen) AS last_seen
FROM {db}.edge_windows
GROUP BY edge_src, edge_dst;

CREATE TABLE IF NOT EXISTS {db}.nodes
(
    node_id String,
    kind LowCardinality(String),
    namespace SimpleAggregateFunction(any, Nullable(String)),
    principals SimpleAggregateFunction(groupUniqArrayArray, Array(String)),
    first_seen SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    last_seen SimpleAggregateFunction(max, DateTime64(3, 'UTC'))
)
ENGINE = AggregatingMergeTree
ORDER BY (node_id, kind);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.nodes_src_mv TO {db}.nodes AS
SELECT edge_src AS node_id, src_kind AS kind, any(src_namespace) AS namespace,
       groupUniqArrayArray(if(src_principal IS NULL, [], [assumeNotNull(src_principal)]))
           AS principals,
       min(first_seen) AS first_seen, max(last_seen) AS last_seen
FROM {db}.edge_windows
GROUP BY edge_src, src_kind;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.nodes_dst_mv TO {db}.nodes AS
SELECT edge_dst AS node_id, dst_kind AS kind, any(dst_namespace) AS namespace,
       groupUniqArrayArray(if(dst_principal IS NULL, [], [assumeNotNull(dst_principal)]))
           AS principals,
       min(first_seen) AS first_seen, max(last_seen) AS last_seen
FROM {db}.edge_windows
GROUP BY edge_dst, dst_kind;

CREATE TABLE IF NOT EXISTS {db}.alerts
(
    id String,
    fingerprint String,
    detector LowCardinality(String),
    severity LowCardinality(String),
    title String,
    summary String,
    source String,
    destination String,
    src_namespace Nullable(String),
    src_workload Nullable(String),
    src_principal Nullable(String),
    dst_namespace Nullable(String),
    dst_service Nullable(String),
    first_seen DateTime64(3, 'UTC'),
    last_seen DateTime64(3, 'UTC'),
    count UInt64,
    score Float64,
    mitre Array(String),
    runbook_url String,
    evidence String,
    status LowCardinality(String),
    labels Map(String, String),
    assignee Nullable(String),
    version UInt64,
    updated_at DateTime('UTC') DEFAULT now()
)
ENGINE = ReplacingMergeTree(version)
ORDER BY id
TTL updated_at + INTERVAL 365 DAY;

CREATE TABLE IF NOT EXISTS {db}.alert_actions
(
    action_id String,
    alert_id String,
    ts DateTime64(3, 'UTC'),
    actor String,
    action LowCardinality(String),
    detail String
)
ENGINE = ReplacingMergeTree
ORDER BY (alert_id, ts, action_id);

CREATE TABLE IF NOT EXISTS {db}.dead_letters
(
    dl_id String,
    received_at DateTime64(3, 'UTC'),
    source String,
    partition Nullable(Int32),
    offset Int64,
    format LowCardinality(String),
    reason String,
    payload_b64 String,
    payload_size UInt64
)
ENGINE = ReplacingMergeTree
ORDER BY (source, offset, dl_id)
TTL toDateTime(received_at) + INTERVAL 30 DAY;

CREATE TABLE IF NOT EXISTS {db}.checkpoints
(
    scope String,
    name String,
    version UInt64,
    written_at DateTime64(3, 'UTC'),
    offsets String,
    state_b64 String
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (scope, name);
