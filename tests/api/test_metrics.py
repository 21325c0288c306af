"""The metrics endpoint of live nodes: promtool accepts it, the contract's families are there
with sane values, and the task counters count exactly."""

from __future__ import annotations

import math
import shutil
import subprocess

import pytest
import requests

from helpers import HTTP_TIMEOUT, Env, Exposition, histogram_quantile, scrape

ENV = Env.load()

# Families every node exports from the start (OpenMetrics sample names).
ALWAYS = [
    "p2p_peers_connected",
    "p2p_messages_total",
    "p2p_message_bytes_total",
    "p2p_task_queue_depth",
    "p2p_tasks_running",
    "p2p_tasks_executing",
    "p2p_ping_rtt_seconds_bucket",
    "p2p_ping_rtt_seconds_sum",
    "p2p_ping_rtt_seconds_count",
    "p2p_node_up",
    "p2p_node_ready",
    "p2p_node_uptime_seconds",
    "p2p_nat_status",
    "p2p_membership_members",
    "p2p_membership_local_health",
    "p2p_membership_transitions_total",
    "p2p_membership_refutations_total",
    "p2p_relay_reservations",
    "p2p_build_info",
    "p2p_telemetry_spans_dropped_total",
    "p2p_network_held_back_total",
    # libp2p-metrics, on the same registry
    "libp2p_swarm_connections_established_total",
    "libp2p_bandwidth_bytes_total",
    "libp2p_identify_received_total",
    "libp2p_kad_routing_updated_total",
]
# Families a gateway exports once tasks went through it.
GATEWAY_AFTER_TASKS = [
    "p2p_tasks_submitted_total",
    "p2p_tasks_completed_total",
    "p2p_tasks_failed_total",
    "p2p_tasks_retried_total",
    "p2p_tasks_cancelled_total",
    "p2p_tasks_rejected_total",
    "p2p_task_duration_seconds_bucket",
    "p2p_task_duration_seconds_sum",
    "p2p_task_duration_seconds_count",
]
# ... and a worker once it executed some.
WORKER_AFTER_TASKS = ["p2p_tasks_executed_total"]


def _metrics_urls():
    if not ENV.metrics:
        return [pytest.param(None, marks=pytest.mark.skip(reason="P2P_METRICS_URLS is not set"))]
    return ENV.metrics


def _raw(url: str) -> requests.Response:
    u = url.rstrip("/")
    return requests.get(u if u.endswith("/metrics") else u + "/metrics", timeout=HTTP_TIMEOUT)


@pytest.fixture(scope="module")
def tasks_ran(gw):
    """Some traffic of every outcome through the gateway, so the task families exist."""
    gw.run({"type": "echo", "payload": "metrics"})
    gw.run({"type": "fail", "payload": "metrics", "max_attempts": 2})
    tid = gw.submit_ok({"type": "sleep", "payload": "500", "timeout_ms": 10000, "max_attempts": 1})
    gw.wait_state(tid, {"running"}, timeout=10)
    gw.delete(f"/v1/tasks/{tid}")
    gw.post_raw("/v1/tasks", '{"type": "nope"}')
    import time

    time.sleep(1)  # the cancelled sleep ends on its worker
    gw.quiesce()


# ----------------------------------------------------------------------------- promtool


@pytest.mark.parametrize("url", _metrics_urls())
def test_promtool_check_metrics(url):
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.skip("promtool not installed (Debian: apt-get install -y prometheus; run.sh does it)")
    r = _raw(url)
    assert r.status_code == 200
    p = subprocess.run([promtool, "check", "metrics"], input=r.content, capture_output=True, timeout=60)
    out = (p.stdout + p.stderr).decode(errors="replace")
    assert p.returncode == 0, f"promtool check metrics on {url} exited {p.returncode}:\n{out[:4000]}"


# ----------------------------------------------------------------------------- families and values


