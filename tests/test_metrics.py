"""Metrics registry and its HTTP server: the exposition parses strictly, histograms add up, endpoints answer."""

import json
import math
import re
import threading
import urllib.error
import urllib.request

import pytest
from hypothesis import given
from hypothesis import strategies as st

from refute.verifier.metrics import Metrics, MetricsError, MetricsServer

# -- a strict parser for the text exposition format 0.0.4 ---------------------

_SAMPLE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\\\|\\"|\\n)*)"')


def _unescape(text: str, quotes: bool) -> str:
    out, i = [], 0
    while i < len(text):
        c = text[i]
        if c == "\\":
            nxt = text[i + 1]  # an escape at the very end is malformed: IndexError fails the test
            if nxt not in ("\\", "n", *(['"'] if quotes else [])):
                raise AssertionError(f"bad escape \\{nxt} in {text!r}")
            out.append("\n" if nxt == "n" else nxt)
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _parse_labels(text: str) -> dict[str, str]:
    assert text.startswith("{") and text.endswith("}"), text
    body, labels, pos = text[1:-1], {}, 0
    while pos < len(body):
        m = _LABEL.match(body, pos)
        assert m, f"bad labels {text!r} at {pos}"
        assert m.group(1) not in labels, f"duplicate label in {text!r}"
        labels[m.group(1)] = _unescape(m.group(2), quotes=True)
        pos = m.end()
        if pos < len(body):
            assert body[pos] == ",", f"expected ',' in {text!r}"
            pos += 1
            assert pos < len(body), f"trailing ',' in {text!r}"
    return labels


def _value(text: str) -> float:
    if text in ("+Inf", "-Inf", "NaN"):
        return float(text.replace("Inf", "inf").replace("NaN", "nan"))
    assert re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", text), f"bad value {text!r}"
    return float(text)


def parse(text: str) -> dict[str, dict]:
    """Families by name: {"type", "help", "samples": [(name, labels, value)]}; asserts on any deviation."""
    assert text == "" or text.endswith("\n")
    families: dict[str, dict] = {}
    current: str | None = None
    seen_series: set = set()
    for line in text.split("\n")[:-1]:  # only "\n" ends a line: other line breaks are text
        if line.startswith("# HELP "):
            name, _, help_text = line[7:].partition(" ")
            assert name not in families, f"second HELP for {name}"
            families[name] = {"help": _unescape(help_text, quotes=False), "type": None, "samples": []}
            current = name
        elif line.startswith("# TYPE "):
            name, kind = line[7:].split(" ")
            assert name == current and families[name]["type"] is None, f"TYPE out of place: {line!r}"
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped")
            families[name]["type"] = kind
        else:
            assert line and line == line.strip(), f"blank or padded line {line!r}"
            assert not line.startswith("#"), f"unexpected comment {line!r}"
            m = _SAMPLE.fullmatch(line)
            assert m, f"bad sample line {line!r}"
            name, labels = m.group(1), _parse_labels(m.group(2)) if m.group(2) else {}
            fam = families[current]
            allowed = {current}
            if fam["type"] == "histogram":
                allowed = {current + "_bucket", current + "_sum", current + "_count"}
            assert name in allowed, f"sample {name} outside its family {current}"
            series = (name, tuple(sorted(labels.items())))
            assert series not in seen_series, f"duplicate series {series}"
            seen_series.add(series)
            fam["samples"].append((name, labels, _value(m.group(3))))
    assert all(f["type"] for f in families.values())
    return families


def check_histograms(families: dict[str, dict]) -> None:
    """Buckets ascend, are cumulative, end in +Inf, and +Inf equals _count, per label set."""
    for name, fam in families.items():
        if fam["type"] != "histogram":
            continue
        groups: dict[tuple, dict] = {}
        for sample, labels, value in fam["samples"]:
            key = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
            g = groups.setdefault(key, {"buckets": []})
            if sample.endswith("_bucket"):
                g["buckets"].append((_value(labels["le"]), value))
            else:
                g[sample[len(name) + 1:]] = value
        for g in groups.values():
            bounds = [b for b, _ in g["buckets"]]
            counts = [c for _, c in g["buckets"]]
            assert bounds == sorted(bounds) and bounds[-1] == math.inf
            assert counts == sorted(counts)
            assert counts[-1] == g["count"]
            assert "sum" in g


# -- the registry ---------------------------------------------------------------


@pytest.fixture
def metrics():
    m = Metrics()
    m.counter("claims_checked_total", "Claims replayed to a verdict.", labels=("verdict",))
    m.counter("polls_total", "Chain polls.")
    m.gauge("games_open", "Dispute games in progress.")
    m.gauge("peer_score", "Score per peer.", labels=("peer",))
    m.histogram("replay_seconds", "Replay duration.", buckets=(0.1, 1, 10))
    return m


