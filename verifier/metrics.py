"""Health and Prometheus metrics for the verifier node, over plain HTTP.

An operator runs ``refute node`` unattended, so it has to say how it is doing
the way every other service does: a Prometheus scrape endpoint (``/metrics``)
and a health probe (``/health``) that a supervisor or load balancer can poll.
This module is that, in the standard library only (no client library to pin):

* :class:`Metrics`: a thread-safe registry of counters, gauges and histograms,
  rendered in the Prometheus text exposition format, version 0.0.4. Families
  are registered once with their help text and label names, and every name is
  prefixed ``refute_``; using an unregistered name, the wrong kind or the wrong
  labels is a :class:`MetricsError` at the call site instead of a silently
  missing series on a dashboard.
* :class:`MetricsServer`: a stdlib HTTP server on a daemon thread serving both
  endpoints. The health callable is the node's; whatever it raises becomes a
  503 with the error text, never a dead server.
"""

from __future__ import annotations

import bisect
import json
import logging
import math
import re
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Final
from urllib.parse import urlsplit

__all__ = ["CONTENT_TYPE", "DEFAULT_BUCKETS", "PREFIX", "Metrics", "MetricsError", "MetricsServer"]

log = logging.getLogger(__name__)

#: Prefix of every metric name this node exports.
PREFIX: Final = "refute_"
#: Content type of the text exposition format served at ``/metrics``.
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
#: Default histogram buckets in seconds: a replay takes from milliseconds (a
#: spot check of a tiny model) to minutes (a full replay of a real one).
DEFAULT_BUCKETS: Final = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0)

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


class MetricsError(ValueError):
    """A metric used or registered wrongly."""


@dataclass
class _Histogram:
    buckets: list[int]  # per bucket (not cumulative); the last one is +Inf
    sum: float = 0.0
    count: int = 0


@dataclass
class _Family:
    name: str  # with the prefix
    kind: str  # counter | gauge | histogram
    help: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] = ()  # histograms: upper bounds, without +Inf
    values: dict[tuple[str, ...], float] = field(default_factory=dict)  # counters and gauges
    hists: dict[tuple[str, ...], _Histogram] = field(default_factory=dict)

    def new_histogram(self) -> _Histogram:
        return _Histogram([0] * (len(self.buckets) + 1))


