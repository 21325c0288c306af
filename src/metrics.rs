//! The node's own Prometheus metrics, registered on the one registry it shares with
//! `libp2p-metrics`, and the HTTP endpoint that serves them.
//!
//! `Metrics` is cheap to clone (every family is reference-counted) and is passed down
//! explicitly; there are no global statics.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    pub role: String,
    pub transport: String,
}

/// Declares a reason enum whose variants each carry their metric label, so the label values
/// dashboards rely on are written down once.
macro_rules! labelled {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $label:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every variant, for tests and documentation.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The metric label value.
            pub fn label(self) -> &'static str {
                match self {
                    $($name::$variant => $label,)+
                }
            }
        }
    };
}

labelled! {
    /// Why a message from a peer was dropped: the `reason` of `p2p_messages_dropped_total`.
    DropReason {
        GossipUnsigned => "gossip_unsigned",
        GossipBadSignature => "gossip_bad_signature",
        GossipOversized => "gossip_oversized",
        /// A newer wire version: ignored rather than punished (rolling upgrades).
        GossipVersion => "gossip_version",
        GossipMalformed => "gossip_malformed",
        GossipWrongTopic => "gossip_wrong_topic",
        GossipSenderMismatch => "gossip_sender_mismatch",
        RumorBadPeerId => "rumor_bad_peer_id",
        TaskRequestMalformed => "task_request_malformed",
        TaskRequestAborted => "task_request_aborted",
        TaskResponseMalformed => "task_response_malformed",
        TaskResponseAborted => "task_response_aborted",
        /// An answer on a lane to no task in flight there.
        TaskResponseUnexpected => "task_response_unexpected",
        /// A task arrived before Identify confirmed its sender is of our cluster.
        TaskFromUnidentifiedPeer => "task_from_unidentified_peer",
        TaskVersion => "task_version",
        TaskSubmitterNotAllowed => "task_submitter_not_allowed",
        StaleTaskResult => "stale_task_result",
        MismatchedTaskResult => "mismatched_task_result",
        ProbeRequestMalformed => "probe_request_malformed",
        ProbeRequestAborted => "probe_request_aborted",
        ProbeUnexpected => "probe_unexpected",
        RecordsRequestMalformed => "records_request_malformed",
        RecordsRequestAborted => "records_request_aborted",
        /// A record-copy request from a non-member, or of another wire version.
        RecordsUnexpected => "records_unexpected",
    }
}

labelled! {
    /// Why this node started a dial: the `reason` of `p2p_dials_total`. The node's own dials are
    /// counted where they start (`Swarm::dial` emits no event); a behaviour's own dials (Kademlia's
    /// queries, a request to a peer not connected, a relay reservation) on `SwarmEvent::Dialing`.
    DialCause {
        /// Membership's direct ping of a member not connected (SWIM, or a probe for someone else).
        Ping => "ping",
        /// Task records sent to a copy holder not connected.
        Records => "records",
        /// A member of the active view not connected.
        View => "view",
        /// A peer just discovered (Kademlia, mDNS) while the view is not full.
        Discovery => "discovery",
        /// A configured bootstrap address.
        Bootstrap => "bootstrap",
        /// A task for a worker not connected.
        Task => "task",
        /// Started by a libp2p behaviour on its own.
        Libp2p => "libp2p",
    }
}