def test_exposition_parses_and_has_prefix(metrics):
    metrics.inc("claims_checked_total", verdict="valid")
    metrics.inc("claims_checked_total", 2, verdict="refuted")
    metrics.inc("polls_total")
    metrics.set("games_open", 3)
    metrics.set("peer_score", 0.25, peer="QmA")
    metrics.observe("replay_seconds", 0.5)
    fams = parse(metrics.render())
    assert list(fams) == [
        "refute_claims_checked_total", "refute_polls_total", "refute_games_open",
        "refute_peer_score", "refute_replay_seconds",
    ]
    assert fams["refute_claims_checked_total"]["type"] == "counter"
    assert fams["refute_claims_checked_total"]["help"] == "Claims replayed to a verdict."
    assert sorted((s[1]["verdict"], s[2]) for s in fams["refute_claims_checked_total"]["samples"]) == [
        ("refuted", 2.0), ("valid", 1.0),
    ]
    assert fams["refute_polls_total"]["samples"] == [("refute_polls_total", {}, 1.0)]
    assert fams["refute_games_open"]["samples"] == [("refute_games_open", {}, 3.0)]
    assert fams["refute_peer_score"]["samples"] == [("refute_peer_score", {"peer": "QmA"}, 0.25)]
    check_histograms(fams)


def test_unlabelled_families_exported_from_registration(metrics):
    fams = parse(metrics.render())
    assert fams["refute_polls_total"]["samples"] == [("refute_polls_total", {}, 0.0)]
    assert fams["refute_claims_checked_total"]["samples"] == []  # no label values used yet
    hist = fams["refute_replay_seconds"]["samples"]
    assert [s[2] for s in hist] == [0, 0, 0, 0, 0.0, 0]
    check_histograms(fams)


def test_histogram_buckets_cumulative(metrics):
    for v in [0.05, 0.1, 0.2, 1.0, 3.0, 9.99, 10.0, 11.0, 500.0]:
        metrics.observe("replay_seconds", v)
    fams = parse(metrics.render())
    check_histograms(fams)
    samples = {(s[0], s[1].get("le")): s[2] for s in fams["refute_replay_seconds"]["samples"]}
    # "le" is inclusive: 0.1 falls in the 0.1 bucket, 10.0 in the 10 bucket.
    assert samples[("refute_replay_seconds_bucket", "0.1")] == 2
    assert samples[("refute_replay_seconds_bucket", "1.0")] == 4
    assert samples[("refute_replay_seconds_bucket", "10.0")] == 7
    assert samples[("refute_replay_seconds_bucket", "+Inf")] == 9
    assert samples[("refute_replay_seconds_count", None)] == 9
    assert samples[("refute_replay_seconds_sum", None)] == pytest.approx(535.34)


def test_labelled_histogram():
    m = Metrics()
    m.histogram("step_seconds", "Per step.", buckets=(1, 2), labels=("kind",))
    m.observe("step_seconds", 1.5, kind="a")
    m.observe("step_seconds", 0.5, kind='b"\n')
    fams = parse(m.render())
    check_histograms(fams)
    kinds = {s[1]["kind"] for s in fams["refute_step_seconds"]["samples"]}
    assert kinds == {"a", 'b"\n'}


@given(value=st.text(max_size=20), help_text=st.text(min_size=1, max_size=20).filter(str.strip))
def test_label_and_help_escaping_round_trip(value, help_text):
    m = Metrics()
    m.gauge("g", help_text, labels=("v", "w"))
    m.set("g", 1, v=value, w="\\")
    fams = parse(m.render())
    assert fams["refute_g"]["help"] == help_text
    assert fams["refute_g"]["samples"] == [("refute_g", {"v": value, "w": "\\"}, 1.0)]


def test_label_escaping_exact_text():
    m = Metrics()
    m.counter("c_total", 'help with \\ and\nnewline and "quotes"', labels=("path",))
    m.inc("c_total", path='a\\b"c\nd')
    text = m.render()
    assert '# HELP refute_c_total help with \\\\ and\\nnewline and "quotes"\n' in text
    assert 'refute_c_total{path="a\\\\b\\"c\\nd"} 1\n' in text


def test_special_values_render():
    m = Metrics()
    m.gauge("g", "g", labels=("k",))
    for k, v in [("inf", math.inf), ("ninf", -math.inf), ("nan", math.nan), ("big", 1e300), ("neg", -2)]:
        m.set("g", v, k=k)
    got = {s[1]["k"]: s[2] for s in parse(m.render())["refute_g"]["samples"]}
    assert got["inf"] == math.inf and got["ninf"] == -math.inf and math.isnan(got["nan"])
    assert got["big"] == 1e300 and got["neg"] == -2


