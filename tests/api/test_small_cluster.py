"""Statuses that need a purpose-built cluster (see README.md): 503 no_capable_worker, 429
queue_full, and the gateway's bookkeeping of worker slots around cancellation.

Order matters within this file: the queue tests leave the small cluster idle; the last test
may leave a buggy gateway unable to dispatch (that is what it detects)."""

from __future__ import annotations

import time

import pytest

from helpers import assert_error, assert_record

# ----------------------------------------------------------------------------- 503


def test_503_no_capable_worker(no_compute):
    caps = no_compute.get("/v1/capabilities").json()
    alive_compute = caps["cluster"].get("compute", {}).get("alive_workers", 0)
    assert alive_compute == 0, f"P2P_NO_COMPUTE_API must point at a cluster without compute workers: {caps}"
    body = assert_error(no_compute.submit({"type": "compute", "payload": "x"}), 503, "no_capable_worker", mentions=["compute"])
    assert body
    # wait=true changes nothing: the refusal is immediate.
    assert_error(no_compute.submit({"type": "compute", "payload": "x"}, wait=True), 503, "no_capable_worker")
    # Validation comes first: a malformed submission is a 400 even here.
    assert_error(no_compute.submit({"type": "compute", "timeout_ms": 0}), 400, "bad_request", mentions=["timeout_ms"])


def test_types_any_worker_runs_still_work_without_compute(no_compute):
    rec = no_compute.run({"type": "echo", "payload": "no compute needed", "timeout_ms": 10000})
    assert rec["state"] == "completed", rec


# ----------------------------------------------------------------------------- 429


SLEEP_MS = 2500


def _fill_queue(api, limit=50):
    """Submits sleeps until the gateway says queue_full; returns (accepted ids, the 429)."""
    ids = []
    for _ in range(limit):
        r = api.submit({"type": "sleep", "payload": str(SLEEP_MS), "timeout_ms": 30000, "max_attempts": 1})
        if r.status_code == 429:
            return ids, r
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
    pytest.fail(f"{limit} sleep tasks accepted and no 429: is tasks.queue_capacity small on this gateway?")


def test_429_when_the_queue_is_full(small_queue, env):
    small_queue.quiesce(timeout=60)
    ids, r = _fill_queue(small_queue)
    body = assert_error(r, 429, "queue_full")
    status = small_queue.status()["tasks"]
    if env.small_queue_capacity is not None:
        assert status["queued"] == env.small_queue_capacity, status
        assert str(env.small_queue_capacity) in body["error"]
    assert status["queued"] >= 1, status
    # Still full: another submission is refused too, and refusals leave no record behind.
    before = len(small_queue.get("/v1/tasks?limit=10000").json()["tasks"])
    assert_error(small_queue.submit({"type": "echo", "payload": "x"}), 429, "queue_full")
    assert len(small_queue.get("/v1/tasks?limit=10000").json()["tasks"]) == before
    # Cancel what still waits (it never reached a worker) and let the running ones finish.
    cancelled = 0
    for tid in ids:
        if small_queue.task(tid)["state"] == "pending":
            rec = small_queue.delete(f"/v1/tasks/{tid}").json()
            assert_record(rec)
            assert rec["state"] == "cancelled" and rec["attempts"] == 0 and rec["worker"] is None, rec
            cancelled += 1
    assert cancelled >= 1
    assert small_queue.status()["tasks"]["queued"] == 0
    small_queue.quiesce(timeout=SLEEP_MS / 1000 * len(ids) + 30)
    # Room again: a submission is accepted and runs.
    assert small_queue.run({"type": "echo", "payload": "room again", "timeout_ms": 10000})["state"] == "completed"


def test_queued_tasks_run_in_turn(small_queue):
    """With one worker slot, tasks beyond it wait in the queue and run one after another."""
    small_queue.quiesce(timeout=60)
    ids = [
        small_queue.submit_ok({"type": "sleep", "payload": "300", "timeout_ms": 20000, "max_attempts": 1}) for _ in range(2)
    ]
    recs = [small_queue.wait_state(i, {"completed", "failed", "cancelled"}, timeout=30) for i in ids]
    for rec in recs:
        assert_record(rec)
        assert rec["state"] == "completed", rec