labelled! {
    /// A limit that refused something: the `limit` of `p2p_limit_hits_total`.
    Limit {
        Connections => "connections",
        ConnectionsPerPeer => "connections_per_peer",
        PendingIncoming => "pending_incoming",
        PendingOutgoing => "pending_outgoing",
        Memory => "memory",
        TaskRequestsPerPeer => "task_requests_per_peer",
        TaskLanesPerPeer => "task_lanes_per_peer",
        TaskQueue => "task_queue",
        TaskBacklog => "task_backlog",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MessageLabels {
    pub direction: &'static str,
    pub protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabels {
    pub r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExecutedLabels {
    pub r#type: String,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabels {
    /// `new` for a member first heard of.
    pub from: &'static str,
    pub to: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    pub limit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: String,
    pub commit: String,
}

fn duration_histogram() -> Histogram {
    // 100 µs .. ~100 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 21))
}

fn rtt_histogram() -> Histogram {
    // 50 µs .. ~3 s
    Histogram::new(exponential_buckets(0.00005, 2.0, 17))
}

#[derive(Clone)]
pub struct Metrics {
    pub peers_connected: Family<PeerLabels, Gauge>,
    pub peers_rejected: Family<ReasonLabels, Counter>,
    pub messages: Family<MessageLabels, Counter>,
    pub message_bytes: Family<MessageLabels, Counter>,
    pub messages_dropped: Family<ReasonLabels, Counter>,
    pub tasks_submitted: Family<TypeLabels, Counter>,
    pub tasks_completed: Family<TypeLabels, Counter>,
    pub tasks_failed: Family<TypeLabels, Counter>,
    pub tasks_retried: Family<TypeLabels, Counter>,
    pub tasks_cancelled: Family<TypeLabels, Counter>,
    pub tasks_rejected: Family<ReasonLabels, Counter>,
    pub tasks_adopted: Counter,
    pub tasks_handed_over: Counter,
    pub copies_fenced: Counter,
    pub tasks_final_from_copies: Counter,
    pub tasks_reclaimed: Counter,
    pub task_duration: Family<TypeLabels, Histogram, fn() -> Histogram>,
    pub queue_depth: Gauge,
    pub tasks_running: Gauge,
    pub tasks_executing: Gauge,
    pub tasks_executed: Family<ExecutedLabels, Counter>,
    /// Runs of WebAssembly modules on this worker, by outcome (`crate::wasm::Outcome::label`).
    pub wasm_runs: Family<OutcomeLabels, Counter>,
    pub replicas_minority: Counter,
    pub replica_decisions: Family<OutcomeLabels, Counter>,
    pub replicas_finished: Family<OutcomeLabels, Counter>,
    pub ping_rtt: Histogram,
    pub node_up: Gauge,
    pub node_ready: Gauge,
    pub uptime: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub nat_status: Family<StatusLabels, Gauge>,
    pub members: Family<StateLabels, Gauge>,
    pub local_health: Gauge,
    /// State changes of other members in this node's table (a suspicion in a quiet cluster
    /// is a false one: the figure an operator alerts on).
    pub member_transitions: Family<TransitionLabels, Counter>,
    /// Times this node heard itself suspected or declared dead and refuted it.
    pub refutations: Counter,
    /// Pulls of members' advertisements (`network/catch_up.rs`), asked and answered, by outcome.
    pub member_pulls: Family<OutcomeLabels, Counter>,
    pub relay_reservations: Gauge,
    pub holepunch: Family<OutcomeLabels, Counter>,
    pub limit_hits: Family<LimitLabels, Counter>,
    pub gossip_validation: Family<OutcomeLabels, Counter>,
    pub gossip_graylisted: Gauge,
    pub connections_trimmed: Counter,
    /// Dials started, by why ([`DialCause`]).
    pub dials: Family<ReasonLabels, Counter>,
    /// SWIM probes this node started (each asks helpers about one member).
    pub probes: Counter,
    /// The network loop stopped reading its connections: its core fell behind.
    pub network_held_back: Counter,
    /// The credit ledger (`crate::ledger::service`).
    pub ledger: LedgerMetrics,
    /// Spans that never reached the OTLP collector (`telemetry`): shared with the exporter,
    /// which exists before the node and its registry.
    pub telemetry_spans_dropped: Counter,
    started: Arc<std::time::Instant>,
}

impl Metrics {
    /// Registers every family under the `p2p_` prefix of `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        Self::with_spans_dropped(registry, Counter::default())
    }

    /// Like [`Metrics::new`], counting dropped spans in `spans_dropped` (the exporter's).
    pub fn with_spans_dropped(registry: &mut Registry, spans_dropped: Counter) -> Self {
        let r = registry.sub_registry_with_prefix("p2p");
        let m = Self {
            peers_connected: Family::default(),
            peers_rejected: Family::default(),
            messages: Family::default(),
            message_bytes: Family::default(),
            messages_dropped: Family::default(),
            tasks_submitted: Family::default(),
            tasks_completed: Family::default(),
            tasks_failed: Family::default(),
            tasks_retried: Family::default(),
            tasks_cancelled: Family::default(),
            tasks_rejected: Family::default(),
            tasks_adopted: Counter::default(),
            tasks_handed_over: Counter::default(),
            copies_fenced: Counter::default(),
            tasks_final_from_copies: Counter::default(),
            tasks_reclaimed: Counter::default(),
            task_duration: Family::new_with_constructor(duration_histogram),
            queue_depth: Gauge::default(),
            tasks_running: Gauge::default(),
            tasks_executing: Gauge::default(),
            tasks_executed: Family::default(),
            wasm_runs: Family::default(),
            replicas_minority: Counter::default(),
            replica_decisions: Family::default(),
            replicas_finished: Family::default(),
            ledger: LedgerMetrics::default(),
            ping_rtt: rtt_histogram(),
            node_up: Gauge::default(),
            node_ready: Gauge::default(),
            uptime: Gauge::default(),
            nat_status: Family::default(),
            members: Family::default(),
            local_health: Gauge::default(),
            member_transitions: Family::default(),
            refutations: Counter::default(),
            member_pulls: Family::default(),
            relay_reservations: Gauge::default(),
            holepunch: Family::default(),
            limit_hits: Family::default(),
            gossip_validation: Family::default(),
            gossip_graylisted: Gauge::default(),
            connections_trimmed: Counter::default(),
            dials: Family::default(),
            probes: Counter::default(),
            network_held_back: Counter::default(),
            telemetry_spans_dropped: spans_dropped,
            started: Arc::new(std::time::Instant::now()),
        };
        m.register_peers(r);
        m.register_tasks(r);
        m.register_node(r);
        m.ledger.register(r);
        m.node_up.set(1);
        m
    }

    /// Peers, messages and what was dropped of them.
    fn register_peers(&self, r: &mut Registry) {
        r.register("peers_connected", "Connected cluster peers by role and transport", self.peers_connected.clone());
        r.register(
            "peers_rejected",
            "Connections closed because the peer is not of this cluster",
            self.peers_rejected.clone(),
        );
        r.register("messages", "Application messages sent and received by protocol", self.messages.clone());
        r.register("message_bytes", "Application message bytes by protocol", self.message_bytes.clone());
        r.register(
            "messages_dropped",
            "Peer messages dropped as malformed, oversized or unexpected",
            self.messages_dropped.clone(),
        );
    }

    /// Tasks at the gateway and attempts on the worker.
    fn register_tasks(&self, r: &mut Registry) {
        r.register("tasks_submitted", "Tasks accepted at this gateway", self.tasks_submitted.clone());
        r.register("tasks_completed", "Tasks that completed (gateway view)", self.tasks_completed.clone());
        r.register("tasks_failed", "Tasks that ended failed after their attempts", self.tasks_failed.clone());
        r.register("tasks_retried", "Attempts retried on another worker", self.tasks_retried.clone());
        r.register("tasks_cancelled", "Tasks cancelled by a user", self.tasks_cancelled.clone());
        r.register("tasks_rejected", "Submissions refused before acceptance", self.tasks_rejected.clone());
        r.register(
            "tasks_adopted",
            "Unfinished tasks this node took over from a lost gateway",
            self.tasks_adopted.clone(),
        );
        r.register(
            "tasks_handed_over",
            "Tasks this gateway stopped driving because a copy holder had adopted them",
            self.tasks_handed_over.clone(),
        );
        r.register(
            "record_copies_fenced",
            "Forwarded record copies refused because a later owner holds the task",
            self.copies_fenced.clone(),
        );
        r.register(
            "tasks_final_from_copies",
            "Restored tasks not run again: a copy holder had their final record",
            self.tasks_final_from_copies.clone(),
        );
        r.register(
            "tasks_reclaimed",
            "Unfinished tasks a restarted gateway took back from copy holders (its own store had lost them)",
            self.tasks_reclaimed.clone(),
        );
        r.register("task_duration_seconds", "Time from submission to final state", self.task_duration.clone());
        r.register("task_queue_depth", "Tasks waiting for a free worker", self.queue_depth.clone());
        r.register("tasks_running", "Tasks dispatched and awaiting an answer", self.tasks_running.clone());
        r.register(
            "tasks_executing",
            "Task attempts admitted on this worker (executing or waiting for a slot)",
            self.tasks_executing.clone(),
        );
        r.register("tasks_executed", "Task attempts executed on this worker", self.tasks_executed.clone());
        r.register("wasm_runs", "WebAssembly module runs on this worker, by outcome", self.wasm_runs.clone());
        r.register(
            "replicas_minority",
            "Replica results outvoted by a quorum of other replicas (their workers lose gossip score)",
            self.replicas_minority.clone(),
        );
        r.register(
            "replica_decisions",
            "Replicated tasks decided, by outcome (agreed, no_quorum)",
            self.replica_decisions.clone(),
        );
        r.register(
            "replicas_finished",
            "Replicas of replicated tasks that reached a final state, by state",
            self.replicas_finished.clone(),
        );
    }

    /// The node itself: liveness, membership, NAT, limits, gossip, build.
    fn register_node(&self, r: &mut Registry) {
        r.register("ping_rtt_seconds", "Ping round-trip time to peers", self.ping_rtt.clone());
        r.register("node_up", "1 while the node runs", self.node_up.clone());
        r.register("node_ready", "1 once the node has joined the cluster", self.node_ready.clone());
        r.register("node_uptime_seconds", "Seconds since the node started", self.uptime.clone());
        r.register("nat_status", "1 for the current AutoNAT status", self.nat_status.clone());
        r.register("membership_members", "Known cluster members by SWIM state", self.members.clone());
        r.register(
            "membership_local_health",
            "Lifeguard local health score: 0 healthy, up to 8; this node's failure-detection timeouts stretch by 1 + score",
            self.local_health.clone(),
        );
        r.register(
            "membership_transitions",
            "State changes of other members in this node's table, by from (new for a member first heard of) and to state",
            self.member_transitions.clone(),
        );
        r.register(
            "membership_refutations",
            "Times this node heard itself suspected or declared dead and refuted it with a higher incarnation",
            self.refutations.clone(),
        );
        r.register(
            "membership_pulls",
            "Pulls of members' advertisements from a neighbour, by outcome (pulled, pull_failed; served, refused, serve_failed when asked)",
            self.member_pulls.clone(),
        );
        r.register(
            "relay_reservations",
            "Active relay reservations held by this node",
            self.relay_reservations.clone(),
        );
        r.register("holepunch", "DCUtR hole-punch outcomes", self.holepunch.clone());
        r.register(
            "limit_hits",
            "Times a configured limit refused a connection, stream or request",
            self.limit_hits.clone(),
        );
        r.register(
            "gossip_validation",
            "GossipSub messages by application validation outcome (accept, reject, ignore)",
            self.gossip_validation.clone(),
        );
        r.register(
            "gossip_graylisted_peers",
            "Connected peers whose GossipSub score is below the graylist threshold",
            self.gossip_graylisted.clone(),
        );
        r.register(
            "connections_trimmed",
            "Idle connections closed because they lie outside the active view",
            self.connections_trimmed.clone(),
        );
        r.register(
            "dials",
            "Connections this node started to open, by reason: ping (membership's direct ping of a member not \
             connected), records, view (the active view), discovery, bootstrap, task, libp2p (a behaviour's own)",
            self.dials.clone(),
        );
        r.register(
            "membership_probes",
            "SWIM probes this node started: a member missed a ping, dropped its connection or fell silent, and \
             helpers were asked about it",
            self.probes.clone(),
        );
        r.register(
            "network_held_back",
            "Times the network loop stopped reading its connections because 1,024 events waited for the node's \
             core (a core falling behind: pings and probes go unanswered until it catches up)",
            self.network_held_back.clone(),
        );
        r.register(
            "telemetry_spans_dropped",
            "Task spans that never reached the OTLP collector: the export failed or the queue was full",
            self.telemetry_spans_dropped.clone(),
        );
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").into(),
                commit: option_env!("P2P_BUILD_COMMIT").unwrap_or("unknown").into(),
            })
            .set(1);
        r.register("build_info", "Version and commit of this binary", build);
    }

    /// Refreshes gauges that are derived from time at scrape.
    pub fn refresh(&self) {
        self.uptime.set(self.started.elapsed().as_secs_f64());
    }

    pub fn message(&self, direction: &'static str, protocol: &'static str, bytes: usize) {
        let labels = MessageLabels { direction, protocol };
        self.messages.get_or_create(&labels).inc();
        self.message_bytes.get_or_create(&labels).inc_by(bytes as u64);
    }

    /// A dial started, for `cause`.
    pub fn dialed(&self, cause: DialCause) {
        self.dials.get_or_create(&ReasonLabels { reason: cause.label().into() }).inc();
    }

    /// A message from a peer was dropped.
    pub fn dropped(&self, reason: DropReason) {
        self.messages_dropped.get_or_create(&ReasonLabels { reason: reason.label().into() }).inc();
    }

    /// A WebAssembly run ended as `outcome`.
    pub fn wasm_outcome(&self, outcome: &'static str) {
        self.wasm_runs.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// A replicated task was decided (`agreed` or `no_quorum`).
    pub fn replica_decision(&self, outcome: &'static str) {
        self.replica_decisions.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// A limit from the `limits` section (or the task queue) refused something.
    pub fn limit_hit(&self, limit: Limit) {
        self.limit_hits.get_or_create(&LimitLabels { limit: limit.label() }).inc();
    }

    pub fn set_nat(&self, status: &'static str) {
        for s in ["unknown", "public", "private"] {
            self.nat_status.get_or_create(&StatusLabels { status: s }).set(i64::from(s == status));
        }
    }
}

/// Rewrites OpenMetrics text (what prometheus-client encodes) as the Prometheus text format
/// 0.0.4, for scrapers that do not ask for OpenMetrics (and for `promtool check metrics`):
/// counter families are named with their `_total` suffix, info families become gauges named
/// `_info`, unit lines and the `# EOF` trailer go.
pub fn openmetrics_to_prometheus(text: &str) -> String {
    use std::collections::HashMap;
    let types: HashMap<&str, &str> =
        text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter_map(|rest| rest.split_once(' ')).collect();
    let family = |name: &str| -> String {
        match types.get(name) {
            Some(&"counter") => format!("{name}_total"),
            Some(&"info") => format!("{name}_info"),
            _ => name.to_string(),
        }
    };
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            out.push_str(&format!("# HELP {} {help}\n", family(name)));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            let ty = match ty {
                "counter" | "gauge" | "histogram" | "summary" => ty,
                "info" => "gauge",
                _ => "untyped",
            };
            out.push_str(&format!("# TYPE {} {ty}\n", family(name)));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Serves `/metrics` from `registry` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    registry: Arc<Registry>,
    metrics: Metrics,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::http::header::CONTENT_TYPE;
    use axum::routing::get;
    let app = axum::Router::new().route(
        "/metrics",
        get(move |headers: axum::http::HeaderMap| {
            let registry = registry.clone();
            let metrics = metrics.clone();
            async move {
                metrics.refresh();
                let openmetrics = headers
                    .get(axum::http::header::ACCEPT)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.contains("application/openmetrics-text"));
                let mut body = String::new();
                match prometheus_client::encoding::text::encode(&mut body, &registry) {
                    Ok(()) if openmetrics => (
                        axum::http::StatusCode::OK,
                        [(CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
                        body,
                    ),
                    Ok(()) => (
                        axum::http::StatusCode::OK,
                        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
                        openmetrics_to_prometheus(&body),
                    ),
                    Err(e) => (
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                        [(CONTENT_TYPE, "text/plain; charset=utf-8")],
                        format!("encoding metrics failed: {e}"),
                    ),
                }
            }
        }),
    );
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_becomes_prometheus_text() {
        let om = "# HELP p2p_tasks_submitted Tasks accepted.\n# TYPE p2p_tasks_submitted counter\n\
                  p2p_tasks_submitted_total{type=\"echo\"} 3\n# HELP up Up.\n# TYPE up gauge\n# UNIT up seconds\nup 1\n\
                  # TYPE v info\nv_info{version=\"1\"} 1\n# EOF\n";
        let text = openmetrics_to_prometheus(om);
        assert_eq!(
            text,
            "# HELP p2p_tasks_submitted_total Tasks accepted.\n# TYPE p2p_tasks_submitted_total counter\n\
             p2p_tasks_submitted_total{type=\"echo\"} 3\n# HELP up Up.\n# TYPE up gauge\nup 1\n\
             # TYPE v_info gauge\nv_info{version=\"1\"} 1\n"
        );
    }

    #[test]
    fn our_registry_encodes_in_both_formats() {
        let mut registry = Registry::default();
        let m = Metrics::new(&mut registry);
        m.tasks_submitted.get_or_create(&TypeLabels { r#type: "echo".into() }).inc();
        let mut om = String::new();
        prometheus_client::encoding::text::encode(&mut om, &registry).unwrap();
        assert!(om.ends_with("# EOF\n"));
        let text = openmetrics_to_prometheus(&om);
        assert!(text.contains("# TYPE p2p_tasks_submitted_total counter"), "{text}");
        assert!(text.contains("p2p_tasks_submitted_total{type=\"echo\"} 1"), "{text}");
        assert!(!text.contains("# EOF"));
    }

    #[test]
    fn reason_labels_are_distinct_snake_case_and_counted_under_their_label() {
        for labels in [
            DropReason::ALL.iter().map(|r| r.label()).collect::<Vec<_>>(),
            Limit::ALL.iter().map(|l| l.label()).collect(),
            DialCause::ALL.iter().map(|c| c.label()).collect(),
        ] {
            let distinct: std::collections::HashSet<_> = labels.iter().collect();
            assert_eq!(distinct.len(), labels.len(), "{labels:?}");
            assert!(
                labels.iter().all(|l| l.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')),
                "{labels:?}"
            );
        }
        let m = Metrics::new(&mut Registry::default());
        m.dropped(DropReason::GossipWrongTopic);
        m.limit_hit(Limit::TaskQueue);
        let reason = ReasonLabels { reason: "gossip_wrong_topic".into() };
        assert_eq!(m.messages_dropped.get_or_create(&reason).get(), 1);
        assert_eq!(m.limit_hits.get_or_create(&LimitLabels { limit: "task_queue" }).get(), 1);
    }
}

/// How a block reached this node and what became of it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BlockLabels {
    /// `gossip`, `sync` (anti-entropy) or `store` (replayed at start).
    pub via: &'static str,
    /// `accepted`, `pending`, `duplicate`, `equivocation` or `rejected`.
    pub outcome: &'static str,
}

/// The credit ledger's metrics (`p2p_ledger_*`).
#[derive(Clone, Debug, Default)]
pub struct LedgerMetrics {
    pub credits_earned: Counter,
    pub credits_paid: Counter,
    pub balance: Gauge,
    pub blocks_sealed: Counter,
    pub blocks_received: Family<BlockLabels, Counter>,
    pub blocks_rejected: Family<ReasonLabels, Counter>,
    pub equivocations: Counter,
    pub frozen_accounts: Gauge,
    pub accounts: Gauge,
    pub blocks_held: Gauge,
    pub pending_blocks: Gauge,
    pub payments_waiting: Gauge,
    pub payments_dropped: Counter,
    pub sync_lag: Gauge,
    pub syncs: Family<OutcomeLabels, Counter>,
}

impl LedgerMetrics {
    fn register(&self, r: &mut Registry) {
        let r = r.sub_registry_with_prefix("ledger");
        r.register("credits_earned", "Credits paid to this node in blocks it accepted", self.credits_earned.clone());
        r.register("credits_paid", "Credits this node paid in the blocks it sealed", self.credits_paid.clone());
        r.register("balance", "This node's balance in credits", self.balance.clone());
        r.register("blocks_sealed", "Blocks this node sealed from its payments", self.blocks_sealed.clone());
        r.register(
            "blocks_received",
            "Blocks received, by how they came (gossip, sync, store) and what became of them",
            self.blocks_received.clone(),
        );
        r.register("blocks_rejected", "Invalid blocks dropped, by reason", self.blocks_rejected.clone());
        r.register(
            "equivocations",
            "Equivocations (two blocks at one seq of an account) learnt",
            self.equivocations.clone(),
        );
        r.register("frozen_accounts", "Accounts frozen for equivocating", self.frozen_accounts.clone());
        r.register("accounts", "Accounts in the ledger", self.accounts.clone());
        r.register("blocks", "Blocks held in the ledger", self.blocks_held.clone());
        r.register(
            "pending_blocks",
            "Blocks waiting for earlier ones or for their dependencies",
            self.pending_blocks.clone(),
        );
        r.register("payments_waiting", "Payments this node owes, waiting to be sealed", self.payments_waiting.clone());
        r.register(
            "payments_dropped",
            "Payments this node could not queue (the pool was full)",
            self.payments_dropped.clone(),
        );
        r.register(
            "sync_lag_blocks",
            "Blocks behind the best head known of each account, summed",
            self.sync_lag.clone(),
        );
        r.register("syncs", "Anti-entropy rounds, by outcome (same, fetched, failed)", self.syncs.clone());
    }

    pub fn received(&self, via: &'static str, outcome: &'static str) {
        self.blocks_received.get_or_create(&BlockLabels { via, outcome }).inc();
    }

    pub fn rejected(&self, reason: &str) {
        self.blocks_rejected.get_or_create(&ReasonLabels { reason: reason.to_string() }).inc();
    }
}