def test_misuse_raises(metrics):
    bad = [
        lambda: metrics.inc("nope"),
        lambda: metrics.inc("games_open"),
        lambda: metrics.set("polls_total", 1),
        lambda: metrics.observe("polls_total", 1.0),
        lambda: metrics.inc("polls_total", -1),
        lambda: metrics.inc("polls_total", math.inf),
        lambda: metrics.inc("polls_total", True),
        lambda: metrics.inc("claims_checked_total"),
        lambda: metrics.inc("claims_checked_total", verdict="v", extra="x"),
        lambda: metrics.inc("polls_total", verdict="v"),
        lambda: metrics.set("games_open", "3"),
        lambda: metrics.observe("replay_seconds", -0.1),
        lambda: metrics.observe("replay_seconds", math.nan),
        lambda: metrics.counter("polls_total", "again"),
        lambda: metrics.counter("bad-name", "x"),
        lambda: metrics.counter("", "x"),
        lambda: metrics.counter("x_total", " "),
        lambda: metrics.counter("x_total", "x", labels=("bad-label",)),
        lambda: metrics.counter("x_total", "x", labels=("__reserved",)),
        lambda: metrics.counter("x_total", "x", labels=("a", "a")),
        lambda: metrics.counter("x_total", "x", labels="verdict"),
        lambda: metrics.histogram("h", "x", buckets=(1, 1)),
        lambda: metrics.histogram("h", "x", buckets=(2, 1)),
        lambda: metrics.histogram("h", "x", buckets=(1, math.inf)),
        lambda: metrics.histogram("h", "x", buckets=()),
        lambda: metrics.histogram("h", "x", labels=("le",)),
    ]
    before = metrics.render()
    for call in bad:
        with pytest.raises(MetricsError):
            call()
    assert metrics.render() == before


def test_concurrent_updates_exact(metrics):
    threads_n, per_thread = 8, 5000

    def work(t: int) -> None:
        for i in range(per_thread):
            metrics.inc("polls_total")
            metrics.inc("claims_checked_total", verdict=("valid", "refuted")[i % 2])
            metrics.observe("replay_seconds", 0.5)
            if i % 500 == 0:
                parse(metrics.render())  # rendering concurrently with updates stays consistent

    threads = [threading.Thread(target=work, args=(t,)) for t in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    fams = parse(metrics.render())
    check_histograms(fams)
    total = threads_n * per_thread
    assert fams["refute_polls_total"]["samples"][0][2] == total
    assert sum(s[2] for s in fams["refute_claims_checked_total"]["samples"]) == total
    hist = {(s[0], s[1].get("le")): s[2] for s in fams["refute_replay_seconds"]["samples"]}
    assert hist[("refute_replay_seconds_count", None)] == total
    assert hist[("refute_replay_seconds_bucket", "0.1")] == 0
    assert hist[("refute_replay_seconds_bucket", "1.0")] == total
    assert hist[("refute_replay_seconds_sum", None)] == total * 0.5


# -- the HTTP server ------------------------------------------------------------


def get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.headers["Content-Type"], r.read()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.headers["Content-Type"], e.read()


def test_http_endpoints(metrics):
    health = {"ok": True, "chain": "connected", "block": 12}
    metrics.inc("polls_total", 5)
    with MetricsServer(metrics, lambda: health) as server:
        assert server.port > 0 and server.url == f"http://127.0.0.1:{server.port}"
        status, ctype, body = get(server.url + "/metrics")
        assert status == 200 and ctype.startswith("text/plain; version=0.0.4")
        fams = parse(body.decode())
        assert fams["refute_polls_total"]["samples"][0][2] == 5

        status, ctype, body = get(server.url + "/health")
        assert status == 200 and ctype == "application/json" and json.loads(body) == health

        health["ok"] = False
        status, _, body = get(server.url + "/health")
        assert status == 503 and json.loads(body)["chain"] == "connected"

        for path in ("/", "/metricsx", "/health/x", "/nope?metrics"):
            assert get(server.url + path)[0] == 404
        assert get(server.url + "/metrics?x=1")[0] == 200


def test_health_that_raises_gives_503_and_server_lives(metrics):
    calls = []

    def health():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("chain unreachable")
        if len(calls) == 2:
            return ["not", "a", "dict"]
        if len(calls) == 3:
            return {"ok": True, "x": object()}  # not JSON: rendered with str()
        return {"ok": True}

    with MetricsServer(metrics, health, port=0) as server:
        status, _, body = get(server.url + "/health")
        assert status == 503 and json.loads(body) == {"ok": False, "error": "RuntimeError: chain unreachable"}
        status, _, body = get(server.url + "/health")
        assert status == 503 and "not a dict" in json.loads(body)["error"]
        status, _, body = get(server.url + "/health")
        assert status == 200 and json.loads(body)["x"].startswith("<object")
        assert get(server.url + "/health")[0] == 200
        assert get(server.url + "/metrics")[0] == 200


def test_server_lifecycle(metrics):
    server = MetricsServer(metrics, lambda: {"ok": True})
    with pytest.raises(MetricsError):
        server.port  # noqa: B018  (not started)
    server.start()
    with pytest.raises(MetricsError):
        server.start()
    url = server.url
    assert get(url + "/health")[0] == 200
    server.stop()
    server.stop()
    with pytest.raises(OSError):
        urllib.request.urlopen(url + "/health", timeout=5)
