"""Every endpoint's happy path and shape, and every error status, on the main cluster.

Each response body is checked against its schema in docs/openapi.yaml, strictly: a field the
document does not list fails the test, so the document and the server cannot drift apart."""

from __future__ import annotations

import json
import time

import pytest

from helpers import (
    KNOWN_TYPES,
    MAX_BODY_BYTES,
    UUID_RE,
    assert_error,
    assert_record,
    assert_schema,
    random_id,
)

# ----------------------------------------------------------------------------- health


def test_healthz_on_every_node(all_apis):
    for api in all_apis:
        r = api.get("/healthz")
        assert r.status_code == 200, (api.base, r.text)
        assert r.headers["content-type"].startswith("application/json")
        assert r.json() == {"status": "ok"}
        assert_schema(r.json(), "Healthz")


def test_readyz_on_every_joined_node(all_apis):
    for api in all_apis:
        r = api.get("/readyz")
        assert r.status_code == 200, (api.base, r.text)
        assert r.json() == {"ready": True}
        assert_schema(r.json(), "Readyz")


def test_readyz_503_before_joining(unjoined):
    r = unjoined.get("/readyz")
    assert r.status_code == 503, r.text
    body = r.json()
    assert_schema(body, "Readyz")
    assert body["ready"] is False and body["reason"], body
    assert unjoined.get("/healthz").status_code == 200, "an unjoined node is still alive"
    assert unjoined.status()["ready"] is False


# ----------------------------------------------------------------------------- cluster views


def test_status_shape(all_apis):
    for api in all_apis:
        r = api.get("/v1/status")
        assert r.status_code == 200
        s = r.json()
        assert_schema(s, "Status")
        assert s["ready"] is True
        assert s["listen_addresses"], s
        assert s["connected_peers"] >= 1, s
        assert s["members"]["alive"] >= 1, s


def test_peers_lists_every_worker_alive(gw, workers):
    r = gw.get("/v1/peers")
    assert r.status_code == 200
    body = r.json()
    assert_schema(body, "PeerList")
    by_id = {p["peer_id"]: p for p in body["peers"]}
    for w in workers:
        me = w.status()
        p = by_id.get(me["peer_id"])
        assert p, f"gateway does not list worker {me['peer_id']} ({w.base})"
        assert p["state"] == "alive" and p["role"] == "worker", p
        assert p["connection"] in ("direct", "relayed"), p
        assert p["capacity"] >= 1, p
    keys = [(p["role"], p["peer_id"]) for p in body["peers"]]
    assert keys == sorted(keys), "peers are sorted by role, then peer id"
    assert gw.status()["peer_id"] not in by_id, "a node does not list itself"


def test_capabilities_shape(all_apis):
    for api in all_apis:
        r = api.get("/v1/capabilities")
        assert r.status_code == 200
        c = r.json()
        assert_schema(c, "Capabilities")
        for name, entry in c["cluster"].items():
            assert entry["alive_workers"] <= len(entry["workers"]), (name, entry)
        me = api.status()["peer_id"]
        for cap in c["local"]["capabilities"]:
            assert me in c["cluster"][cap]["workers"], f"{cap}: this node advertises it"


def test_capabilities_match_the_workers(gw, workers):
    cluster = gw.get("/v1/capabilities").json()["cluster"]
    for w in workers:
        me = w.status()["peer_id"]
        for cap in w.get("/v1/capabilities").json()["local"]["capabilities"]:
            assert me in cluster.get(cap, {}).get("workers", []), f"gateway does not know {me} offers {cap}"


# ----------------------------------------------------------------------------- submit, get, list


def test_submit_returns_202_pending_then_completes(gw):
    r = gw.submit({"type": "echo", "payload": "hello contract"})
    assert r.status_code == 202, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert_schema(body, "Accepted")
    assert body["state"] == "pending" and UUID_RE.match(body["id"]), body
    rec = gw.wait_state(body["id"], {"completed", "failed", "cancelled"})
    assert_record(rec)
    assert rec["state"] == "completed", rec
    assert rec["type"] == "echo" and rec["payload"] == "hello contract" and rec["result"] == "hello contract"
    assert rec["attempts"] == 1


