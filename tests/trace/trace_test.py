#!/usr/bin/env python3
"""Trace tests against real processes: an OTLP/HTTP receiver and a gateway with two workers.

The receiver is a small http.server that decodes `ExportTraceServiceRequest` with the
official `opentelemetry-proto` package, exactly as a collector would receive it. The cluster
is started (and restarted with other settings) by this script, on 127.0.0.1 only.

Checks, in order:
  1. telemetry on, a client `traceparent`: a `sleep` task whose first worker is killed with
     kill -9 mid-task completes on the second; one trace holds spans from the gateway and
     both workers, every parent link resolves (the root's parent is the client's span), the
     attempt spans carry attempt numbers and peer ids; the record's trace id is the client's
     and its timeline tells the story;
  2. a malformed `traceparent`: 202, and a fresh trace whose root has no parent;
  3. telemetry off (and the SDK's own OTEL_EXPORTER_OTLP_* variables pointing at the
     receiver): a task completes and the receiver gets nothing;
  4. an unreachable collector: tasks complete as fast as ever and the gateway counts dropped
     spans in p2p_telemetry_spans_dropped_total.

Prints "trace: N passed, N failed" last; exits 1 if anything failed.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

PASSED: list[str] = []
FAILED: list[str] = []


def check(name: str, ok: bool, detail: str = "") -> bool:
    if ok:
        PASSED.append(name)
        print(f"  ok   {name}")
    else:
        FAILED.append(name)
        print(f"  FAIL {name}" + (f": {detail}" if detail else ""))
    return ok


def log(msg: str) -> None:
    print(f"[trace-tests] {msg}", flush=True)


# ----------------------------------------------------------------------------- receiver


def any_value(v):
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


class Receiver:
    """An OTLP/HTTP trace receiver on 127.0.0.1 that keeps every span it is sent."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests = 0
        self.spans: list[dict] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                ok = self.path == "/v1/traces" and self.headers.get("Content-Type") == "application/x-protobuf"
                if ok:
                    receiver.take(body)
                answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200 if ok else 400)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def take(self, body: bytes) -> None:
        request = trace_service_pb2.ExportTraceServiceRequest()
        request.ParseFromString(body)
        spans = []
        for rs in request.resource_spans:
            resource = {a.key: any_value(a.value) for a in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    spans.append({
                        "trace_id": s.trace_id.hex(),
                        "span_id": s.span_id.hex(),
                        "parent": s.parent_span_id.hex(),
                        "name": s.name,
                        "attributes": {a.key: any_value(a.value) for a in s.attributes},
                        "resource": resource,
                    })
        with self.lock:
            self.requests += 1
            self.spans.extend(spans)

    def trace(self, trace_id: str) -> list[dict]:
        with self.lock:
            return [s for s in self.spans if s["trace_id"] == trace_id]

    def all(self) -> list[dict]:
        with self.lock:
            return list(self.spans)

    def reset(self) -> None:
        with self.lock:
            self.requests = 0
            self.spans = []

    def wait_for(self, what, timeout: float = 15.0):
        deadline = time.monotonic() + timeout
        while True:
            found = what()
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.2)


# ----------------------------------------------------------------------------- cluster


_NEXT_PORT = 30_000 + (os.getpid() % 20) * 100


def free_port() -> int:
    """A loopback port for a node's config, below the kernel's ephemeral range (32768), where
    no outgoing connection can take it before the node binds it (bind(0) picks from that
    range); never the same twice in this run."""
    global _NEXT_PORT
    for _ in range(100):
        port, _NEXT_PORT = _NEXT_PORT, _NEXT_PORT + 1
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free loopback port in 100 tries")


def http_json(method: str, url: str, body=None, headers=None, timeout: float = 10.0):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


