"""Every Prometheus metric the processes count, defined once.

Several processes count (gunicorn's workers, the delivery worker beside them), so
prometheus-client runs in multiprocess mode: each process writes its samples to files
in PROMETHEUS_MULTIPROC_DIR and `GET /metrics` sums them (webhooks.ops.metrics). The
directory must be in the environment before prometheus_client is first imported,
which `webhooks serve` and gunicorn's master (webhooks.gunicorn_conf) see to.
What the database already knows (backlogs, dead letters, waiting rows) is not counted
here but read at scrape time, so it is right whichever host did the work.

Labels hold only bounded values: provider names, event types and topics (a signed
delivery's, set by the provider), canonical event names, outcome codes, statuses.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

# Acks are milliseconds; the tail up to DATABASE_TIMEOUT and beyond matters.
INGEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
CUSTOMERIO_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

RECEIVED = Counter(
    "webhooks_received_total",
    "Webhook requests by provider, type and outcome (accepted, duplicate, or the error "
    "code of a rejection; type is empty when the request was rejected before keying).",
    ["provider", "type", "outcome"],
)
INGEST_SECONDS = Histogram(
    "webhooks_ingest_seconds",
    "Time from the request reaching the app to its answer.",
    ["provider"],
    buckets=INGEST_BUCKETS,
)
UNMAPPED = Counter(
    "webhooks_unmapped_deliveries_total",
    "Verified deliveries of a type no mapper handles (stored, acknowledged, not forwarded).",
    ["provider", "event_type"],
)
MAPPED = Counter(
    "webhooks_operations_mapped_total",
    "Operations stage 1 queued for Customer.io, by kind and canonical event name.",
    ["kind", "name"],
)
MAPPING_FAILED = Counter(
    "webhooks_mapping_failed_total",
    "Deliveries stage 1 dead-lettered because their mapper refused them.",
    ["provider", "event_type"],
)
DELIVERED = Counter(
    "webhooks_operations_delivered_total",
    "Operations Customer.io accepted (or a dry run recorded), by kind and outcome.",
    ["kind", "outcome"],
)
SEND_FAILED = Counter(
    "webhooks_send_failures_total",
    "Failed sends of a group of operations, by class: transient (5xx, 429, network), "
    "permanent (4xx), auth (401/403), item (one operation refused inside a 207).",
    ["failure"],
)
DEAD = Counter(
    "webhooks_operations_dead_total",
    "Operations that became dead letters in stage 2.",
    ["kind"],
)
CUSTOMERIO_SECONDS = Histogram(
    "webhooks_customerio_request_seconds",
    "Customer.io Track API request time, by endpoint.",
    ["endpoint"],
    buckets=CUSTOMERIO_BUCKETS,
)
CUSTOMERIO_RESPONSES = Counter(
    "webhooks_customerio_responses_total",
    "Customer.io Track API answers by endpoint and status ('error': no answer).",
    ["endpoint", "status"],
)
STATE_LOCK_WAIT = Histogram(
    "webhooks_stage1_lock_wait_seconds",
    "Time a stage-1 batch spent taking its person-state locks (PostgreSQL): mostly the "
    "wait for another worker's batch about the same people.",
    buckets=INGEST_BUCKETS,
)