@pytest.mark.parametrize("url", _metrics_urls())
def test_families_present_with_sane_values(url):
    m = scrape(url)
    missing = [n for n in ALWAYS if n not in m.names]
    assert not missing, f"{url} lacks {missing}"
    for s in m.samples:
        assert not math.isnan(s.value), s
    assert m.value("p2p_node_up") == 1
    assert m.value("p2p_node_ready") == 1, "every node listed in P2P_METRICS_URLS has joined"
    assert m.value("p2p_node_uptime_seconds") > 0
    builds = m.get("p2p_build_info")
    assert len(builds) == 1 and builds[0].value == 1 and builds[0].labels.get("version"), builds
    nat = m.get("p2p_nat_status")
    assert {s.labels["status"] for s in nat} == {"unknown", "public", "private"}, nat
    assert sorted(s.value for s in nat) == [0, 0, 1], f"exactly one NAT status is current: {nat}"
    states = {s.labels["state"]: s.value for s in m.get("p2p_membership_members")}
    assert set(states) == {"alive", "suspect", "dead", "left"}, states
    assert states["alive"] >= 1, states
    assert m.value("p2p_peers_connected") >= 1
    for s in m.get("p2p_peers_connected"):
        assert s.labels.get("transport") in ("direct", "relayed"), s
    assert m.value("p2p_messages_total", direction="in", protocol="gossip") > 0
    assert m.value("p2p_message_bytes_total", direction="in", protocol="gossip") > 0
    for gauge in ("p2p_task_queue_depth", "p2p_tasks_running", "p2p_tasks_executing", "p2p_relay_reservations"):
        assert m.value(gauge) >= 0, gauge
    assert 0 <= m.value("p2p_membership_local_health") <= 8
    for s in m.samples:
        if s.name.endswith("_total"):
            assert s.value >= 0, s
    _check_histograms(m)
    rtt = [(float(s.labels["le"]), s.value) for s in m.get("p2p_ping_rtt_seconds_bucket")]
    assert m.value("p2p_ping_rtt_seconds_count") > 0, "nodes ping each other"
    assert histogram_quantile(0.5, rtt) < 1.0, "median ping RTT on one machine is well under a second"


def _check_histograms(m: Exposition):
    """Buckets are cumulative, end at +Inf, and +Inf equals _count, per series."""
    for name in {s.name[: -len("_bucket")] for s in m.samples if s.name.endswith("_bucket")}:
        series = {}
        for s in m.get(name + "_bucket"):
            key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
            series.setdefault(key, []).append((float(s.labels["le"]), s.value))
        for key, buckets in series.items():
            buckets.sort()
            counts = [c for _, c in buckets]
            assert counts == sorted(counts), f"{name}{dict(key)} buckets not cumulative: {buckets}"
            assert math.isinf(buckets[-1][0]), f"{name}{dict(key)} has no +Inf bucket"
            count = m.value(name + "_count", **dict(key))
            assert buckets[-1][1] == count, f"{name}{dict(key)}: +Inf bucket {buckets[-1][1]} != count {count}"
            assert m.value(name + "_sum", **dict(key)) >= 0


def test_gateway_task_families_after_tasks(gw, env, tasks_ran):
    if not env.gateway_metrics:
        pytest.skip("P2P_GATEWAY_METRICS / P2P_METRICS_URLS not set")
    m = scrape(env.gateway_metrics)
    missing = [n for n in GATEWAY_AFTER_TASKS if n not in m.names]
    assert not missing, f"gateway metrics lack {missing}"
    # Every accepted task reached exactly one final state (the gateway is quiet now).
    for t in sorted({s.labels["type"] for s in m.get("p2p_tasks_submitted_total")}):
        submitted = m.value("p2p_tasks_submitted_total", type=t)
        final = sum(m.value(f"p2p_tasks_{k}_total", default=0, type=t) for k in ("completed", "failed", "cancelled"))
        assert submitted == final, f"type {t}: {submitted} submitted but {final} final"
        assert m.value("p2p_task_duration_seconds_count", type=t) == final, f"type {t}: one duration per final task"
    assert m.value("p2p_tasks_rejected_total", reason="unknown_type") >= 1
    assert m.value("p2p_tasks_retried_total", default=0, type="fail") >= 1


def test_worker_families_after_tasks(workers, env, tasks_ran):
    worker_metrics = [u for u in env.metrics if u != env.gateway_metrics]
    if not worker_metrics:
        pytest.skip("no worker metrics URL in P2P_METRICS_URLS")
    executed = 0.0
    for url in worker_metrics:
        m = scrape(url)
        executed += m.value("p2p_tasks_executed_total", default=0)
        for s in m.get("p2p_tasks_executed_total"):
            assert s.labels.get("type") and s.labels.get("outcome"), s
    assert executed >= 1, "the workers executed the tasks"


def test_completed_counter_counts_exactly(gw, env):
    if not env.gateway_metrics:
        pytest.skip("P2P_GATEWAY_METRICS / P2P_METRICS_URLS not set")
    n = 7
    gw.quiesce()
    before = scrape(env.gateway_metrics)
    for i in range(n):
        rec = gw.run({"type": "echo", "payload": f"count-{i}"})
        assert rec["state"] == "completed", rec
    after = scrape(env.gateway_metrics)

    def delta(name):
        return after.value(name, default=0, type="echo") - before.value(name, default=0, type="echo")

    assert delta("p2p_tasks_completed_total") == n
    assert delta("p2p_tasks_submitted_total") == n
    assert delta("p2p_tasks_failed_total") == 0
    assert delta("p2p_tasks_retried_total") == 0
    assert delta("p2p_task_duration_seconds_count") == n
    assert delta("p2p_task_duration_seconds_sum") > 0
    assert after.value("p2p_task_queue_depth") == 0
    assert after.value("p2p_tasks_running") == 0