# ----------------------------------------------------------------------------- batch


def test_batch_503_no_capable_worker(no_compute):
    before = len(no_compute.get("/v1/tasks?limit=10000").json()["tasks"])
    r = no_compute.req("POST", "/v1/tasks/batch", json={"tasks": [{"type": "echo"}, {"type": "compute"}]})
    assert_error(r, 503, "no_capable_worker", mentions=["tasks[1]", "compute"])
    assert len(no_compute.get("/v1/tasks?limit=10000").json()["tasks"]) == before, "nothing accepted"


def test_batch_429_when_it_does_not_fit(small_queue, env):
    small_queue.quiesce(timeout=60)
    cap = env.small_queue_capacity or 2
    # One worker slot plus `cap` queue places: one task more does not fit.
    tasks = [{"type": "sleep", "payload": "200", "timeout_ms": 20000, "max_attempts": 1}] * (cap + 2)
    before = len(small_queue.get("/v1/tasks?limit=10000").json()["tasks"])
    assert_error(small_queue.req("POST", "/v1/tasks/batch", json={"tasks": tasks}), 429, "queue_full")
    assert len(small_queue.get("/v1/tasks?limit=10000").json()["tasks"]) == before, "nothing accepted"
    # Exactly what fits is accepted, and runs.
    r = small_queue.req("POST", "/v1/tasks/batch?wait=true", json={"tasks": tasks[: cap + 1]}, timeout=60)
    assert r.status_code == 200, r.text
    assert [t["state"] for t in r.json()["tasks"]] == ["completed"] * (cap + 1), r.json()


# ----------------------------------------------------------------------------- cancel bookkeeping


def test_cancel_does_not_wedge_the_gateway(small_queue):
    """A cancelled attempt keeps running on its worker (cancel is not sent to it). The
    gateway may then offer that worker more than it can take and get `busy` back; it must
    keep dispatching once the worker is free again, not treat it as full forever."""
    small_queue.quiesce(timeout=60)
    tid = small_queue.submit_ok({"type": "sleep", "payload": "1500", "timeout_ms": 20000, "max_attempts": 1})
    small_queue.wait_state(tid, {"running"}, timeout=10)
    assert small_queue.delete(f"/v1/tasks/{tid}").json()["state"] == "cancelled"
    # Offered to the worker while it still sleeps out the cancelled attempt -> busy.
    nxt = small_queue.submit_ok({"type": "sleep", "payload": "10", "timeout_ms": 20000, "max_attempts": 1})
    time.sleep(2.5)  # the cancelled sleep is over; the worker is idle
    rec = small_queue.wait_state(nxt, {"completed", "failed", "cancelled"}, timeout=15)
    assert rec["state"] == "completed", f"gateway stopped dispatching after a busy answer: {rec}"
    after = small_queue.run({"type": "echo", "payload": "still dispatching", "timeout_ms": 5000, "max_attempts": 1})
    assert after["state"] == "completed", after


def test_busy_worker_is_not_hammered(small_queue):
    """After a `busy` answer the gateway retries the worker with backoff (PRODUCT: retry
    "with backoff"; retry.rs: "so a failing worker is not hammered"), not every few
    milliseconds: while the worker sleeps out a cancelled 1.5 s attempt, the next task
    collects a handful of busy refusals, not dozens."""
    small_queue.quiesce(timeout=60)
    tid = small_queue.submit_ok({"type": "sleep", "payload": "1500", "timeout_ms": 20000, "max_attempts": 1})
    small_queue.wait_state(tid, {"running"}, timeout=10)
    small_queue.delete(f"/v1/tasks/{tid}")
    nxt = small_queue.submit_ok({"type": "echo", "payload": "after busy", "timeout_ms": 20000, "max_attempts": 1})
    rec = small_queue.wait_state(nxt, {"completed", "failed", "cancelled"}, timeout=25)
    busy = [a for a in rec["attempt_history"] if a["outcome"] == "busy"]
    assert len(busy) <= 10, f"{len(busy)} busy refusals within ~1.5 s: the worker is hammered ({rec['attempts']} attempts)"
    assert rec["state"] == "completed", rec