@pytest.mark.parametrize(
    "body, check",
    [
        ({"type": "echo", "payload": "waited"}, lambda r: r["state"] == "completed" and r["result"] == "waited"),
        ({"type": "echo"}, lambda r: r["state"] == "completed" and r["payload"] == "" and r["result"] == ""),
        (
            {"type": "sleep", "payload": "200", "timeout_ms": 5000, "max_attempts": 1},
            lambda r: r["state"] == "completed" and r["result"] == "slept 200 ms",
        ),
        (
            {"type": "fail", "payload": "boom-contract", "max_attempts": 2},
            lambda r: r["state"] == "failed" and "boom-contract" in r["error"] and r["attempts"] == 2,
        ),
        (
            {"type": "compute", "payload": "test_payload", "timeout_ms": 60000},
            lambda r: r["state"] == "completed" and {"nonce", "hash", "difficulty"} <= set(json.loads(r["result"])),
        ),
        ({"type": "echo", "payload": "nulls", "timeout_ms": None, "max_attempts": None}, lambda r: r["state"] == "completed"),
    ],
    ids=["echo", "echo-no-payload", "sleep", "fail-final-200", "compute", "null-means-default"],
)
def test_submit_wait_returns_final_record(gw, body, check):
    r = gw.submit(body, wait=True, timeout=120)
    assert r.status_code == 200, r.text
    rec = r.json()
    assert_record(rec)
    assert check(rec), rec
    assert gw.task(rec["id"]) == rec, "GET returns the same final record"


def test_storage_put_then_get(gw):
    key = "contract-" + random_id()[:8]
    put = gw.run({"type": "storage", "payload": f"put {key} hello storage", "timeout_ms": 20000})
    assert_record(put)
    assert put["state"] == "completed", put
    got = gw.run({"type": "storage", "payload": f"get {key}", "timeout_ms": 20000})
    assert got["state"] == "completed", got
    assert "hello storage" in got["result"], got


def test_wait_false_is_the_default(gw):
    r = gw.req("POST", "/v1/tasks?wait=false", json={"type": "echo", "payload": "x"})
    assert r.status_code == 202, r.text


def test_list_tasks(gw):
    ids = [gw.submit_ok({"type": "echo", "payload": f"list-{i}"}) for i in range(3)]
    for i in ids:
        gw.wait_state(i, {"completed"})
    r = gw.get("/v1/tasks?limit=3")
    assert r.status_code == 200
    body = r.json()
    assert_schema(body, "TaskList")
    got = [t["id"] for t in body["tasks"]]
    assert got == list(reversed(ids)), "most recently submitted first"
    for t in body["tasks"]:
        assert_record(t)
    assert gw.get("/v1/tasks?limit=0").json() == {"tasks": []}
    default = gw.get("/v1/tasks").json()["tasks"]
    assert 3 <= len(default) <= 100


def test_get_task(gw):
    tid = gw.submit_ok({"type": "echo", "payload": "get-me"})
    rec = gw.wait_state(tid, {"completed"})
    r = gw.get(f"/v1/tasks/{tid}")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    assert r.json() == rec


def test_tasks_spread_over_workers(gw, workers):
    if len(workers) < 2:
        pytest.skip("needs two or more workers in P2P_WORKER_APIS")
    seen = set()
    for i in range(16):
        seen.add(gw.run({"type": "echo", "payload": f"spread-{i}"})["worker"])
    assert len(seen) >= 2, f"16 tasks all ran on {seen}"


# ----------------------------------------------------------------------------- 400


def _post(gw, raw, query=""):
    return gw.post_raw("/v1/tasks" + query, raw if isinstance(raw, (bytes, str)) else json.dumps(raw))


BAD_BODIES = [
    # (id, body, field the error must name)
    ("unknown-field", {"type": "echo", "payload": "x", "colour": "red"}, "colour"),
    ("type-not-string", {"type": 5}, "type"),
    ("type-null", {"type": None}, "type"),
    ("type-empty", {"type": ""}, "type"),
    ("type-missing", {"payload": "x"}, "type"),
    ("payload-not-string", {"type": "echo", "payload": 7}, "payload"),
    ("payload-null", {"type": "echo", "payload": None}, "payload"),
    ("timeout-string", {"type": "echo", "timeout_ms": "5"}, "timeout_ms"),
    ("timeout-negative", {"type": "echo", "timeout_ms": -1}, "timeout_ms"),
    ("timeout-fraction", {"type": "echo", "timeout_ms": 1.5}, "timeout_ms"),
    ("timeout-zero", {"type": "echo", "timeout_ms": 0}, "timeout_ms"),
    ("timeout-over-an-hour", {"type": "echo", "timeout_ms": 3600001}, "timeout_ms"),
    ("timeout-over-u64", {"type": "echo", "timeout_ms": 2**64}, "timeout_ms"),
    ("attempts-zero", {"type": "echo", "max_attempts": 0}, "max_attempts"),
    ("attempts-101", {"type": "echo", "max_attempts": 101}, "max_attempts"),
    ("attempts-string", {"type": "echo", "max_attempts": "3"}, "max_attempts"),
    ("attempts-over-u32", {"type": "echo", "max_attempts": 2**32}, "max_attempts"),
    ("sleep-not-a-number", {"type": "sleep", "payload": "soon"}, "payload"),
    ("sleep-too-long", {"type": "sleep", "payload": "600001"}, "payload"),
    ("sleep-no-payload", {"type": "sleep"}, "payload"),
    ("storage-bad-op", {"type": "storage", "payload": "delete k"}, "payload"),
    ("storage-value-too-big", {"type": "storage", "payload": "put k " + "v" * 61441}, "payload"),
]


