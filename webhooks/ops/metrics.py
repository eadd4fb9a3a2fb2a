"""`GET /metrics`: Prometheus text, summed over every process, plus the database's view.

Counters and histograms come from the processes that count them (gunicorn's workers
and the delivery worker beside them) through prometheus-client's multiprocess files
(webhooks.core.metrics). Gauges of what is queued, dead or waiting are read from the
database at scrape time (webhooks.ops.status), so they are right whichever host did
the work. The endpoint reveals traffic, so it is off unless METRICS_TOKEN is set, and
then answers only `Authorization: Bearer <METRICS_TOKEN>`.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from webhooks.ops.status import collect

bp = Blueprint("metrics", __name__)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


@bp.get("/metrics", provide_automatic_options=False)
def metrics() -> Response:
    """The metrics, to a caller with the token."""
    token = current_app.extensions["webhooks.settings"].metrics_token
    expected = token.get_secret_value() if token else ""
    if not expected:
        return _refuse(404, "metrics_disabled", "set METRICS_TOKEN to enable /metrics")
    given = request.headers.get("Authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {expected}".encode()):
        response = _refuse(401, "unauthorized", "send Authorization: Bearer <METRICS_TOKEN>")
        response.headers["WWW-Authenticate"] = "Bearer"
        return response
    registry = CollectorRegistry()
    if os.environ.get(MULTIPROC_ENV):
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:  # one process (the Flask test client, a plain `flask run`): its own counts
        registry = REGISTRY
    text = generate_latest(registry)
    text += generate_latest(_DatabaseRegistry(current_app.extensions["webhooks.engine"]))
    return Response(text, mimetype=CONTENT_TYPE_LATEST)


def _refuse(status: int, code: str, message: str) -> Response:
    response = jsonify(error=code, message=message)
    response.status_code = status
    return response


class _DatabaseRegistry(CollectorRegistry):
    """A registry of one collector that reads the database when scraped."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(auto_describe=False)
        self.register(DatabaseCollector(engine))


class DatabaseCollector(Collector):
    """Backlogs, dead letters, waiting rows, workers and silence, from the database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("webhooks_database_up", "Whether the database answered.")
        try:
            report = collect(self.engine)
        except SQLAlchemyError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from _backlog(report)
        dead = GaugeMetricFamily(
            "webhooks_dead_letters", "Dead letters now, by stage.", labels=["stage"]
        )
        dead.add_metric(["mapping"], report["stage1"]["dead"]["total"])
        dead.add_metric(["delivery"], report["stage2"]["dead"]["total"])
        yield dead
        waiting = report["stage1"]["waiting"]
        yield _gauge("webhooks_waiting", "Deliveries waiting for a person.", waiting["count"])
        yield _gauge(
            "webhooks_waiting_oldest_seconds",
            "Age of the oldest waiting delivery.",
            waiting["oldest_seconds"] or 0,
        )
        workers = GaugeMetricFamily(
            "webhooks_workers",
            "Delivery workers by heartbeat: live (within 60 s) by delivery state, stale.",
            labels=["state"],
        )
        for state, count in sorted(report["workers"]["delivery"].items()):
            workers.add_metric([state], count)
        workers.add_metric(["stale"], report["workers"]["stale"])
        yield workers
        last = GaugeMetricFamily(
            "webhooks_last_received_seconds",
            "Seconds since the last webhook from each provider.",
            labels=["provider"],
        )
        newest: dict[str, float] = {}
        for item in report["received"]:
            age = item["last_seconds_ago"]
            if age is not None:
                newest[item["provider"]] = min(age, newest.get(item["provider"], age))
        for provider, age in sorted(newest.items()):
            last.add_metric([provider], age)
        yield last


def _backlog(report: dict[str, Any]) -> Iterator[Metric]:
    size = GaugeMetricFamily(
        "webhooks_backlog", "Items queued, by stage and lane.", labels=["stage", "lane"]
    )
    oldest = GaugeMetricFamily(
        "webhooks_backlog_oldest_seconds",
        "Age of the oldest queued item (0 when none), by stage and lane.",
        labels=["stage", "lane"],
    )
    for stage, name in (("stage1", "mapping"), ("stage2", "delivery")):
        for lane, value in report[stage]["backlog"].items():
            size.add_metric([name, lane], value["count"])
            oldest.add_metric([name, lane], value["oldest_seconds"] or 0)
    yield size
    yield oldest


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    gauge = GaugeMetricFamily(name, documentation)
    gauge.add_metric([], value)
    return gauge