class Node:
    def __init__(self, work: str, name: str, role: str, p2p_port: int, bootstrap_port: int | None) -> None:
        self.work, self.name = work, name
        self.api_port, self.metrics_port = free_port(), free_port()
        self.api = f"http://127.0.0.1:{self.api_port}"
        network = "{enable_mdns: false, enable_relay: false}"
        if bootstrap_port is not None:
            network = f'{{enable_mdns: false, enable_relay: false, bootstrap_peers: ["/ip4/127.0.0.1/tcp/{bootstrap_port}"]}}'
        caps = "capabilities: [bootstrap], " if role == "bootstrap" else ""
        with open(os.path.join(work, f"{name}.yaml"), "w") as f:
            f.write(
                f"node: {{role: {role}, listen_port: {p2p_port}, listen_address: 127.0.0.1, {caps}"
                f"identity_file: {name}.key, data_dir: {name}-data, heartbeat_interval: 2}}\n"
                f"network: {network}\n"
                f'api: {{listen: "127.0.0.1:{self.api_port}"}}\n'
                f'metrics: {{listen: "127.0.0.1:{self.metrics_port}"}}\n'
                "telemetry: {service_name: p2p-trace-test}\n"
            )
        self.proc: subprocess.Popen | None = None
        self.peer_id = ""

    def start(self, binary: str, env: dict) -> None:
        out = open(os.path.join(self.work, f"{self.name}.log"), "a")
        self.proc = subprocess.Popen([binary, "--config", f"{self.name}.yaml", "run"], cwd=self.work, env=env,
                                     stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill9(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def metric(self, name: str) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name + " ") or line.startswith(name + "{"):
                    return float(line.rsplit(" ", 1)[1])
        return 0.0


class Cluster:
    def __init__(self, binary: str, work: str) -> None:
        self.work = work
        self.binary = os.path.join(work, "p2p-node")
        shutil.copy(binary, self.binary)
        boot_port = free_port()
        self.gateway = Node(work, "gateway", "bootstrap", boot_port, None)
        self.workers = [Node(work, f"w{i}", "worker", 0, boot_port) for i in (1, 2)]

    @property
    def nodes(self) -> list[Node]:
        return [self.gateway, *self.workers]

    def start(self, extra_env: dict) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("P2P_", "OTEL_"))}
        env.update({"RUST_LOG": "info"}, **extra_env)
        self.gateway.start(self.binary, env)
        time.sleep(0.3)
        for w in self.workers:
            w.start(self.binary, env)
        deadline = time.monotonic() + 60
        while True:
            try:
                peers = http_json("GET", self.gateway.api + "/v1/peers", timeout=2)[1]["peers"]
                alive = [p for p in peers if p["state"] == "alive" and p["role"] == "worker"]
                ready = all(http_json("GET", n.api + "/readyz", timeout=2)[0] == 200 for n in self.nodes)
                if len(alive) == 2 and ready:
                    break
            except (OSError, KeyError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the cluster did not form within 60 s; see the logs in " + self.work)
            time.sleep(0.3)
        for n in self.nodes:
            n.peer_id = http_json("GET", n.api + "/v1/status")[1]["peer_id"]

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()

    def by_peer(self, peer_id: str) -> Node:
        return next(n for n in self.nodes if n.peer_id == peer_id)


def submit(cluster: Cluster, body: dict, headers: dict | None = None):
    return http_json("POST", cluster.gateway.api + "/v1/tasks", body, headers)


def wait_final(cluster: Cluster, task_id: str, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        record = http_json("GET", f"{cluster.gateway.api}/v1/tasks/{task_id}")[1]
        if record["state"] in ("completed", "failed", "cancelled") or time.monotonic() > deadline:
            return record
        time.sleep(0.1)


# ----------------------------------------------------------------------------- checks


def killed_worker_trace(cluster: Cluster, receiver: Receiver) -> None:
    trace_id = "%032x" % random.getrandbits(128)
    client_span = "%016x" % (random.getrandbits(64) | 1)
    headers = {"traceparent": f"00-{trace_id}-{client_span}-01", "tracestate": "vendor=abc"}
    status, body = submit(cluster, {"type": "sleep", "payload": "4000", "timeout_ms": 20000, "max_attempts": 3},
                          headers)
    if not check("submission with a traceparent is accepted (202)", status == 202, f"{status} {body}"):
        return
    task_id = body["id"]
    # The first attempt's worker, once it has the task.
    deadline = time.monotonic() + 10
    record = {}
    while time.monotonic() < deadline:
        record = http_json("GET", f"{cluster.gateway.api}/v1/tasks/{task_id}")[1]
        if record.get("worker"):
            break
        time.sleep(0.05)
    first = cluster.by_peer(record["worker"])
    second = next(w for w in cluster.workers if w is not first)
    # Its admission span is exported at once: wait for it, then kill the worker mid-task.
    admitted = receiver.wait_for(lambda: [s for s in receiver.trace(trace_id)
                                          if s["name"] == "admit" and s["resource"].get("p2p.peer_id") == first.peer_id])
    check("the first worker's admission span arrives while the task runs", bool(admitted))
    first.kill9()
    log(f"killed {first.name} ({first.peer_id}) mid-task")
    started = time.monotonic()
    record = wait_final(cluster, task_id)
    check("the task completes on the second worker", record["state"] == "completed"
          and record["worker"] == second.peer_id and record["attempts"] == 2, json.dumps(record)[:400])
    check("the record's trace id is the client's", record.get("trace_id") == trace_id, record.get("trace_id", ""))
    events = [(e["attempt"], e["event"], e.get("worker")) for e in record.get("timeline", [])]
    expected = [(1, "dispatched", first.peer_id), (1, "attempt_failed", None), (2, "dispatched", second.peer_id),
                (2, "started", None), (2, "answered", None), (2, "completed", None)]
    check("the timeline has every step, in order", is_subsequence(expected, events), str(events))
    log(f"completed {time.monotonic() - started:.1f} s after the kill")

    def complete():
        spans = receiver.trace(trace_id)
        names = {(s["name"], s["resource"].get("p2p.peer_id")) for s in spans}
        return spans if ("task", cluster.gateway.peer_id) in names and ("execute", second.peer_id) in names else []

    spans = receiver.wait_for(complete)
    if not check("the gateway's and the second worker's spans arrive", bool(spans),
                 f"got {[(s['name'], s['resource'].get('p2p.peer_id')) for s in receiver.trace(trace_id)]}"):
        return
    peers = {s["resource"].get("p2p.peer_id") for s in spans}
    check("one trace holds spans from the gateway and both workers",
          {cluster.gateway.peer_id, first.peer_id, second.peer_id} <= peers, str(peers))
    others = [s for s in receiver.all() if s["attributes"].get("task.id") == task_id and s["trace_id"] != trace_id]
    check("no span of the task is in another trace", not others, str(others[:3]))
    ids = {s["span_id"] for s in spans}
    orphans = [s for s in spans if s["parent"] not in ids and s["parent"] != client_span]
    check("every parent link resolves within the trace", not orphans,
          str([(s["name"], s["parent"]) for s in orphans]))
    roots = [s for s in spans if s["parent"] == client_span]
    check("the root is the gateway's submission span, child of the client's span",
          [s["name"] for s in roots] == ["POST /v1/tasks"], str([s["name"] for s in roots]))
    check("resources name the service and role", all(s["resource"].get("service.name") == "p2p-trace-test"
                                                      and s["resource"].get("p2p.role") for s in spans))
    attempts = {s["attributes"].get("task.attempt"): s for s in spans
                if s["name"] == "attempt" and s["resource"].get("p2p.peer_id") == cluster.gateway.peer_id}
    check("the gateway's attempt spans carry attempt numbers and worker peer ids",
          attempts.keys() == {1, 2} and attempts[1]["attributes"].get("worker.peer_id") == first.peer_id
          and attempts[2]["attributes"].get("worker.peer_id") == second.peer_id,
          str({k: v["attributes"] for k, v in attempts.items()}))
    if attempts.keys() == {1, 2}:
        check("the lost attempt says so", attempts[1]["attributes"].get("attempt.outcome") == "lost",
              str(attempts[1]["attributes"]))
        admit1 = admitted[0] if admitted else {}
        check("the killed worker's span is a child of attempt 1 and names attempt and peer",
              admit1.get("parent") == attempts[1]["span_id"] and admit1["attributes"].get("task.attempt") == 1
              and admit1["attributes"].get("worker.peer_id") == first.peer_id, str(admit1))
        execute2 = [s for s in spans if s["name"] == "execute" and s["resource"].get("p2p.peer_id") == second.peer_id]
        check("the second worker's execution is a child of attempt 2 and names attempt and peer",
              len(execute2) == 1 and execute2[0]["parent"] == attempts[2]["span_id"]
              and execute2[0]["attributes"].get("task.attempt") == 2
              and execute2[0]["attributes"].get("worker.peer_id") == second.peer_id,
              str(execute2))
    task = [s for s in spans if s["name"] == "task"]
    check("the task span ends with the final state", len(task) == 1
          and task[0]["attributes"].get("task.state") == "completed" and task[0]["attributes"].get("task.attempts") == 2,
          str(task))


def is_subsequence(expected: list, events: list) -> bool:
    it = iter(events)
    return all(any(e == x for x in it) for e in expected)


def malformed_traceparent(cluster: Cluster, receiver: Receiver) -> None:
    status, body = submit(cluster, {"type": "echo", "payload": "hi"}, {"traceparent": "00-not-a-trace-context-01"})
    if not check("a malformed traceparent is ignored: 202", status == 202, f"{status} {body}"):
        return
    record = wait_final(cluster, body["id"])
    tid = record.get("trace_id", "")
    check("and the task completes in a fresh trace", record["state"] == "completed" and len(tid) == 32
          and all(c in "0123456789abcdef" for c in tid), str(record)[:300])
    spans = receiver.wait_for(lambda: [s for s in receiver.trace(tid) if s["name"] == "task"] and receiver.trace(tid))
    roots = [s["name"] for s in spans or [] if not s["parent"].strip("0")]
    check("whose root span has no parent", roots == ["POST /v1/tasks"], str(roots))


def telemetry_off(cluster: Cluster, receiver: Receiver) -> None:
    receiver.reset()
    trace_id = "%032x" % random.getrandbits(128)
    status, record = http_json("POST", cluster.gateway.api + "/v1/tasks?wait=true", {"type": "sleep", "payload": "50"},
                               {"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}, timeout=30)
    check("telemetry off: the task completes", status == 200 and record["state"] == "completed", str(record)[:300])
    check("telemetry off: the client's trace id is still the record's", record.get("trace_id") == trace_id)
    time.sleep(3)  # three export intervals
    check("telemetry off: the receiver got nothing", receiver.requests == 0, f"{receiver.requests} requests")
    check("telemetry off: nothing dropped either",
          all(n.metric("p2p_telemetry_spans_dropped_total") == 0 for n in cluster.nodes))


def unreachable_collector(cluster: Cluster) -> None:
    took = []
    for i in range(20):
        t = time.monotonic()
        status, record = http_json("POST", cluster.gateway.api + "/v1/tasks?wait=true",
                                   {"type": "echo", "payload": f"n{i}"}, timeout=30)
        took.append(time.monotonic() - t)
        if status != 200 or record["state"] != "completed":
            check("unreachable collector: tasks complete", False, str(record)[:300])
            return
    check("unreachable collector: 20 tasks complete", True)
    check("unreachable collector: each within 2 s", max(took) < 2.0, f"slowest {max(took):.2f} s")
    deadline = time.monotonic() + 15
    dropped = 0.0
    while time.monotonic() < deadline:
        dropped = cluster.gateway.metric("p2p_telemetry_spans_dropped_total")
        if dropped > 0:
            break
        time.sleep(0.3)
    check("unreachable collector: the gateway counts dropped spans", dropped > 0, f"{dropped}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="p2p-trace-tests.")
    receiver = Receiver()
    cluster = Cluster(args.bin, work)
    endpoint = f"http://127.0.0.1:{receiver.port}"
    # A port nothing listens on: a socket bound to it without listening refuses connections.
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    try:
        log(f"receiver on {endpoint}; nodes in {work}")
        cluster.start({"P2P_TELEMETRY__OTLP_ENDPOINT": endpoint})
        killed_worker_trace(cluster, receiver)
        malformed_traceparent(cluster, receiver)
        cluster.stop()

        log("restarting with telemetry off (the SDK's own variables point at the receiver)")
        cluster.start({"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": endpoint + "/v1/traces"})
        telemetry_off(cluster, receiver)
        cluster.stop()

        log("restarting with an unreachable collector")
        cluster.start({"P2P_TELEMETRY__OTLP_ENDPOINT": f"http://127.0.0.1:{closed.getsockname()[1]}"})
        unreachable_collector(cluster)
    except Exception as e:  # noqa: BLE001 - any error is a failed run, reported with its trace
        traceback.print_exc()
        check("the run completed", False, str(e))
        for n in cluster.nodes:
            path = os.path.join(work, f"{n.name}.log")
            if os.path.exists(path):
                print(f"--- {n.name}.log (last lines)")
                print("".join(open(path).readlines()[-15:]))
    finally:
        cluster.stop()
        closed.close()
        receiver.server.shutdown()
        if os.environ.get("KEEP_WORK"):
            log(f"logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"trace: {len(PASSED)} passed, {len(FAILED)} failed")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
