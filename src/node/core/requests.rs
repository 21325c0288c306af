//! Answering the API: task requests go to the gateway, reads are built from what the core
//! knows (and, for `peers` and `status`, what the network reports).

use std::sync::atomic::Ordering;

use super::{Core, views};
use crate::network::NetworkStatus;
use crate::node::handle::Request;
use crate::node::views::{CapabilitiesView, LocalCapabilities, MemberCounts, StatusView, TaskCounts};
use crate::scheduler::SubmitError;

impl Core {
    pub(super) async fn on_request(&mut self, request: Request) {
        match request {
            Request::Submit { spec, waiter, reply } => {
                if self.health.shutting_down.load(Ordering::Relaxed) {
                    let _ = reply.send(Err(SubmitError::ShuttingDown));
                    return;
                }
                let workers = self.workers();
                match self.gateway.submit(spec, &workers) {
                    Ok(id) => {
                        if let Some(waiter) = waiter {
                            let _ = self.gateway.wait(&id, waiter);
                        }
                        // Acknowledged once the task's record is stored.
                        self.gateway.after_commit(Box::new(move |stored| {
                            let _ = reply.send(stored.map(|()| id));
                        }));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Request::SubmitBatch { specs, waiters, reply } => {
                if self.health.shutting_down.load(Ordering::Relaxed) {
                    let _ = reply.send(Err((0, SubmitError::ShuttingDown)));
                    return;
                }
                let workers = self.workers();
                match self.gateway.submit_batch(specs, &workers) {
                    Ok(ids) => {
                        for (id, waiter) in ids.iter().zip(waiters) {
                            let _ = self.gateway.wait(id, waiter);
                        }
                        self.gateway.after_commit(Box::new(move |stored| {
                            let _ = reply.send(stored.map(|()| ids).map_err(|e| (0, e)));
                        }));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Request::Get { id, reply } => self.get_record(id, reply).await,
            Request::List { limit, reply } => {
                let _ = reply.send(self.gateway.list(limit));
            }
            Request::Cancel { id, reply } => {
                let result = self.gateway.cancel(&id);
                let _ = reply.send(result);
            }
            Request::Peers { reply } => {
                let scores = self.network.gossip_scores().await.unwrap_or_default();
                let _ = reply.send(views::peers(&self.membership, &self.connections, &scores));
            }
            Request::Status { reply } => {
                let net = self.network.status().await.ok();
                let _ = reply.send(self.status(net));
            }
            Request::Capabilities { reply } => {
                let _ = reply.send(self.capabilities());
            }
        }
    }

    /// `net`: the network's own view, when it answered (else what the core knows stands in).
    fn status(&self, net: Option<NetworkStatus>) -> StatusView {
        let counts = views::member_counts_by_state(&self.membership);
        StatusView {
            peer_id: self.local.to_string(),
            role: self.config.node.role.to_string(),
            version: env!("CARGO_PKG_VERSION").into(),
            protocol_version: self.config.network.protocol_version.clone(),
            listen_addresses: net
                .as_ref()
                .map(|n| n.listen_addresses.iter().map(|a| a.to_string()).collect())
                .unwrap_or_default(),
            external_addresses: net
                .as_ref()
                .map(|n| n.external_addresses.iter().map(|a| a.to_string()).collect())
                .unwrap_or_default(),
            nat_status: self.nat.as_str().into(),
            connected_peers: net.as_ref().map_or(self.connections.len(), |n| n.connected_peers),
            members: MemberCounts { alive: counts[0].1, suspect: counts[1].1, dead: counts[2].1, left: counts[3].1 },
            routing_table_size: net.as_ref().map_or(self.routing_table_size, |n| n.routing_table_size),
            local_health: self.membership.local_health(),
            uptime_secs: self.started.elapsed().as_secs(),
            ready: self.health.ready.load(Ordering::Relaxed),
            tasks: TaskCounts {
                queued: self.gateway.queued(),
                running: self.gateway.running(),
                executing: self.load(),
            },
        }
    }

    fn capabilities(&self) -> CapabilitiesView {
        let local = LocalCapabilities {
            capabilities: self.config.node.capabilities.clone(),
            capacity: self.executor.as_ref().map_or(0, |e| e.capacity()),
            load: self.load(),
        };
        views::capabilities(&self.membership, self.local, local)
    }
}
