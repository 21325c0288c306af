#!/usr/bin/env python3
"""Ray half of the side-by-side benchmark against p2p-network.

Measures, from ONE client process (this driver), with a trivial `echo` task:
  (a) sync latency: `ray.get(echo.remote(p))` one at a time, N times, after W
      warm-up calls; p50 / p99 / mean of each round trip;
  (b) throughput: submit M tasks at once (Ray puts no client-side cap on tasks
      in flight), then `ray.get` them all; tasks/s = M / wall time.

Run it with the venv from bench/setup-ray-venv.sh:
  py=$(bench/setup-ray-venv.sh | tail -n1)
  "$py" bench/ray_bench.py --json bench/ray-result.json
"""
import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import sys
import threading
import time

# Keep Ray on loopback and off the network. Set before `import ray`: Ray reads
# these at import and every process it starts (GCS, raylet, dashboard, workers)
# inherits them. None of them touches the task path being measured.
NO_NETWORK_ENV = {
    # Telemetry off (it would report to a Ray-run server).
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_USAGE_STATS_PROMPT_ENABLED": "0",
    # Ray's local-only mode (the default on macOS/Windows): the node IP is
    # 127.0.0.1 and the GCS/raylet/worker gRPC servers bind to loopback. On
    # Linux Ray otherwise turns even `_node_ip_address="127.0.0.1"` into the
    # host's routable address (found by a UDP connect towards a public DNS
    # address) and listens on all interfaces.
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    # Even with usage stats off, Ray's always-started dashboard process (its one
    # module under include_dashboard=False is UsageStatsHead) probes cloud
    # metadata at start: HTTP to 169.254.169.254 (Azure, AWS) and a DNS lookup
    # of metadata.google.internal (Ray 2.60, usage_lib.get_cloud_from_metadata_
    # requests). No setting turns that off, so its HTTP client (`requests`,
    # which honours these variables) is pointed at a closed loopback port: the
    # probes fail at once, without DNS or packets leaving the host.
    "http_proxy": "http://127.0.0.1:9",
    "https_proxy": "http://127.0.0.1:9",
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "no_proxy": "127.0.0.1,localhost,::1",
    "NO_PROXY": "127.0.0.1,localhost,::1",
    # gRPC C-core would also honour http(s)_proxy; an empty grpc_proxy tells it
    # to use no proxy, so Ray's own gRPC traffic stays direct.
    "grpc_proxy": "",
}
os.environ.update(NO_NETWORK_ENV)

import ray  # noqa: E402  (must follow the environment set-up above)

LOOPBACK = "127.0.0.1"


@ray.remote
def echo(x):
    return x


def payload(i):
    # Same short payloads as p2p-load's default (`load-{i}`), so both systems
    # move the same bytes; small enough that Ray returns results inline
    # (no object-store round trip), as p2p-network returns them in its reply.
    return f"load-{i}"


def percentile(sorted_ms, p):
    # Same rule as src/bin/p2p-load.rs: index round(p/100 * (n-1)).
    if not sorted_ms:
        return 0.0
    idx = round(p / 100.0 * (len(sorted_ms) - 1))
    return sorted_ms[min(idx, len(sorted_ms) - 1)]


def object_store_bytes():
    """Object store size to ask for, or None for Ray's default.

    Ray's default is ~30% of RAM, backed by /dev/shm; when /dev/shm is too
    small (Docker's default is 64 MiB) Ray falls back to a file in /tmp and
    warns that this harms performance. The echo payloads never reach the
    object store, but Ray still creates it at start, so on a small /dev/shm we
    ask for a size that fits (Ray's minimum is 75 MiB) rather than let the
    store land on disk. A large /dev/shm keeps Ray's default: untuned Ray.
    """
    try:
        free = shutil.disk_usage("/dev/shm").free
    except OSError:
        return None
    if free >= 2 << 30:
        return None
    want = int(free * 0.8)
    return want if want >= 80 << 20 else None  # too small: let Ray use /tmp


def children(pid):
    pids = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                pids += [int(p) for p in f.read().split()]
    except OSError:
        pass
    return pids


