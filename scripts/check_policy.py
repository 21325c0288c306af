#!/usr/bin/env python3
"""Policy checks on the rendered Kubernetes manifests and on the shipped node configs.

kubernetes-validate proves the manifests are well-formed for each Kubernetes version; this
proves they say what p2p-network needs: hardened pods with probes and resources, the
discovery Services, a disruption budget per role, the worker autoscaler, the pod IP
announced through the downward API, and ConfigMaps that match config/*.yaml and the
interface contract.

    check_policy.py [--configs CONFIG_DIR CLUSTER_CONFIG_DIR] [NAME=RENDERED.yaml ...]

NAME is base or an overlay (kind, minikube, monitoring and private have extra expectations).
Prints every check by subject; exits 1 if any failed. Needs PyYAML.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import OrderedDict
from pathlib import Path

import yaml

NAMESPACE = "net-test"
APP = "p2p-network"
ROLES = ("bootstrap", "relay", "worker")
DEPLOYMENTS = {"bootstrap": "p2p-bootstrap", "relay": "p2p-relay", "worker": "p2p-worker"}
REPLICAS = {"bootstrap": 1, "relay": 1, "worker": 3}
UID = 10001
API_PORT = 8080
METRICS_PORT = 9090
P2P_PORT = 4001
DRAIN_SECONDS = 10  # the node drains in at most this long after SIGTERM
BOOTSTRAP_DNS = "/dns4/p2p-bootstrap.net-test.svc.cluster.local/tcp/4001"
PULL_POLICY = {"kind": "Never", "minikube": "Never", "private": "Never"}

# The config keys of the interface contract (unknown keys are a hard error in the node).
CONTRACT_KEYS = {
    "node": {"role", "listen_address", "listen_port", "capabilities", "max_connections",
             "heartbeat_interval", "external_addresses", "identity_file", "data_dir", "max_concurrent_tasks"},
    "network": {"protocol_version", "mesh_network", "enable_mdns", "enable_relay", "enable_quic",
                "security", "connection_timeout", "bootstrap_peers"},
    "api": {"listen"},
    "metrics": {"listen"},
    "tasks": {"max_attempts", "default_timeout_ms", "queue_capacity", "retention_secs",
              "storage_replication", "compute_difficulty", "record_copies", "fsync", "adopt_after_secs"},
    "log": {"format"},
    "telemetry": {"otlp_endpoint", "service_name", "sampling_ratio"},
    "wasm": {"max_module_bytes", "cache_bytes", "compiled_modules", "max_fuel", "max_memory_bytes",
             "max_output_bytes", "max_run_ms", "fetch_timeout_ms"},
    "ledger": {"enabled", "initial_credits", "enforce", "pay_unverified", "prices", "seal_interval_ms",
               "seal_max_payments", "sync_interval_ms"},
}

# What users were told each role's config says (config/<role>.yaml).
PROMISED = {
    "worker": {
        "node.role": "worker", "node.listen_port": 4001, "node.capabilities": ["compute", "storage", "wasm"],
        "node.max_connections": 100, "node.heartbeat_interval": 30,
        "network.enable_mdns": True, "network.enable_relay": True, "network.connection_timeout": 30,
        "network.protocol_version": "p2p-network", "network.mesh_network": True,
        "network.bootstrap_peers": [BOOTSTRAP_DNS],
    },
    "bootstrap": {
        "node.role": "bootstrap", "node.listen_port": 4001, "node.capabilities": ["bootstrap", "discovery"],
        "node.max_connections": 500, "node.heartbeat_interval": 10,
        "network.enable_mdns": False, "network.enable_relay": False, "network.connection_timeout": 60,
        "network.protocol_version": "p2p-network", "network.bootstrap_peers": [],
    },
    "relay": {
        "node.role": "relay", "node.listen_port": 4001, "node.capabilities": ["relay"],
        "node.max_connections": 500, "node.heartbeat_interval": 10,
        "network.enable_mdns": False, "network.enable_relay": True, "network.connection_timeout": 60,
        "network.protocol_version": "p2p-network", "network.bootstrap_peers": [BOOTSTRAP_DNS],
    },
}

# Keys an in-cluster config (k8s/base/config/*.yaml) may change relative to config/*.yaml.
IN_CLUSTER_DIFFERENCES = {"api.listen", "network.enable_mdns", "node.identity_file", "node.data_dir"}


class Report:
    """Collects results by subject and prints them grouped."""

    def __init__(self) -> None:
        self.subjects: "OrderedDict[str, list[tuple[bool, str, str]]]" = OrderedDict()

    def check(self, subject: str, what: str, ok: bool, detail: str = "") -> bool:
        self.subjects.setdefault(subject, []).append((bool(ok), what, detail))
        return bool(ok)

    @property
    def failed(self) -> int:
        return sum(1 for r in self.subjects.values() for ok, _, _ in r if not ok)

    @property
    def passed(self) -> int:
        return sum(1 for r in self.subjects.values() for ok, _, _ in r if ok)

    def print(self) -> None:
        for subject, results in self.subjects.items():
            good = [what for ok, what, _ in results if ok]
            if good:
                print(f"  ok   {subject}: {', '.join(good)}")
            for ok, what, detail in results:
                if not ok:
                    print(f"  FAIL {subject}: {what}" + (f" ({detail})" if detail else ""))


def flatten(config: dict) -> dict:
    return {f"{section}.{key}": value
            for section, keys in (config or {}).items() if isinstance(keys, dict)
            for key, value in keys.items()}


def check_config_keys(r: Report, subject: str, config) -> None:
    if not r.check(subject, "is a YAML mapping", isinstance(config, dict)):
        return
    unknown = sorted(f"{s}.{k}" for s, keys in config.items()
                     for k in (keys if isinstance(keys, dict) else {"(not a section)": 0})
                     if s not in CONTRACT_KEYS or k not in CONTRACT_KEYS[s])
    missing = sorted(f"{s}.{k}" for s, keys in CONTRACT_KEYS.items() for k in keys
                     if k not in (config.get(s) or {}))
    r.check(subject, "only contract keys", not unknown, "unknown: " + ", ".join(unknown))
    r.check(subject, "every contract key", not missing, "missing: " + ", ".join(missing))


def check_repo_configs(r: Report, local_dir: Path, cluster_dir: Path) -> None:
    for role in ROLES:
        local_path, cluster_path = local_dir / f"{role}.yaml", cluster_dir / f"{role}.yaml"
        subject = str(local_path)
        local = yaml.safe_load(local_path.read_text())
        check_config_keys(r, subject, local)
        flat = flatten(local)
        for key, want in PROMISED[role].items():
            r.check(subject, f"{key}={want!r}", flat.get(key) == want, f"is {flat.get(key)!r}")
        r.check(subject, "api.listen on loopback (local run)", str(flat.get("api.listen", "")).startswith("127.0.0.1:"))

        subject = str(cluster_path)
        cluster = yaml.safe_load(cluster_path.read_text())
        check_config_keys(r, subject, cluster)
        cflat = flatten(cluster)
        drift = sorted(k for k in set(flat) | set(cflat)
                       if k not in IN_CLUSTER_DIFFERENCES and flat.get(k) != cflat.get(k))
        r.check(subject, f"same as {local_path} except {', '.join(sorted(IN_CLUSTER_DIFFERENCES))}",
                not drift, "differs in: " + ", ".join(drift))
        check_cluster_config(r, subject, role, cluster)


def check_cluster_config(r: Report, subject: str, role: str, config) -> None:
    flat = flatten(config if isinstance(config, dict) else {})
    r.check(subject, f"node.role={role}", flat.get("node.role") == role, f"is {flat.get('node.role')!r}")
    r.check(subject, f"api.listen 0.0.0.0:{API_PORT} (probes)", flat.get("api.listen") == f"0.0.0.0:{API_PORT}",
            f"is {flat.get('api.listen')!r}")
    r.check(subject, "mDNS off", flat.get("network.enable_mdns") is False)
    ident = str(flat.get("node.identity_file", ""))
    r.check(subject, "identity_file on /data or /identity", ident.startswith(("/data/", "/identity/")), f"is {ident!r}")
    data = str(flat.get("node.data_dir", ""))
    r.check(subject, "data_dir on the /data volume", data.startswith("/data/"), f"is {data!r}")
    r.check(subject, f"metrics.listen on :{METRICS_PORT}", str(flat.get("metrics.listen", "")).endswith(f":{METRICS_PORT}"))
    r.check(subject, f"listen_port {P2P_PORT}", flat.get("node.listen_port") == P2P_PORT)
    if role != "bootstrap":
        r.check(subject, "bootstraps from the p2p-bootstrap Service",
                flat.get("network.bootstrap_peers") == [BOOTSTRAP_DNS], f"is {flat.get('network.bootstrap_peers')!r}")


def labels_match(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def resolve_port(port, container: dict):
    if isinstance(port, int):
        return port
    for p in container.get("ports") or []:
        if p.get("name") == port:
            return p.get("containerPort")
    return None


def check_stream(r: Report, name: str, docs: list) -> None:
    by_kind: dict[str, dict[str, dict]] = {}
    for d in docs:
        by_kind.setdefault(d.get("kind", "?"), {})[d.get("metadata", {}).get("name", "?")] = d
    s = f"[{name}] objects"

    # Namespace everywhere.
    ns = by_kind.get("Namespace", {})
    r.check(s, f"Namespace {NAMESPACE} defined", NAMESPACE in ns)
    if NAMESPACE in ns:
        lbl = ns[NAMESPACE].get("metadata", {}).get("labels") or {}
        r.check(s, "namespace enforces Pod Security 'restricted'",
                lbl.get("pod-security.kubernetes.io/enforce") == "restricted")
    wrong_ns = [f"{d['kind']}/{d['metadata']['name']}" for d in docs
                if d.get("kind") != "Namespace" and d.get("metadata", {}).get("namespace") != NAMESPACE]
    r.check(s, f"every namespaced object in {NAMESPACE}", not wrong_ns, ", ".join(wrong_ns))
    foreign_ns = [n for n in ns if n != NAMESPACE]
    r.check(s, "no other Namespace", not foreign_ns, ", ".join(foreign_ns))

    deployments = by_kind.get("Deployment", {})
    r.check(s, "Deployments exactly " + ", ".join(DEPLOYMENTS.values()),
            set(deployments) == set(DEPLOYMENTS.values()), "found " + ", ".join(sorted(deployments)))
    pod_labels = {}
    for role, dname in DEPLOYMENTS.items():
        if dname in deployments:
            pod_labels[role] = check_deployment(r, name, role, deployments[dname], by_kind)

    # Services.
    services = by_kind.get("Service", {})
    for svc_name, role in (("p2p-bootstrap", "bootstrap"), ("p2p-relay", "relay")):
        sub = f"[{name}] service/{svc_name}"
        svc = services.get(svc_name)
        if not r.check(sub, "exists", svc is not None):
            continue
        spec = svc.get("spec", {})
        ports = {(p.get("port"), p.get("protocol", "TCP")) for p in spec.get("ports") or []}
        r.check(sub, f"port {P2P_PORT}/TCP and {P2P_PORT}/UDP", {(P2P_PORT, "TCP"), (P2P_PORT, "UDP")} <= ports)
        r.check(sub, f"selects the {role} pods", labels_match(spec.get("selector") or {}, pod_labels.get(role, {})))
        r.check(sub, "not headless (stable ClusterIP)", spec.get("clusterIP") != "None")
        r.check(sub, "publishNotReadyAddresses (reachable before it has joined)",
                spec.get("publishNotReadyAddresses") is True)
    sub = f"[{name}] service/p2p-peers"
    peers = services.get("p2p-peers")
    if r.check(sub, "exists", peers is not None):
        spec = peers.get("spec", {})
        r.check(sub, "headless (clusterIP: None)", spec.get("clusterIP") == "None")
        r.check(sub, "publishNotReadyAddresses", spec.get("publishNotReadyAddresses") is True)
        sel = spec.get("selector") or {}
        r.check(sub, "selects every role", all(labels_match(sel, pod_labels.get(x, {})) for x in ROLES))
        r.check(sub, f"exposes metrics port {METRICS_PORT}",
                any(p.get("port") == METRICS_PORT for p in spec.get("ports") or []))
    for svc_name, svc in services.items():
        sel = svc.get("spec", {}).get("selector") or {}
        r.check(f"[{name}] service/{svc_name}", "selector matches some pods",
                any(labels_match(sel, lbl) for lbl in pod_labels.values()), str(sel))

    # A disruption budget per role.
    pdbs = by_kind.get("PodDisruptionBudget", {})
    for role in ROLES:
        sub = f"[{name}] pdb for role={role}"
        matching = [p for p in pdbs.values()
                    if labels_match(p.get("spec", {}).get("selector", {}).get("matchLabels") or {},
                                    pod_labels.get(role, {}))]
        if r.check(sub, "exists", len(matching) == 1, f"{len(matching)} match"):
            spec = matching[0]["spec"]
            r.check(sub, "sets minAvailable or maxUnavailable",
                    ("minAvailable" in spec) != ("maxUnavailable" in spec))

    # Worker autoscaler.
    sub = f"[{name}] hpa for p2p-worker"
    hpas = [h for h in by_kind.get("HorizontalPodAutoscaler", {}).values()
            if h.get("spec", {}).get("scaleTargetRef", {}).get("name") == "p2p-worker"]
    if r.check(sub, "exists", len(hpas) == 1, f"{len(hpas)} found"):
        h = hpas[0]
        spec = h["spec"]
        r.check(sub, "autoscaling/v2", h.get("apiVersion") == "autoscaling/v2")
        r.check(sub, "targets Deployment", spec["scaleTargetRef"].get("kind") == "Deployment")
        r.check(sub, "scales on CPU", any(m.get("resource", {}).get("name") == "cpu" for m in spec.get("metrics") or []))
        lo, hi = spec.get("minReplicas", 1), spec.get("maxReplicas", 0)
        r.check(sub, f"minReplicas {REPLICAS['worker']} <= maxReplicas", lo == REPLICAS["worker"] and hi >= lo,
                f"{lo}..{hi}")

    # ConfigMaps: one per role, consistent with the contract.
    for role in ROLES:
        cms = [c for n, c in by_kind.get("ConfigMap", {}).items() if n.startswith(f"p2p-{role}-config")]
        sub = f"[{name}] configmap p2p-{role}-config"
        if r.check(sub, "exists once", len(cms) == 1, f"{len(cms)} found"):
            data = (cms[0].get("data") or {}).get("config.yaml")
            if r.check(sub, "has config.yaml", data is not None):
                config = yaml.safe_load(data)
                check_config_keys(r, sub, config)
                check_cluster_config(r, sub, role, config)

    # Overlay extras.
    if name == "monitoring":
        sub = f"[{name}] servicemonitor"
        sms = list(by_kind.get("ServiceMonitor", {}).values())
        if r.check(sub, "exists", len(sms) == 1):
            spec = sms[0].get("spec", {})
            peers_labels = (peers or {}).get("metadata", {}).get("labels") or {}
            r.check(sub, "selects the p2p-peers Service only",
                    labels_match(spec.get("selector", {}).get("matchLabels") or {}, peers_labels)
                    and not any(labels_match(spec.get("selector", {}).get("matchLabels") or {},
                                             (v.get("metadata", {}).get("labels") or {}))
                                for k, v in services.items() if k != "p2p-peers"))
            r.check(sub, "scrapes the metrics port", any(e.get("port") == "metrics" for e in spec.get("endpoints") or []))
    else:
        r.check(s, "no ServiceMonitor outside the monitoring overlay", not by_kind.get("ServiceMonitor"))


def check_deployment(r: Report, name: str, role: str, dep: dict, by_kind: dict) -> dict:
    sub = f"[{name}] deployment/{dep['metadata']['name']}"
    spec = dep.get("spec", {})
    tmpl = spec.get("template", {})
    labels = tmpl.get("metadata", {}).get("labels") or {}
    annotations = tmpl.get("metadata", {}).get("annotations") or {}
    pod = tmpl.get("spec", {})
    psc = pod.get("securityContext") or {}

    r.check(sub, f"label role={role} on the Deployment", (dep["metadata"].get("labels") or {}).get("role") == role)
    r.check(sub, f"pod label role={role}", labels.get("role") == role)
    r.check(sub, f"pod label app.kubernetes.io/name={APP}", labels.get("app.kubernetes.io/name") == APP)
    r.check(sub, "selector matches the pod labels and includes role",
            labels_match(spec.get("selector", {}).get("matchLabels") or {}, labels)
            and (spec.get("selector", {}).get("matchLabels") or {}).get("role") == role)
    r.check(sub, f"replicas {REPLICAS[role]}", spec.get("replicas") == REPLICAS[role], f"is {spec.get('replicas')}")
    if role in ("bootstrap", "relay"):
        r.check(sub, "Recreate strategy (one peer id, never two pods at once)",
                (spec.get("strategy") or {}).get("type") == "Recreate")
    r.check(sub, "prometheus.io/scrape annotation", annotations.get("prometheus.io/scrape") == "true")
    r.check(sub, f"prometheus.io/port {METRICS_PORT}", annotations.get("prometheus.io/port") == str(METRICS_PORT))
    r.check(sub, "prometheus.io/path /metrics", annotations.get("prometheus.io/path") == "/metrics")
    r.check(sub, "no host namespaces", not any(pod.get(k) for k in ("hostNetwork", "hostPID", "hostIPC")))
    r.check(sub, "no service account token", pod.get("automountServiceAccountToken") is False)

    volumes = {v.get("name"): v for v in pod.get("volumes") or []}
    containers = pod.get("containers") or []
    r.check(sub, "has containers", bool(containers))
    grace = pod.get("terminationGracePeriodSeconds", 30)
    for c in (pod.get("initContainers") or []) + containers:
        csub = f"{sub} container {c.get('name')}"
        csc = c.get("securityContext") or {}

        def eff(key):
            return csc.get(key, psc.get(key))

        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            p = c.get(probe) or {}
            get = p.get("httpGet") or {}
            r.check(csub, f"{probe} GET {path} on :{API_PORT}",
                    get.get("path") == path and resolve_port(get.get("port"), c) == API_PORT,
                    f"is {get.get('path')} on {get.get('port')}")
        res = c.get("resources") or {}
        for kind in ("requests", "limits"):
            have = res.get(kind) or {}
            r.check(csub, f"resources.{kind} cpu+memory", "cpu" in have and "memory" in have, str(have))
        r.check(csub, "runAsNonRoot", eff("runAsNonRoot") is True)
        r.check(csub, f"runAsUser {UID}", eff("runAsUser") == UID, f"is {eff('runAsUser')}")
        r.check(csub, "allowPrivilegeEscalation false", csc.get("allowPrivilegeEscalation") is False)
        caps = csc.get("capabilities") or {}
        r.check(csub, "capabilities drop ALL, add none", "ALL" in (caps.get("drop") or []) and not caps.get("add"))
        r.check(csub, "readOnlyRootFilesystem", csc.get("readOnlyRootFilesystem") is True)
        r.check(csub, "seccomp RuntimeDefault", (eff("seccompProfile") or {}).get("type") == "RuntimeDefault")
        r.check(csub, "not privileged", not csc.get("privileged"))
        want_pull = PULL_POLICY.get(name)
        if want_pull:
            r.check(csub, f"imagePullPolicy {want_pull} (image is loaded, not pulled)",
                    c.get("imagePullPolicy") == want_pull, f"is {c.get('imagePullPolicy')}")

        ports = {(p.get("containerPort"), p.get("protocol", "TCP")) for p in c.get("ports") or []}
        r.check(csub, "ports 4001/TCP 4001/UDP 8080 9090",
                {(P2P_PORT, "TCP"), (P2P_PORT, "UDP"), (API_PORT, "TCP"), (METRICS_PORT, "TCP")} <= ports)

        env = c.get("env") or []
        names = [e.get("name") for e in env]
        ext = next((e for e in env if e.get("name") == "P2P_NODE__EXTERNAL_ADDRESSES"), {})
        pod_ip = next((e for e in env if e.get("name") == "POD_IP"), {})
        r.check(csub, "POD_IP from the downward API (status.podIP)",
                (pod_ip.get("valueFrom") or {}).get("fieldRef", {}).get("fieldPath") == "status.podIP")
        psk = next((e for e in env if e.get("name") == "P2P_SECURITY__PSK_FILE"), None)
        announced = str(ext.get("value"))
        after_pod_ip = "POD_IP" in names and names.index("POD_IP") < names.index("P2P_NODE__EXTERNAL_ADDRESSES")
        if psk is None:
            r.check(csub, "P2P_NODE__EXTERNAL_ADDRESSES announces $(POD_IP) tcp+quic, after POD_IP",
                    "/ip4/$(POD_IP)/tcp/4001" in announced and "/ip4/$(POD_IP)/udp/4001/quic-v1" in announced
                    and after_pod_ip, f"is {announced!r}")
        else:
            # A private cluster: pnet protects TCP only, so no QUIC listener and no QUIC address.
            quic = next((e for e in env if e.get("name") == "P2P_NETWORK__ENABLE_QUIC"), {})
            r.check(csub, "pre-shared key: QUIC off, only $(POD_IP) tcp announced, after POD_IP",
                    str(quic.get("value")) == "false" and announced == "/ip4/$(POD_IP)/tcp/4001" and after_pod_ip,
                    f"enable_quic {quic.get('value')!r}, announces {announced!r}")
            mounts = {m.get("mountPath"): m.get("name") for m in c.get("volumeMounts") or []}
            key_dir = str(psk.get("value")).rsplit("/", 1)[0]
            volume = next((v for v in pod.get("volumes") or [] if v.get("name") == mounts.get(key_dir)), {})
            r.check(csub, "pre-shared key mounted read-only from a Secret, readable by uid 10001",
                    "secret" in volume and any(m.get("mountPath") == key_dir and m.get("readOnly")
                                               for m in c.get("volumeMounts") or [])
                    and (pod.get("securityContext") or {}).get("fsGroup") == UID
                    and (volume["secret"].get("defaultMode", 0o644) & 0o040) != 0,
                    f"{key_dir} -> {volume}")

        pre = ((c.get("lifecycle") or {}).get("preStop")) or {}
        sleep = None
        if "sleep" in pre:
            sleep = (pre["sleep"] or {}).get("seconds")
        elif "exec" in pre:
            cmd = pre["exec"].get("command") or []
            nums = [int(x) for x in cmd if re.fullmatch(r"\d+", str(x))]
            if cmd and cmd[0].endswith("sleep") and nums:
                sleep = nums[0]
        r.check(csub, "preStop sleep", sleep is not None and sleep > 0, str(pre))
        r.check(csub, f"terminationGracePeriodSeconds {grace} > preStop + {DRAIN_SECONDS} s drain",
                sleep is not None and grace > sleep + DRAIN_SECONDS)

        mounts = {m.get("mountPath"): m for m in c.get("volumeMounts") or []}
        for path in ("/tmp", "/data"):
            m = mounts.get(path)
            r.check(csub, f"emptyDir at {path}", m is not None and "emptyDir" in volumes.get(m.get("name"), {}))
        m = mounts.get("/app/config.yaml")
        cm = (volumes.get((m or {}).get("name")) or {}).get("configMap", {}).get("name", "")
        r.check(csub, f"/app/config.yaml from ConfigMap p2p-{role}-config",
                m is not None and m.get("subPath") == "config.yaml" and cm.startswith(f"p2p-{role}-config")
                and cm in by_kind.get("ConfigMap", {}), f"configMap {cm!r}")
        if role in ("bootstrap", "relay"):
            m = mounts.get("/identity")
            secret = (volumes.get((m or {}).get("name")) or {}).get("secret", {})
            r.check(csub, f"identity Secret p2p-{role}-identity read-only at /identity",
                    m is not None and m.get("readOnly") is True
                    and secret.get("secretName") == f"p2p-{role}-identity")
            r.check(csub, "Secret file readable by uid 10001 (fsGroup + group-read mode)",
                    psc.get("fsGroup") == UID and (secret.get("defaultMode", 0o644) & 0o040) != 0)
    return labels


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs=2, metavar=("CONFIG_DIR", "CLUSTER_CONFIG_DIR"),
                    help="check config/*.yaml against the contract and what users were told, "
                         "and the in-cluster copies against them")
    ap.add_argument("streams", nargs="*", metavar="NAME=RENDERED.yaml")
    args = ap.parse_args()
    if not args.configs and not args.streams:
        ap.error("nothing to check")

    r = Report()
    if args.configs:
        print(f"policy: node configs ({args.configs[0]}/*.yaml and {args.configs[1]}/*.yaml)")
        check_repo_configs(r, Path(args.configs[0]), Path(args.configs[1]))
        r.print()
    for item in args.streams:
        name, sep, path = item.partition("=")
        if not sep:
            ap.error(f"expected NAME=FILE, got {item!r}")
        docs = [d for d in yaml.safe_load_all(Path(path).read_text()) if d]
        print(f"policy: rendered {name} ({len(docs)} objects)")
        mark = len(r.subjects)
        check_stream(r, name, docs)
        sub = Report()
        sub.subjects = OrderedDict(list(r.subjects.items())[mark:])
        sub.print()
    print(f"policy: {r.passed} passed, {r.failed} failed")
    return 1 if r.failed else 0


if __name__ == "__main__":
    sys.exit(main())
