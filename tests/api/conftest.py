"""API contract tests for p2p-node, run against a live cluster.

Environment (see README.md in this folder for the cluster these point at):

  P2P_GATEWAY_API           http://127.0.0.1:PORT  API of the node the tests submit through
                            (required; without it every test skips)
  P2P_WORKER_APIS           comma list of the workers' API URLs
  P2P_METRICS_URLS          comma list of metrics URLs (http://127.0.0.1:PORT or .../metrics),
                            the gateway's first
  P2P_GATEWAY_METRICS       the gateway's metrics URL (default: first of P2P_METRICS_URLS)
  P2P_SMALL_QUEUE_API       a gateway with tasks.queue_capacity small (2) whose only worker has
                            node.max_concurrent_tasks: 1 and task_backlog: 0 (429 queue_full, cancel-pending tests)
  P2P_SMALL_QUEUE_CAPACITY  its tasks.queue_capacity, if you want the exact count checked
  P2P_NO_COMPUTE_API        a gateway whose cluster has no alive worker advertising `compute`
                            (503 no_capable_worker)
  P2P_UNJOINED_API          a worker that has not joined any cluster (503 from /readyz)
  P2P_OPENAPI, P2P_DASHBOARD, P2P_PROMETHEUS_CONFIG, P2P_REPO_ROOT  file overrides
  P2P_HTTP_TIMEOUT          per-request timeout in seconds (30)
"""

from __future__ import annotations

import time

import pytest

from helpers import Api, Env

ENV = Env.load()


def pytest_report_header(config):
    return [
        f"gateway={ENV.gateway} workers={ENV.workers} metrics={ENV.metrics}",
        f"small_queue={ENV.small_queue} no_compute={ENV.no_compute} unjoined={ENV.unjoined}",
    ]


def pytest_collection_modifyitems(config, items):
    if ENV.gateway:
        return
    skip = pytest.mark.skip(reason="P2P_GATEWAY_API is not set: no live cluster to test (see tests/api/README.md)")
    for item in items:
        if "offline" not in item.keywords:
            item.add_marker(skip)


def pytest_configure(config):
    config.addinivalue_line("markers", "offline: needs no live cluster")


@pytest.fixture(scope="session")
def env() -> Env:
    return ENV


@pytest.fixture(scope="session")
def gw() -> Api:
    api = Api(ENV.gateway)
    # The cluster must be formed before the contract can be checked: every listed worker
    # alive at the gateway.
    want = len(ENV.workers)
    deadline = time.monotonic() + 60
    while True:
        try:
            peers = api.get("/v1/peers").json()["peers"]
            alive = [p for p in peers if p["state"] == "alive" and p["role"] == "worker"]
            if len(alive) >= want and api.get("/readyz").status_code == 200:
                break
        except Exception:  # noqa: BLE001 - the node may still be starting
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"gateway {ENV.gateway} did not see {want} alive workers and become ready within 60 s")
        time.sleep(0.5)
    return api


@pytest.fixture(scope="session")
def workers() -> list[Api]:
    return [Api(u) for u in ENV.workers]


@pytest.fixture(scope="session")
def all_apis(gw, workers) -> list[Api]:
    return [gw, *workers]


def _optional(url: str | None, var: str, what: str) -> Api:
    if not url:
        pytest.skip(f"{var} is not set: needs {what} (see tests/api/README.md)")
    api = Api(url)
    try:
        api.get("/healthz", timeout=5)
    except Exception as e:  # noqa: BLE001
        pytest.fail(f"{var}={url} is set but does not answer: {e}")
    return api


@pytest.fixture(scope="session")
def small_queue() -> Api:
    return _optional(
        ENV.small_queue,
        "P2P_SMALL_QUEUE_API",
        "a gateway with a tiny tasks.queue_capacity whose only worker runs one task at a time",
    )


@pytest.fixture(scope="session")
def no_compute() -> Api:
    return _optional(ENV.no_compute, "P2P_NO_COMPUTE_API", "a gateway whose cluster has no worker with `compute`")


@pytest.fixture(scope="session")
def unjoined() -> Api:
    return _optional(ENV.unjoined, "P2P_UNJOINED_API", "a worker that has not joined a cluster")
