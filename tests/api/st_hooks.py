"""Schemathesis hooks for the p2p-node API fuzz run (loaded through SCHEMATHESIS_HOOKS).

docs/openapi.yaml describes the server exactly, so it allows valid submissions that take
minutes: `sleep` up to 600000 ms, `timeout_ms` up to an hour, `max_attempts` up to 100 (a
`fail` task with 100 attempts spends ~2.5 min in retry backoff). Under `?wait=true` such a
request would block the fuzz run, and even without it a long sleep ties up a worker slot.
Right before each request this hook bounds the *valid* numeric values of a submission
(of each task of a batch),
leaving everything else (types, unknown fields, out-of-range values, bad payloads: what
the negative tests are about) untouched:

- `timeout_ms` in 1..=3600000        -> min(value, 1000); absent or null -> 1000
- `max_attempts` in 1..=100          -> min(value, 2)
- a `sleep` payload that parses as a number of milliseconds 0..=600000 -> min(value, 300)

so a valid task is final within ~2 x 1 s + backoff.

`POST /v1/modules` takes any bytes by its schema (`format: binary`), but only a WASI command
module is a module: every upload body is replaced with the committed example
examples/wasm/wordcount.wasm (the refusals of other bytes are tests/wasm.rs's and
tests/api's job). Nothing else is changed.
"""

from pathlib import Path

import schemathesis

MODULE = (Path(__file__).resolve().parents[2] / "examples" / "wasm" / "wordcount.wasm").read_bytes()

MAX_TIMEOUT_MS = 1000
MAX_ATTEMPTS = 2
MAX_SLEEP_MS = 300


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


@schemathesis.hook
def before_call(context, case, kwargs):
    if case.method.upper() != "POST":
        return
    if case.path == "/v1/modules":
        case.body = MODULE
    elif case.path == "/v1/tasks":
        _bound(case.body)
    elif case.path == "/v1/tasks/batch" and isinstance(case.body, dict) and isinstance(case.body.get("tasks"), list):
        for task in case.body["tasks"]:
            _bound(task)


def _bound(body):
    if not isinstance(body, dict):
        return
    t = body.get("timeout_ms")
    if t is None:
        body["timeout_ms"] = MAX_TIMEOUT_MS
    elif _is_int(t) and 1 <= t <= 3_600_000:
        body["timeout_ms"] = min(t, MAX_TIMEOUT_MS)
    a = body.get("max_attempts")
    if _is_int(a) and 1 <= a <= 100:
        body["max_attempts"] = min(a, MAX_ATTEMPTS)
    p = body.get("payload")
    if body.get("type") == "sleep" and isinstance(p, str):
        s = p.strip()
        if s.isascii() and s.isdigit() and int(s) <= 600_000:
            body["payload"] = str(min(int(s), MAX_SLEEP_MS))
