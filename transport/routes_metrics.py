"""``GET /metrics``: the daemon's figures in the Prometheus text format (``transport/metrics.py`` builds them).

Needs the ``metrics:read`` scope (``admin`` implies it): the figures name pairs and peers' activity, so they are
not open by default (``[metrics] port`` opens a token-free listener of its own: ``metrics_server.py``). The
state is copied on the trio thread, where the actors keep it, and the text is built in a worker thread
(``Metrics.scrape``): the trio thread's share is about 2 µs per pair.
"""

from __future__ import annotations

from typing import cast

from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4
from quart import Blueprint, Response, current_app

from spl.transport.auth import require
from spl.transport.context import caller
from spl.transport.metrics import METRICS_KEY, Metrics

__all__ = ["blueprint"]

blueprint = Blueprint("metrics", __name__)


@blueprint.get("/metrics")
async def metrics() -> Response:
    require(caller(), "metrics:read")
    body = await cast(Metrics, current_app.config[METRICS_KEY]).scrape()
    # The classic text format (0.0.4), which every Prometheus release and compatible scraper reads.
    return Response(body, status=200, content_type=CONTENT_TYPE_PLAIN_0_0_4)
