//! What a completed task earns its workers: the price of its type, paid only for work the
//! gateway can verify (unless `ledger.pay_unverified`), and what a task may cost at most
//! (what `ledger.enforce` checks the gateway's funds against at submission).
//!
//! Verified means the gateway can say how:
//! - `echo`: the output equals the input;
//! - `compute`: its proof of work passed the hash check (a result that fails it is never
//!   completed, see `attempts::judge`);
//! - `wasm`: at least 2 replicas on distinct workers agreed on the output and the fuel; each
//!   agreeing replica's worker is paid by that fuel.
//!
//! Pure: the gateway records the decision in the task's record and hands the payments out as
//! an `Effect::Pay`; the ledger seals them.

use std::sync::Arc;

use libp2p::PeerId;
use serde::{Deserialize, Serialize};

use super::entry::Entry;
use super::quorum::{Vote, VoteKey};
use super::record::TaskState;
use super::replicas::vote_of;
use crate::config::{LedgerSettings, Prices};
use crate::tasks::TaskKind;

/// What the gateway can spend: the ledger's view, behind a trait so that the gateway's
/// tests can fix it.
pub trait Funds: Send + Sync {
    /// Credits this node may still spend, less the payments it owes and has not sealed.
    fn available(&self) -> i128;
}

/// The ledger settings the gateway prices tasks with, and the funds `enforce` checks.
#[derive(Clone)]
pub struct Pricing {
    pub prices: Prices,
    pub pay_unverified: bool,
    pub enforce: bool,
    /// Fuel a `wasm` task may burn when it sets no limit of its own (`wasm.max_fuel`).
    pub max_fuel: u64,
    pub funds: Arc<dyn Funds>,
}

impl Pricing {
    pub fn new(settings: &LedgerSettings, max_fuel: u64, funds: Arc<dyn Funds>) -> Self {
        Self {
            prices: settings.prices.clone(),
            pay_unverified: settings.pay_unverified,
            enforce: settings.enforce,
            max_fuel,
            funds,
        }
    }

    fn flat(&self, kind: TaskKind) -> u64 {
        match kind {
            TaskKind::Echo => self.prices.echo,
            TaskKind::Compute => self.prices.compute,
            TaskKind::Storage => self.prices.storage,
            TaskKind::Sleep => self.prices.sleep,
            TaskKind::Fail | TaskKind::Wasm => 0,
        }
    }

    /// The most fuel a `wasm` task may burn: its own limit under `wasm.max_fuel`.
    fn fuel_limit(&self, payload: &str) -> u64 {
        crate::wasm::WasmCall::decode(payload)
            .ok()
            .and_then(|c| c.limits.fuel)
            .map_or(self.max_fuel, |f| f.min(self.max_fuel))
    }

    /// A `wasm` run's price by the fuel it burned: credits per million, at least 1.
    pub fn wasm_price(&self, fuel: u64) -> u64 {
        let credits = u128::from(fuel) * u128::from(self.prices.wasm_per_million_fuel) / 1_000_000;
        u64::try_from(credits).unwrap_or(u64::MAX).max(1)
    }

    /// The most a task may cost: what `enforce` requires the gateway to hold. `None`: it
    /// earns nothing whatever happens (an unverifiable type while `pay_unverified` is off).
    pub fn max_price(&self, kind: TaskKind, payload: &str, replicas: u32) -> Option<u64> {
        match kind {
            TaskKind::Wasm => {
                if replicas < 2 && !self.pay_unverified {
                    return None;
                }
                Some(self.wasm_price(self.fuel_limit(payload)).saturating_mul(u64::from(replicas)))
            }
            TaskKind::Echo | TaskKind::Compute => Some(self.flat(kind)),
            TaskKind::Fail => None,
            _ if self.pay_unverified => Some(self.flat(kind)),
            _ => None,
        }
    }
}

/// One payment a task made, as its record shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Paid {
    pub worker: String,
    pub credits: u64,
}

/// What a completed task paid, to whom, and why: the task record's `payment`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TaskPayment {
    /// How the result was verified; `None` for a result the gateway cannot verify.
    pub verified_by: Option<String>,
    pub paid: Vec<Paid>,
    /// Why it paid what it did (or nothing).
    pub reason: String,
}

/// What the completed `task` pays, or `None` when it is not this decision's to make (not
/// completed, a replica: its task pays for it).
pub(super) fn decide(task: &Entry, pricing: &Pricing, local: &PeerId) -> Option<(TaskPayment, Vec<(PeerId, u64)>)> {
    let record = &task.record;
    if record.state != TaskState::Completed || record.replica_of.is_some() {
        return None;
    }
    let single = |verified_by: Option<&str>, price: u64| {
        let worker = record.worker.clone().unwrap_or_default();
        pay(verified_by.map(str::to_string), vec![(worker, price)], pricing.pay_unverified, local)
    };
    Some(match task.kind {
        TaskKind::Echo => {
            let same = record.result.as_deref() == Some(record.payload.as_str());
            single(same.then_some("echo: the output equals the input"), pricing.prices.echo)
        }
        TaskKind::Compute => single(Some("compute: the proof of work passed the hash check"), pricing.prices.compute),
        TaskKind::Wasm if record.replicas.is_some_and(|n| n >= 2) && record.quorum.is_some_and(|q| q >= 2) => {
            let Some(key @ VoteKey::Output { fuel, .. }) = &task.agreed else {
                return None;
            };
            // Fuel is the workers' word: never priced above the task's limit (what the
            // reservation held back).
            let price = pricing.wasm_price(fuel.unwrap_or(0).min(pricing.fuel_limit(&record.payload)));
            let agreeing: Vec<(String, u64)> = record
                .replica_results
                .iter()
                .filter(|r| matches!(vote_of(r), Vote::Cast(k) if k == *key))
                .filter_map(|r| r.worker.clone().map(|w| (w, price)))
                .collect();
            let how = format!("wasm: {} replicas agreed on the output and the fuel", agreeing.len());
            pay(Some(how), agreeing, pricing.pay_unverified, local)
        }
        TaskKind::Wasm => {
            let fuel = record.fuel_used.unwrap_or(0).min(pricing.fuel_limit(&record.payload));
            single(None, pricing.wasm_price(fuel))
        }
        kind => single(None, pricing.flat(kind)),
    })
}

/// The payment for the given (worker, price) pairs: verified, or unverified and paid only if
/// allowed. Work this node did for itself moves no credits.
fn pay(
    verified_by: Option<String>,
    workers: Vec<(String, u64)>,
    pay_unverified: bool,
    local: &PeerId,
) -> (TaskPayment, Vec<(PeerId, u64)>) {
    if verified_by.is_none() && !pay_unverified {
        let reason = "the result cannot be verified: not paid (ledger.pay_unverified is off)".to_string();
        return (TaskPayment { verified_by, paid: Vec::new(), reason }, Vec::new());
    }
    let mut paid = Vec::new();
    let mut effects = Vec::new();
    let mut own = false;
    for (worker, credits) in workers {
        let Ok(peer) = worker.parse::<PeerId>() else { continue };
        if peer == *local {
            own = true;
            continue;
        }
        if credits > 0 {
            effects.push((peer, credits));
            paid.push(Paid { worker, credits });
        }
    }
    let mut reason = match &verified_by {
        Some(_) => "verified".to_string(),
        None => "unverified, paid (ledger.pay_unverified is on)".to_string(),
    };
    if own {
        reason.push_str("; work this node did itself is not paid");
    }
    (TaskPayment { verified_by, paid, reason }, effects)
}