class Metrics:
    """A registry of metric families, safe to update from any thread.

    Register each family once (:meth:`counter`, :meth:`gauge`,
    :meth:`histogram`) with bare names (``"claims_checked_total"``); they are
    exported as ``refute_claims_checked_total``. A family without labels is
    exported from registration on (at 0); one with labels gets a series per
    label-value combination used.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._families: dict[str, _Family] = {}

    # -- registration -------------------------------------------------------

    def counter(self, name: str, help: str, labels: Sequence[str] = ()) -> None:
        """Register a counter: a value that only goes up (name it ``..._total``)."""
        self._register(_Family(self._full(name), "counter", help, self._labels(name, labels)))

    def gauge(self, name: str, help: str, labels: Sequence[str] = ()) -> None:
        """Register a gauge: a value that is set, up or down."""
        self._register(_Family(self._full(name), "gauge", help, self._labels(name, labels)))

    def histogram(
        self, name: str, help: str, buckets: Sequence[float] = DEFAULT_BUCKETS, labels: Sequence[str] = ()
    ) -> None:
        """Register a histogram of durations in seconds with these bucket upper bounds (``+Inf`` is added)."""
        label_names = self._labels(name, labels)
        if "le" in label_names:
            raise MetricsError(f"histogram {name!r}: 'le' is reserved for the bucket label")
        bounds = tuple(float(b) for b in buckets)
        if not bounds or any(not math.isfinite(b) for b in bounds) or any(a >= b for a, b in zip(bounds, bounds[1:])):
            raise MetricsError(f"histogram {name!r}: buckets must be finite and strictly increasing, got {buckets!r}")
        self._register(_Family(self._full(name), "histogram", help, label_names, bounds))

    def _register(self, family: _Family) -> None:
        if not isinstance(family.help, str) or not family.help.strip():
            raise MetricsError(f"metric {family.name!r}: help must be a non-empty string")
        with self._lock:
            if family.name in self._families:
                raise MetricsError(f"metric {family.name!r} is already registered")
            if not family.labels:
                if family.kind == "histogram":
                    family.hists[()] = family.new_histogram()
                else:
                    family.values[()] = 0
            self._families[family.name] = family

    @staticmethod
    def _full(name: str) -> str:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise MetricsError(f"invalid metric name {name!r}")
        return PREFIX + name

    @staticmethod
    def _labels(name: str, labels: Sequence[str]) -> tuple[str, ...]:
        if isinstance(labels, str):
            raise MetricsError(f"metric {name!r}: labels must be a sequence of names, not a string")
        out = tuple(labels)
        for label in out:
            if not isinstance(label, str) or not _LABEL.fullmatch(label) or label.startswith("__"):
                raise MetricsError(f"metric {name!r}: invalid label name {label!r}")
        if len(set(out)) != len(out):
            raise MetricsError(f"metric {name!r}: duplicate label names in {out!r}")
        return out

    # -- updates ------------------------------------------------------------

    def inc(self, name: str, n: float = 1, **labels: Any) -> None:
        """Add ``n >= 0`` to a counter."""
        if isinstance(n, bool) or not isinstance(n, (int, float)) or not 0 <= n < math.inf:
            raise MetricsError(f"counter {name!r}: increment must be a finite number >= 0, got {n!r}")
        with self._lock:
            family, key = self._series(name, "counter", labels)
            family.values[key] = family.values.get(key, 0) + n

    def set(self, name: str, value: float, **labels: Any) -> None:
        """Set a gauge."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise MetricsError(f"gauge {name!r}: value must be a number, got {value!r}")
        with self._lock:
            family, key = self._series(name, "gauge", labels)
            family.values[key] = value

    def observe(self, name: str, seconds: float, **labels: Any) -> None:
        """Record one duration (``>= 0`` seconds) in a histogram."""
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds < math.inf:
            raise MetricsError(f"histogram {name!r}: observation must be a finite number >= 0, got {seconds!r}")
        with self._lock:
            family, key = self._series(name, "histogram", labels)
            hist = family.hists.get(key)
            if hist is None:
                hist = family.hists[key] = family.new_histogram()
            # Bucket i counts values <= buckets[i] (Prometheus' "le"): the first bound >= seconds.
            hist.buckets[bisect.bisect_left(family.buckets, seconds)] += 1
            hist.sum += seconds
            hist.count += 1

    def _series(self, name: str, kind: str, labels: dict[str, Any]) -> tuple[_Family, tuple[str, ...]]:
        family = self._families.get(PREFIX + name)
        if family is None:
            raise MetricsError(f"metric {name!r} is not registered")
        if family.kind != kind:
            raise MetricsError(f"metric {name!r} is a {family.kind}, not a {kind}")
        if set(labels) != set(family.labels):
            raise MetricsError(
                f"metric {name!r} takes labels {sorted(family.labels)}, got {sorted(labels)}"
            )
        return family, tuple(str(labels[label]) for label in family.labels)

    # -- exposition ---------------------------------------------------------

    def render(self) -> str:
        """Every family in the Prometheus text format 0.0.4, in registration order."""
        lines: list[str] = []
        with self._lock:
            for f in self._families.values():
                lines.append(f"# HELP {f.name} {_escape_help(f.help)}")
                lines.append(f"# TYPE {f.name} {f.kind}")
                if f.kind == "histogram":
                    for key, hist in sorted(f.hists.items()):
                        pairs = list(zip(f.labels, key))
                        cumulative = 0
                        for bound, n in zip((*f.buckets, math.inf), hist.buckets):
                            cumulative += n
                            bucket_labels = _labels_text([*pairs, ("le", _number(bound))])
                            lines.append(f"{f.name}_bucket{bucket_labels} {cumulative}")
                        lines.append(f"{f.name}_sum{_labels_text(pairs)} {_number(hist.sum)}")
                        lines.append(f"{f.name}_count{_labels_text(pairs)} {hist.count}")
                else:
                    for key, value in sorted(f.values.items()):
                        lines.append(f"{f.name}{_labels_text(list(zip(f.labels, key)))} {_number(value)}")
        return "".join(line + "\n" for line in lines)


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels_text(pairs: Sequence[tuple[str, str]]) -> str:
    if not pairs:
        return ""
    return "{" + ",".join(f'{k}="{_escape_label(v)}"' for k, v in pairs) + "}"


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


