"""Shared helpers for the API contract tests: configuration from the environment, a small
HTTP client, the OpenAPI document as JSON Schema, and a Prometheus text parser."""

from __future__ import annotations

import copy
import json
import math
import os
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import jsonschema
import requests
import yaml

REPO_ROOT = Path(os.environ.get("P2P_REPO_ROOT", Path(__file__).resolve().parents[2]))
OPENAPI_PATH = Path(os.environ.get("P2P_OPENAPI", REPO_ROOT / "docs" / "openapi.yaml"))
DASHBOARD_PATH = Path(os.environ.get("P2P_DASHBOARD", REPO_ROOT / "monitoring" / "grafana-dashboard.json"))
PROMETHEUS_CONFIG_PATH = Path(os.environ.get("P2P_PROMETHEUS_CONFIG", REPO_ROOT / "monitoring" / "prometheus.yml"))

# Request timeout for ordinary calls; `wait=true` calls pass their own.
HTTP_TIMEOUT = float(os.environ.get("P2P_HTTP_TIMEOUT", "30"))
# Largest request body the server accepts (src/api/mod.rs MAX_BODY_BYTES).
MAX_BODY_BYTES = 1024 * 1024
KNOWN_TYPES = ["compute", "storage", "echo", "sleep", "fail"]
FINAL_STATES = {"completed", "failed", "cancelled"}
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
RFC3339_MS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


def _url(v: str) -> str:
    v = v.strip().rstrip("/")
    if v and "://" not in v:
        v = "http://" + v
    return v


def _urls(name: str) -> list[str]:
    return [_url(u) for u in os.environ.get(name, "").split(",") if u.strip()]


@dataclass
class Env:
    gateway: str | None = None
    workers: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)
    gateway_metrics: str | None = None
    small_queue: str | None = None
    small_queue_capacity: int | None = None
    no_compute: str | None = None
    unjoined: str | None = None

    @classmethod
    def load(cls) -> "Env":
        metrics = _urls("P2P_METRICS_URLS")
        gm = os.environ.get("P2P_GATEWAY_METRICS")
        cap = os.environ.get("P2P_SMALL_QUEUE_CAPACITY")
        return cls(
            gateway=_url(os.environ["P2P_GATEWAY_API"]) if os.environ.get("P2P_GATEWAY_API") else None,
            workers=_urls("P2P_WORKER_APIS"),
            metrics=metrics,
            gateway_metrics=_url(gm) if gm else (metrics[0] if metrics else None),
            small_queue=_url(os.environ["P2P_SMALL_QUEUE_API"]) if os.environ.get("P2P_SMALL_QUEUE_API") else None,
            small_queue_capacity=int(cap) if cap else None,
            no_compute=_url(os.environ["P2P_NO_COMPUTE_API"]) if os.environ.get("P2P_NO_COMPUTE_API") else None,
            unjoined=_url(os.environ["P2P_UNJOINED_API"]) if os.environ.get("P2P_UNJOINED_API") else None,
        )