def kill_ray_tree():
    """SIGKILL every process this one started, by pid: GCS, raylet, dashboard,
    and the raylet's own children (workers, agents), which would otherwise
    outlive their parent. The tree is listed first, then killed."""
    tree, todo = [], children(os.getpid())
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += children(pid)
    for pid in tree:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def start_watchdog(seconds):
    """Hard deadline for the whole run (start, phases, shutdown): a stuck
    ray.init / ray.get / ray.shutdown must not hang the benchmark."""

    def fire():
        print(f"ray_bench: deadline of {seconds}s passed, killing Ray", file=sys.stderr, flush=True)
        kill_ray_tree()
        os._exit(3)

    t = threading.Timer(seconds, fire)
    t.daemon = True
    t.start()
    return t


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sync", type=int, default=2000, metavar="N", help="sync round trips measured (default 2000)")
    ap.add_argument("--warmup", type=int, default=200, metavar="W", help="sync round trips before measuring (default 200)")
    ap.add_argument("--throughput", type=int, default=10000, metavar="M", help="tasks submitted at once (default 10000)")
    ap.add_argument("--json", metavar="FILE", help="write the result as JSON here")
    ap.add_argument("--deadline", type=float, default=170, metavar="S", help="kill Ray and exit 3 after S seconds (default 170)")
    args = ap.parse_args()
    start_watchdog(args.deadline)

    # Other load on a 2-core box skews both systems; record it with the result.
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter_ns()
    osm = object_store_bytes()
    ray.init(
        # 2 task slots = this machine's 2 cores, the same budget the
        # p2p-network side gets; no GPU detection.
        num_cpus=2,
        num_gpus=0,
        # No dashboard web UI competing for the 2 cores (Ray still starts a
        # small dashboard process and two agents: part of its stock footprint).
        include_dashboard=False,
        logging_level="ERROR",
        object_store_memory=osm,
        _node_ip_address=LOOPBACK,
    )
    startup_s = (time.perf_counter_ns() - t0) / 1e9

    # Warm-up: worker processes are started lazily and the first calls pay for
    # leasing and function export; both systems get the same W calls untimed.
    for i in range(args.warmup):
        ray.get(echo.remote(payload(i)))

    # (a) one task at a time, each timed on its own: submit -> result in hand.
    lat_ms = []
    for i in range(args.sync):
        p = payload(i)
        s = time.perf_counter_ns()
        r = ray.get(echo.remote(p))
        lat_ms.append((time.perf_counter_ns() - s) / 1e6)
        assert r == p, (r, p)
    lat_ms.sort()

    # (b) all M submitted from this one client, then all awaited. Payloads are
    # built before the clock starts, as a load generator would have them ready.
    payloads = [payload(i) for i in range(args.throughput)]
    s = time.perf_counter_ns()
    refs = [echo.remote(p) for p in payloads]
    results = ray.get(refs)
    tp_s = (time.perf_counter_ns() - s) / 1e9
    assert results == payloads

    t_shut = time.perf_counter_ns()
    ray.shutdown()
    shutdown_s = (time.perf_counter_ns() - t_shut) / 1e9

    out = {
        "system": "ray",
        "ray_version": ray.__version__,
        "sync": {
            "n": len(lat_ms),
            "warmup": args.warmup,
            "p50_ms": round(percentile(lat_ms, 50), 3),
            "p99_ms": round(percentile(lat_ms, 99), 3),
            "mean_ms": round(statistics.fmean(lat_ms), 3) if lat_ms else 0.0,
        },
        "throughput": {
            "tasks": args.throughput,
            "seconds": round(tp_s, 3),
            "tasks_per_sec": round(args.throughput / tp_s, 1) if tp_s > 0 else 0.0,
        },
        "ray": {
            "startup_s": round(startup_s, 2),
            "shutdown_s": round(shutdown_s, 2),
            "object_store_memory": osm,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_1m_before": round(load_before, 2),
        },
    }
    s, t = out["sync"], out["throughput"]
    print(f"ray {out['ray_version']}  python {out['machine']['python']}  cpus {out['machine']['cpus']}")
    print(f"  sync        n={s['n']} (warm-up {s['warmup']})  p50 {s['p50_ms']:.3f} ms  p99 {s['p99_ms']:.3f} ms  mean {s['mean_ms']:.3f} ms")
    print(f"  throughput  {t['tasks']} tasks in {t['seconds']:.3f} s  = {t['tasks_per_sec']:.0f} tasks/s")
    print(f"  ray start {startup_s:.2f} s, shutdown {shutdown_s:.2f} s, 1-min load average before {load_before:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
