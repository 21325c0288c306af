"""Probes for bench/ledger_bench.sh, through the nodes' HTTP APIs on 127.0.0.1 only.

  ledger_probe.py wait-workers API N        until N workers are schedulable at API (60 s)
  ledger_probe.py agree APIS LOAD_JSON      time until every node has sealed what it owes and
                                            all report one digest; ledger bytes per paid task
  ledger_probe.py late BOOT_API LATE_API    time until the late node's digest equals BOOT's
"""
from __future__ import annotations

import json
import sys
import time
import urllib.request

LIMIT_S = 120


def get(api: str, path: str):
    with urllib.request.urlopen(api + path, timeout=5) as r:
        return json.load(r)


def try_get(api: str, path: str):
    try:
        return get(api, path)
    except Exception:
        return None


def wait_workers(api: str, n: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        caps = try_get(api, "/v1/capabilities") or {}
        workers = {w for c in (caps.get("cluster") or {}).values() for w in c.get("workers", [])}
        if len(workers) >= n:
            return
        time.sleep(0.2)
    sys.exit(f"{n} workers not schedulable at {api} within 60 s")


def agreed(apis: list[str]):
    views = [try_get(a, "/v1/ledger") for a in apis]
    if any(v is None for v in views):
        return None
    if len({v["digest"] for v in views}) == 1 and all(v["payments_waiting"] == 0 for v in views):
        return views[0]
    return None


def ledger_bytes(api: str, view: dict) -> tuple[int, int]:
    """Every block of every account: (bytes, paid tasks)."""
    size = tasks = 0
    for a in view["accounts"]:
        for seq in range(1, a["seq"] + 1):
            b = get(api, f"/v1/ledger/blocks/{a['peer']}/{seq}")
            size += b["bytes"]
            tasks += sum(e["tasks"] for e in b["entries"])
    return size, tasks


def agree(apis: list[str], load_json: str) -> None:
    start = time.monotonic()
    while (view := agreed(apis)) is None:
        if time.monotonic() - start > LIMIT_S:
            sys.exit(f"no agreement within {LIMIT_S} s")
        time.sleep(0.05)
    took = time.monotonic() - start
    size, tasks = ledger_bytes(apis[0], view)
    load = json.load(open(load_json))
    print(json.dumps({
        "ledger": True,
        "tasks_per_sec": load["throughput_per_sec"],
        "agree_s": round(took, 3),
        "blocks_bytes": size,
        "paid_tasks": tasks,
        "bytes_per_paid_task": round(size / tasks, 2) if tasks else None,
    }))


def late(boot: str, late_api: str) -> None:
    start = time.monotonic()
    target = get(boot, "/v1/ledger")
    while True:
        mine = try_get(late_api, "/v1/ledger")
        if mine is not None and mine["digest"] == target["digest"]:
            break
        if time.monotonic() - start > LIMIT_S:
            sys.exit(f"the late joiner did not catch up within {LIMIT_S} s")
        time.sleep(0.05)
    took = time.monotonic() - start
    blocks = sum(a["seq"] for a in target["accounts"])
    print(json.dumps({"caught_up_s": round(took, 3), "blocks": blocks,
                      "accounts": len(target["accounts"]), "note": "from process start, joining included"}))


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "wait-workers":
        wait_workers(sys.argv[2], int(sys.argv[3]))
    elif cmd == "agree":
        agree(sys.argv[2].split(","), sys.argv[3])
    elif cmd == "late":
        late(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