@pytest.mark.parametrize("body, field", [(b, f) for _, b, f in BAD_BODIES], ids=[i for i, _, _ in BAD_BODIES])
def test_400_names_the_field(gw, body, field):
    assert_error(_post(gw, body), 400, "bad_request", mentions=[field])


@pytest.mark.parametrize(
    "raw",
    ["", "not json", "[]", '"echo"', "null", '{"type": "echo"', b"\xff\xfe"],
    ids=["empty", "not-json", "array", "string", "null", "truncated", "not-utf8"],
)
def test_400_malformed_body(gw, raw):
    assert_error(_post(gw, raw), 400, "bad_request")


def test_400_trailing_garbage_after_the_body(gw):
    # serde_path_to_error::deserialize does not check for trailing input; a body that is a
    # JSON object followed by more text must be refused, not silently truncated.
    assert_error(_post(gw, '{"type": "echo", "payload": "x"} {"type": "fail"}'), 400, "bad_request")


@pytest.mark.parametrize(
    "query, name",
    [("?wait=maybe", "wait"), ("?wait=1", "wait"), ("?colour=red", "colour")],
)
def test_400_bad_submit_query(gw, query, name):
    assert_error(_post(gw, {"type": "echo"}, query), 400, "bad_request", mentions=[name])


@pytest.mark.parametrize("query, name", [("?limit=-1", "limit"), ("?limit=ten", "limit"), ("?colour=red", "colour")])
def test_400_bad_list_query(gw, query, name):
    assert_error(gw.get("/v1/tasks" + query), 400, "bad_request", mentions=[name])


@pytest.mark.parametrize("task_type", ["mine-bitcoin", "ECHO", " echo"])
def test_400_unknown_task_type(gw, task_type):
    body = assert_error(_post(gw, {"type": task_type, "payload": "x"}), 400, "unknown_task_type")
    assert task_type in body["error"]
    for t in KNOWN_TYPES:
        assert t in body["error"], "the error lists the known types"


def test_400_for_undecodable_task_id(gw):
    # `%FF` is not UTF-8: the id cannot be decoded, which is the client's fault (400), and
    # the body is the JSON Error like every other error.
    assert_error(gw.get("/v1/tasks/%FF"), 400)


# ----------------------------------------------------------------------------- 404, 405


def test_404_unknown_task(gw):
    tid = random_id()
    assert_error(gw.get(f"/v1/tasks/{tid}"), 404, "not_found", mentions=[tid])
    assert_error(gw.delete(f"/v1/tasks/{tid}"), 404, "not_found", mentions=[tid])
    assert_error(gw.get("/v1/tasks/not-a-uuid"), 404, "not_found")


@pytest.mark.parametrize("path", ["/nope", "/v1", "/v1/nope", "/v1/tasks/", "/v2/tasks", "/v1/tasks/a/b", "/metrics"])
def test_404_unknown_path(gw, path):
    assert_error(gw.get(path), 404, "not_found")


@pytest.mark.parametrize(
    "method, path, allow",
    [
        ("PUT", "/v1/tasks", "POST"),
        ("PATCH", "/v1/tasks/" + "0" * 8, "DELETE"),
        ("POST", "/v1/peers", "GET"),
        ("DELETE", "/v1/status", "GET"),
        ("POST", "/v1/capabilities", "GET"),
        ("POST", "/healthz", "GET"),
        ("DELETE", "/readyz", "GET"),
    ],
)
def test_405_wrong_method(gw, method, path, allow):
    r = gw.req(method, path)
    assert_error(r, 405, "method_not_allowed")
    assert allow in r.headers.get("allow", ""), r.headers


# ----------------------------------------------------------------------------- 409, cancel