class Api:
    """A thin client for one node's API."""

    def __init__(self, base: str):
        self.base = base
        self.s = requests.Session()

    def req(self, method: str, path: str, timeout: float | None = None, **kw) -> requests.Response:
        return self.s.request(method, self.base + path, timeout=timeout or HTTP_TIMEOUT, **kw)

    def get(self, path: str, **kw) -> requests.Response:
        return self.req("GET", path, **kw)

    def delete(self, path: str, **kw) -> requests.Response:
        return self.req("DELETE", path, **kw)

    def post_raw(self, path: str, data: bytes | str, **kw) -> requests.Response:
        headers = kw.pop("headers", {"Content-Type": "application/json"})
        return self.req("POST", path, data=data, headers=headers, **kw)

    def submit(self, body: dict, wait: bool = False, timeout: float | None = None) -> requests.Response:
        path = "/v1/tasks?wait=true" if wait else "/v1/tasks"
        return self.req("POST", path, json=body, timeout=timeout)

    def submit_ok(self, body: dict) -> str:
        r = self.submit(body)
        assert r.status_code == 202, f"submit {body}: {r.status_code} {r.text}"
        return r.json()["id"]

    def run(self, body: dict, timeout: float = 60) -> dict:
        """Submits with wait=true and returns the final record."""
        r = self.submit(body, wait=True, timeout=timeout)
        assert r.status_code == 200, f"submit?wait=true {body}: {r.status_code} {r.text}"
        return r.json()

    def task(self, task_id: str) -> dict:
        r = self.get(f"/v1/tasks/{task_id}")
        assert r.status_code == 200, f"GET task {task_id}: {r.status_code} {r.text}"
        return r.json()

    def wait_state(self, task_id: str, states: set[str], timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            rec = self.task(task_id)
            if rec["state"] in states:
                return rec
            if time.monotonic() > deadline:
                raise AssertionError(f"task {task_id} still {rec['state']} after {timeout}s, wanted {states}: {rec}")
            time.sleep(0.05)

    def status(self) -> dict:
        r = self.get("/v1/status")
        assert r.status_code == 200, r.text
        return r.json()

    def quiesce(self, timeout: float = 60) -> None:
        """Waits until this gateway has no unfinished task (none queued, running or in backoff)."""
        deadline = time.monotonic() + timeout
        while True:
            tasks = self.get("/v1/tasks?limit=10000").json()["tasks"]
            open_ = [t["id"] for t in tasks if t["state"] not in FINAL_STATES]
            if not open_:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(open_)} task(s) still unfinished at {self.base} after {timeout}s: {open_[:5]}")
            time.sleep(0.1)


def random_id() -> str:
    return str(uuid.uuid4())


# ---------------------------------------------------------------------------------------
# OpenAPI document -> JSON Schema


def load_openapi() -> dict:
    with open(OPENAPI_PATH) as f:
        return yaml.safe_load(f)


def _to_json_schema(node, strict: bool):
    """OpenAPI 3.0 schema objects -> JSON Schema (draft 7): `nullable` becomes a union with
    null; with `strict`, objects that list `properties` and say nothing about additional
    ones get `additionalProperties: false`, so an undocumented field in a response fails."""
    if isinstance(node, list):
        return [_to_json_schema(n, strict) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _to_json_schema(v, strict) for k, v in node.items() if k not in ("discriminator", "example", "examples")}
    if strict and out.get("type") == "object" and "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    if out.pop("nullable", False):
        out = {"anyOf": [out, {"type": "null"}]}
    return out


_SPEC_CACHE: dict = {}


def schema_validator(name: str, strict: bool = True) -> jsonschema.Draft7Validator:
    key = (name, strict)
    if key not in _SPEC_CACHE:
        doc = load_openapi()
        root = {"components": {"schemas": _to_json_schema(doc["components"]["schemas"], strict)}}
        root["$ref"] = f"#/components/schemas/{name}"
        _SPEC_CACHE[key] = jsonschema.Draft7Validator(root)
    return _SPEC_CACHE[key]


def assert_schema(instance, name: str) -> None:
    """Fails with every violation when `instance` does not match component schema `name`
    (strict: no undocumented fields)."""
    errors = sorted(schema_validator(name).iter_errors(instance), key=lambda e: list(e.path))
    if errors:
        lines = [f"  at /{'/'.join(map(str, e.path))}: {e.message}" for e in errors[:20]]
        raise AssertionError(f"response does not match schema {name}:\n" + "\n".join(lines) + f"\n{json.dumps(instance)[:2000]}")