class MetricsServer:
    """``GET /metrics`` and ``GET /health`` on a daemon thread.

    ``health()`` returns a JSON-able dict; the answer is 200 when its ``"ok"``
    is true and 503 otherwise, or when ``health()`` raises (the body then says
    why). ``port=0`` binds any free port; read the bound one from
    :attr:`port` after :meth:`start`.
    """

    def __init__(
        self, metrics: Metrics, health: Callable[[], dict[str, Any]], host: str = "127.0.0.1", port: int = 0
    ):
        self.metrics = metrics
        self.health = health
        self.host = host
        self._requested_port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind and start serving; raises :class:`OSError` if the address cannot be bound."""
        if self._server is not None:
            raise MetricsError("metrics server is already started")
        family = socket.getaddrinfo(self.host, self._requested_port, type=socket.SOCK_STREAM)[0][0]
        server_class = type("_Server", (ThreadingHTTPServer,), {"address_family": family, "daemon_threads": True})
        server = server_class((self.host, self._requested_port), _Handler)
        server.owner = self  # type: ignore[attr-defined]  # read by _Handler
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="refute-metrics", daemon=True)
        self._thread.start()
        log.info("metrics and health at %s", self.url)

    def stop(self) -> None:
        """Stop serving and release the port (idempotent)."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join()

    @property
    def port(self) -> int:
        """The bound port."""
        if self._server is None:
            raise MetricsError("metrics server is not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """``http://host:port`` of the running server."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def __enter__(self) -> MetricsServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def health_response(self) -> tuple[int, dict[str, Any]]:
        """The status code and JSON body ``/health`` answers with."""
        try:
            result = self.health()
            if not isinstance(result, dict):
                raise TypeError(f"health() returned {type(result).__name__}, not a dict")
            json.dumps(result, default=str)  # fail here, not half-way through the response
        except Exception as exc:  # a broken health check is unhealthy, and the server lives on
            log.warning("health check failed: %s: %s", type(exc).__name__, exc)
            return 503, {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        return (200 if result.get("ok") else 503), result


class _Handler(BaseHTTPRequestHandler):
    server_version = "refute-node"

    def do_GET(self) -> None:  # noqa: N802  (http.server's naming)
        owner: MetricsServer = self.server.owner  # type: ignore[attr-defined]
        path = urlsplit(self.path).path
        if path == "/metrics":
            try:
                body = owner.metrics.render().encode()
            except Exception as exc:  # never expected; still answer rather than drop the connection
                log.exception("rendering metrics failed")
                self._send(500, "text/plain; charset=utf-8", f"{type(exc).__name__}: {exc}\n".encode())
                return
            self._send(200, CONTENT_TYPE, body)
        elif path == "/health":
            status, result = owner.health_response()
            self._send(status, "application/json", (json.dumps(result, default=str) + "\n").encode())
        else:
            self._send(404, "text/plain; charset=utf-8", b"not found: try /metrics or /health\n")

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  (the base class's name)
        log.debug("%s %s", self.address_string(), format % args)