def test_409_cancel_of_a_finished_task(gw):
    done = gw.run({"type": "echo", "payload": "finished"})
    assert done["state"] == "completed"
    body = assert_error(gw.delete(f"/v1/tasks/{done['id']}"), 409, "conflict", mentions=[done["id"], "completed"])
    assert body
    failed = gw.run({"type": "fail", "payload": "x", "max_attempts": 1})
    assert failed["state"] == "failed"
    assert_error(gw.delete(f"/v1/tasks/{failed['id']}"), 409, "conflict", mentions=["failed"])
    assert gw.task(done["id"]) == done, "a refused cancel changes nothing"


def test_cancel_running_sleep(gw):
    sleep_ms = 1500
    tid = gw.submit_ok({"type": "sleep", "payload": str(sleep_ms), "timeout_ms": 10000, "max_attempts": 1})
    gw.wait_state(tid, {"running"}, timeout=10)
    r = gw.delete(f"/v1/tasks/{tid}")
    assert r.status_code == 200, r.text
    rec = r.json()
    assert_record(rec)
    assert rec["state"] == "cancelled" and rec["error"] == "cancelled by user", rec
    assert rec["attempt_history"][-1]["outcome"] == "cancelled", rec
    assert gw.task(tid) == rec
    # A second cancel is a conflict: the task is already final.
    assert_error(gw.delete(f"/v1/tasks/{tid}"), 409, "conflict", mentions=["cancelled"])
    # The worker still sleeps out the cancelled attempt (cancel is not sent to it); let it
    # finish so the tests after this one start on an idle cluster.
    time.sleep(sleep_ms / 1000 + 0.5)
    later = gw.task(tid)
    assert later["state"] == "cancelled", f"a late answer must not change a cancelled task: {later}"


def test_wait_true_returns_cancelled_record(gw):
    import threading

    out = {}

    def waiter():
        out["r"] = gw.submit({"type": "sleep", "payload": "1500", "timeout_ms": 10000, "max_attempts": 1}, wait=True)

    t = threading.Thread(target=waiter)
    t.start()
    deadline = time.monotonic() + 10
    tid = None
    while tid is None and time.monotonic() < deadline:
        for task in gw.get("/v1/tasks?limit=5").json()["tasks"]:
            if task["type"] == "sleep" and task["payload"] == "1500" and task["state"] in ("pending", "running"):
                tid = task["id"]
                break
        time.sleep(0.05)
    assert tid, "the waiting submission never showed up in the task list"
    assert gw.delete(f"/v1/tasks/{tid}").status_code == 200
    t.join(15)
    r = out["r"]
    assert r.status_code == 200, r.text
    assert r.json()["id"] == tid and r.json()["state"] == "cancelled", r.json()
    time.sleep(2)  # let the worker finish the orphaned sleep


# ----------------------------------------------------------------------------- 413


def test_413_oversized_body(gw):
    body = json.dumps({"type": "echo", "payload": "a" * MAX_BODY_BYTES})
    r = gw.post_raw("/v1/tasks", body)
    assert_error(r, 413, "payload_too_large")
    # The unread rest of the body leaves the connection unusable: the server must say it closes
    # it, or a keep-alive client's next request meets a closed connection.
    assert r.headers.get("connection", "").lower() == "close", dict(r.headers)