def assert_error(r: requests.Response, status: int, code: str | None = None, mentions: list[str] | tuple = ()) -> dict:
    """The response is `status` with a JSON `Error` body (and `code`, naming `mentions`)."""
    assert r.status_code == status, f"expected {status}, got {r.status_code}: {r.headers.get('content-type')} {r.text[:500]}"
    ct = r.headers.get("content-type", "")
    assert ct.startswith("application/json"), f"error body must be JSON, got content-type {ct!r}: {r.text[:300]}"
    body = r.json()
    assert_schema(body, "Error")
    if code:
        assert body["code"] == code, f"expected code {code}, got {body}"
    for m in mentions:
        assert m in body["error"], f"error should name {m!r}: {body['error']!r}"
    return body


def assert_record(rec: dict) -> None:
    """A task record matches the schema and its own invariants."""
    assert_schema(rec, "TaskRecord")
    assert UUID_RE.match(rec["id"]), rec["id"]
    assert RFC3339_MS_RE.match(rec["submitted_at"]), rec["submitted_at"]
    if rec["state"] in FINAL_STATES:
        assert rec["finished_at"] is not None, rec
        assert RFC3339_MS_RE.match(rec["finished_at"]), rec["finished_at"]
        assert rec["finished_at"] >= rec["submitted_at"], rec
    else:
        assert rec["finished_at"] is None, rec
    if rec["state"] == "completed":
        assert rec["result"] is not None and rec["error"] is None, rec
        assert rec["attempt_history"] and rec["attempt_history"][-1]["outcome"] == "ok", rec
        assert rec["worker"] == rec["attempt_history"][-1]["worker"], rec
    if rec["state"] in ("failed", "cancelled"):
        assert rec["error"], rec
        assert rec["result"] is None, rec
    dispatched = [a for a in rec["attempt_history"] if a["outcome"] != "queued"]
    assert rec["attempts"] == len(dispatched), rec
    assert [a["attempt"] for a in dispatched] == list(range(1, len(dispatched) + 1)), rec


# ---------------------------------------------------------------------------------------
# Prometheus / OpenMetrics text

_SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\S+)?$")
_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


@dataclass
class Sample:
    name: str
    labels: dict
    value: float


class Exposition:
    def __init__(self, text: str):
        self.text = text
        self.samples: list[Sample] = []
        self.types: dict[str, str] = {}
        for line in text.splitlines():
            if not line.strip():
                continue
            if line.startswith("#"):
                parts = line.split(None, 3)
                if len(parts) >= 4 and parts[1] == "TYPE":
                    self.types[parts[2]] = parts[3].strip()
                continue
            m = _SAMPLE_RE.match(line)
            assert m, f"unparseable exposition line: {line!r}"
            labels = dict(_LABEL_RE.findall(m.group(3) or ""))
            self.samples.append(Sample(m.group(1), labels, float(m.group(4))))

    @property
    def names(self) -> set[str]:
        return {s.name for s in self.samples}

    def get(self, name: str, **labels) -> list[Sample]:
        return [s for s in self.samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]

    def value(self, name: str, default: float | None = None, **labels) -> float:
        """Sum of the matching samples; `default` when there are none (a family with no
        series yet), else an assertion error."""
        found = self.get(name, **labels)
        if not found:
            if default is not None:
                return default
            raise AssertionError(f"no sample {name}{labels or ''}")
        return sum(s.value for s in found)


def scrape(url: str) -> Exposition:
    r = requests.get(url.rstrip("/") + ("" if url.rstrip("/").endswith("/metrics") else "/metrics"), timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, f"{url}: {r.status_code}"
    return Exposition(r.text)


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus' histogram_quantile over (le, cumulative count) pairs."""
    buckets = sorted(buckets)
    total = buckets[-1][1]
    if total == 0:
        return math.nan
    rank = q * total
    prev_le, prev_c = 0.0, 0.0
    for le, c in buckets:
        if c >= rank:
            if math.isinf(le):
                return prev_le
            return prev_le + (le - prev_le) * ((rank - prev_c) / max(c - prev_c, 1e-12))
        prev_le, prev_c = le, c
    return prev_le


def copy_json(v):
    return copy.deepcopy(v)
