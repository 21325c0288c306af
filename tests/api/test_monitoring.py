"""monitoring/grafana-dashboard.json and monitoring/prometheus.yml: well-formed, the dashboard
uses only metric names live nodes export, and (when the `prometheus` binary is installed) a
real Prometheus scraping the test cluster evaluates every panel query without error."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest
import requests
import yaml

from helpers import DASHBOARD_PATH, PROMETHEUS_CONFIG_PATH, REPO_ROOT, Env, scrape

ENV = Env.load()

# Names the issue asks the dashboard to show.
REQUIRED_IN_DASHBOARD = [
    "p2p_peers_connected",
    "p2p_messages_total",
    "p2p_message_bytes_total",
    "p2p_tasks_submitted_total",
    "p2p_tasks_completed_total",
    "p2p_tasks_failed_total",
    "p2p_tasks_retried_total",
    "p2p_task_duration_seconds_bucket",
    "p2p_task_queue_depth",
    "p2p_ping_rtt_seconds_bucket",
    "p2p_nat_status",
    "p2p_relay_reservations",
    "p2p_holepunch_total",
    "p2p_membership_members",
    "p2p_node_ready",
]
# Counter families that have no series until their first event (prometheus-client does not
# print an empty family): a test cluster on 127.0.0.1 never hole-punches nor meets a peer of
# another cluster. Each must at least be registered in src/metrics.rs.
EVENT_ONLY = {
    "p2p_holepunch_total": "holepunch",
    "p2p_peers_rejected_total": "peers_rejected",
    # A cluster of honest nodes never rejects a ledger block; blocks and sync rounds appear
    # once the first task is paid and the first round runs.
    "p2p_ledger_blocks_rejected_total": "blocks_rejected",
    "p2p_ledger_blocks_received_total": "blocks_received",
    "p2p_ledger_syncs_total": "syncs",
}

NAME_RE = re.compile(r"\b((?:p2p|libp2p)_[a-zA-Z0-9_]+)\b")


def load_dashboard() -> dict:
    with open(DASHBOARD_PATH) as f:
        return json.load(f)


def all_panels(d: dict):
    for p in d["panels"]:
        yield p
        yield from p.get("panels", [])


def exprs(d: dict) -> list[str]:
    out = [t["expr"] for p in all_panels(d) for t in p.get("targets", []) if t.get("expr")]
    for v in d.get("templating", {}).get("list", []):
        q = v.get("query")
        if isinstance(q, dict):
            q = q.get("query")
        if v.get("type") == "query" and q:
            out.append(q)
    return out


def metric_names(d: dict) -> set[str]:
    return {n for e in exprs(d) for n in NAME_RE.findall(e)}


# ----------------------------------------------------------------------------- offline checks


@pytest.mark.offline
def test_dashboard_is_importable_json():
    d = load_dashboard()
    assert d["title"] and d["uid"] and isinstance(d["schemaVersion"], int)
    assert d.get("id") is None, "an importable dashboard carries no database id"
    ids = [p["id"] for p in all_panels(d)]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    ds_vars = [v for v in d["templating"]["list"] if v["type"] == "datasource"]
    assert ds_vars and ds_vars[0]["query"] == "prometheus"
    for p in all_panels(d):
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        if p["type"] == "row":
            continue
        assert p["title"] and p.get("targets"), p
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        for t in p["targets"]:
            assert t["expr"].strip() and t["refId"], (p["title"], t)
            assert t["expr"].count("(") == t["expr"].count(")"), (p["title"], t["expr"])
            assert t["expr"].count("{") == t["expr"].count("}"), (p["title"], t["expr"])


@pytest.mark.offline
def test_dashboard_covers_the_required_metrics():
    used = metric_names(load_dashboard())
    missing = [n for n in REQUIRED_IN_DASHBOARD if n not in used]
    assert not missing, f"dashboard lacks panels on {missing}"
    assert any(n.startswith("libp2p_") for n in used), "some libp2p_* families are shown"
    text = json.dumps(load_dashboard())
    for q in ("0.50", "0.95", "0.99"):
        assert f"histogram_quantile({q}, sum by (le) (rate(p2p_task_duration_seconds_bucket" in text, q
        assert f"histogram_quantile({q}, sum by (le) (rate(p2p_ping_rtt_seconds_bucket" in text, q


@pytest.mark.offline
def test_event_only_families_are_registered():
    src = (REPO_ROOT / "src" / "metrics.rs").read_text()
    for name, registered in EVENT_ONLY.items():
        assert f'"{registered}"' in src, f"{name}: src/metrics.rs does not register {registered!r}"


@pytest.mark.offline
def test_prometheus_config():
    cfg = yaml.safe_load(PROMETHEUS_CONFIG_PATH.read_text())
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    assert any("static_configs" in j for j in jobs.values()), "a job for a local cluster"
    k8s = [j for j in jobs.values() if "kubernetes_sd_configs" in j]
    assert k8s, "a Kubernetes pod-annotation job"
    sd = k8s[0]["kubernetes_sd_configs"][0]
    assert sd["role"] == "pod" and "net-test" in sd["namespaces"]["names"]
    relabels = json.dumps(k8s[0]["relabel_configs"])
    for annotation in ("prometheus_io_scrape", "prometheus_io_port", "prometheus_io_path"):
        assert annotation in relabels, annotation
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.skip("promtool not installed: YAML structure checked only")
    p = subprocess.run([promtool, "check", "config", str(PROMETHEUS_CONFIG_PATH)], capture_output=True, text=True)
    out = p.stdout + p.stderr
    if p.returncode != 0 and "kubernetes_sd_configs not found" in out:
        # Debian's Prometheus is built without Kubernetes discovery. Check the rest: the
        # static jobs as they are, and the Kubernetes job's relabelling with its discovery
        # swapped for a static target.
        with tempfile.TemporaryDirectory() as tmp:
            variant = dict(cfg)
            variant["scrape_configs"] = [
                {**{k: v for k, v in j.items() if k != "kubernetes_sd_configs"},
                 **({"static_configs": [{"targets": ["192.0.2.1:9090"]}]} if "kubernetes_sd_configs" in j else {})}
                for j in cfg["scrape_configs"]
            ]
            path = Path(tmp) / "prometheus.yml"
            path.write_text(yaml.safe_dump(variant))
            p = subprocess.run([promtool, "check", "config", str(path)], capture_output=True, text=True)
            out = "(Kubernetes discovery swapped for a static target: this promtool lacks it)\n" + p.stdout + p.stderr
    assert p.returncode == 0, out


# ----------------------------------------------------------------------------- live checks


def _union_of_live_names(gw) -> set[str]:
    if not ENV.metrics:
        pytest.skip("P2P_METRICS_URLS is not set")
    names = set()
    for url in ENV.metrics:
        names |= scrape(url).names
    return names


def test_dashboard_metric_names_exist_in_live_metrics(gw):
    # Some tasks of every outcome so the task families exist (test_metrics does the same).
    gw.run({"type": "echo", "payload": "dash"})
    gw.run({"type": "fail", "payload": "dash", "max_attempts": 2})
    live = _union_of_live_names(gw)
    unknown = []
    for name in sorted(metric_names(load_dashboard())):
        if name in live:
            continue
        if name in EVENT_ONLY:
            print(f"note: {name} has no series yet on this cluster (appears on its first event)")
            continue
        unknown.append(name)
    assert not unknown, f"the dashboard uses metric names no live node exports: {unknown}"


def _free_port() -> int:
    """A loopback port below the kernel's ephemeral range (32768), where no outgoing
    connection can take it before Prometheus binds it; bind(0) would pick from that range."""
    for port in range(31_000 + os.getpid() % 1000, 32_000):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free loopback port in 31000-31999")


@pytest.fixture(scope="module")
def prometheus(gw):
    """A throwaway Prometheus on 127.0.0.1 scraping the test cluster every second."""
    binary = shutil.which("prometheus")
    if not binary:
        pytest.skip("the `prometheus` binary is not installed (Debian package prometheus)")
    if not ENV.metrics:
        pytest.skip("P2P_METRICS_URLS is not set")
    targets = []
    for u in ENV.metrics:
        parsed = urlparse(u)
        assert parsed.hostname in ("127.0.0.1", "localhost", "::1"), f"only local targets: {u}"
        targets.append(parsed.netloc)
    tmp = tempfile.mkdtemp(prefix="p2p-prom-")
    cfg = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [{"job_name": "p2p-network-test", "static_configs": [{"targets": targets}]}],
    }
    Path(tmp, "prometheus.yml").write_text(yaml.safe_dump(cfg))
    port = _free_port()
    proc = subprocess.Popen(
        [binary, f"--config.file={tmp}/prometheus.yml", f"--storage.tsdb.path={tmp}/data",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=open(f"{tmp}/prometheus.log", "w"), stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                r = requests.get(f"{base}/api/v1/query", params={"query": "count(up == 1)"}, timeout=2).json()
                if r["data"]["result"] and int(r["data"]["result"][0]["value"][1]) == len(targets):
                    break
            except requests.RequestException:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log = Path(tmp, "prometheus.log").read_text()[-3000:]
                pytest.fail(f"prometheus did not scrape all {len(targets)} targets: {log}")
            time.sleep(0.5)
        gw.run({"type": "echo", "payload": "prom"})
        time.sleep(6)  # a few more scrapes, so rate() has points
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def test_prometheus_scrapes_every_node(prometheus):
    r = requests.get(f"{prometheus}/api/v1/targets", timeout=10).json()
    bad = [(t["scrapeUrl"], t["lastError"]) for t in r["data"]["activeTargets"] if t["health"] != "up"]
    assert not bad, bad


def test_every_dashboard_query_evaluates(prometheus):
    d = load_dashboard()
    failures, empty = [], []
    for e in exprs(d):
        q = (
            e.replace("$__rate_interval", "1m")
            .replace("$__range", "5m")
            .replace('"$job"', '".*"')
            .replace('"$instance"', '".*"')
        )
        if q.startswith("label_values("):
            m = re.match(r"label_values\((.*),\s*(\w+)\)$", q)
            assert m, q
            q = f"count by ({m.group(2)}) ({m.group(1)})"
        r = requests.get(f"{prometheus}/api/v1/query", params={"query": q}, timeout=10).json()
        if r.get("status") != "success":
            failures.append((q, r.get("error")))
        elif not r["data"]["result"] and not any(n in q for n in EVENT_ONLY):
            empty.append(q)
    assert not failures, f"queries Prometheus refuses: {failures}"
    assert not empty, f"queries with no data on a cluster that ran tasks: {empty}"