def test_413_oversized_chunked_body(gw):
    def chunks():
        yield b'{"type": "echo", "payload": "'
        for _ in range(MAX_BODY_BYTES // 65536 + 1):
            yield b"a" * 65536
        yield b'"}'

    r = gw.req("POST", "/v1/tasks", data=chunks(), headers={"Content-Type": "application/json"})
    assert_error(r, 413, "payload_too_large")


def test_body_at_the_limit_is_accepted(gw):
    envelope = len(json.dumps({"type": "echo", "payload": ""}))
    body = json.dumps({"type": "echo", "payload": "a" * (MAX_BODY_BYTES - envelope)})
    assert len(body) == MAX_BODY_BYTES
    r = gw.post_raw("/v1/tasks", body)
    assert r.status_code in (202, 400), r.text[:300]
    if r.status_code == 400:
        assert_error(r, 400, "bad_request", mentions=["payload"])


def test_accepted_payload_can_complete(gw):
    """A payload the API accepts must fit the wire messages that carry the task and its
    answer (1 MiB each): the largest payload that passes the body limit either completes or
    is refused up front with a 400 naming `payload` -- never accepted to fail on every
    worker with `worker sent an unusable answer`."""
    envelope = len(json.dumps({"type": "echo", "payload": "", "max_attempts": 1}))
    payload = "a" * (MAX_BODY_BYTES - envelope)
    r = gw.post_raw("/v1/tasks?wait=true", json.dumps({"type": "echo", "payload": payload, "max_attempts": 1}))
    if r.status_code == 400:
        assert_error(r, 400, "bad_request", mentions=["payload"])
        return
    assert r.status_code == 200, r.text[:300]
    rec = r.json()
    assert rec["state"] == "completed", f"accepted a {len(payload)}-byte payload that cannot complete: {rec['error']}"
    assert rec["result"] == payload


# ----------------------------------------------------------------------------- content type


def test_body_is_json_whatever_the_content_type(gw):
    r = gw.post_raw("/v1/tasks", '{"type": "echo", "payload": "ct"}', headers={"Content-Type": "text/plain"})
    assert r.status_code == 202, r.text


# ----------------------------------------------------------------------------- batch


def test_batch_returns_202_with_ids_in_order(gw):
    tasks = [{"type": "echo", "payload": f"batch-{i}"} for i in range(3)]
    r = gw.req("POST", "/v1/tasks/batch", json={"tasks": tasks})
    assert r.status_code == 202, r.text
    body = r.json()
    assert_schema(body, "BatchAccepted")
    assert body["state"] == "pending" and len(body["ids"]) == 3 and len(set(body["ids"])) == 3
    for tid, t in zip(body["ids"], tasks):
        rec = gw.wait_state(tid, {"completed", "failed", "cancelled"})
        assert_record(rec)
        assert rec["state"] == "completed" and rec["payload"] == t["payload"], rec


def test_batch_wait_returns_final_records_in_order(gw):
    tasks = [
        {"type": "echo", "payload": "first"},
        {"type": "sleep", "payload": "100", "timeout_ms": 5000},
        {"type": "fail", "payload": "third", "max_attempts": 1},
    ]
    r = gw.req("POST", "/v1/tasks/batch?wait=true", json={"tasks": tasks}, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert_schema(body, "TaskList")
    assert [t["state"] for t in body["tasks"]] == ["completed", "completed", "failed"], body
    assert [t["payload"] for t in body["tasks"]] == ["first", "100", "third"]
    for rec in body["tasks"]:
        assert_record(rec)


@pytest.mark.parametrize(
    "body, status, code, mentions",
    [
        ({"tasks": [{"type": "echo"}, {"type": "nope"}]}, 400, "unknown_task_type", ["tasks[1]", "nope"]),
        ({"tasks": [{"type": "echo"}, {"type": "echo", "timeout_ms": "x"}]}, 400, "bad_request", ["tasks[1].timeout_ms"]),
        ({"tasks": [{"type": "echo"}, {"type": "echo", "timeout_ms": 0}]}, 400, "bad_request", ["tasks[1]", "timeout_ms"]),
        ({"tasks": [{"type": "echo"}, {"type": ""}]}, 400, "bad_request", ["tasks[1].type"]),
        ({"tasks": [{"type": "echo", "colour": "red"}]}, 400, "bad_request", ["colour"]),
        ({"tasks": [{"type": "sleep", "payload": "soon"}]}, 400, "bad_request", ["tasks[0]", "payload"]),
        ({"tasks": []}, 400, "bad_request", ["tasks"]),
        ({"tasks": [{"type": "echo"}] * 10001}, 400, "bad_request", ["tasks"]),
        ({"tasks": {"type": "echo"}}, 400, "bad_request", ["tasks"]),
        ({}, 400, "bad_request", ["tasks"]),
        ({"tasks": [{"type": "echo"}], "wait": True}, 400, "bad_request", ["wait"]),
    ],
    ids=["unknown-type", "wrong-type", "bad-timeout", "empty-type", "unknown-field", "bad-payload", "empty",
         "too-many", "not-a-list", "missing", "unknown-top-field"],
)
def test_batch_400_all_or_nothing(gw, body, status, code, mentions):
    before = len(gw.get("/v1/tasks?limit=10000").json()["tasks"])
    assert_error(gw.req("POST", "/v1/tasks/batch", json=body), status, code, mentions=mentions)
    after = len(gw.get("/v1/tasks?limit=10000").json()["tasks"])
    assert after == before, "a refused batch accepts none of its tasks"


def test_batch_413(gw):
    body = json.dumps({"tasks": [{"type": "echo", "payload": "a" * (MAX_BODY_BYTES // 2)}] * 2})
    assert_error(gw.post_raw("/v1/tasks/batch", body), 413, "payload_too_large")


def test_batch_path_is_not_a_task_id(gw):
    assert_error(gw.get("/v1/tasks/batch"), 405, "method_not_allowed")
