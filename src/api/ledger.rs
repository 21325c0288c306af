//! The credit ledger's endpoints: `GET /v1/ledger` (every account and the digest of all
//! heads: equal digests mean equal ledgers), `/v1/ledger/accounts/{peer}` and
//! `/v1/ledger/blocks/{peer}/{seq}`. Answered from the ledger directly, not the core.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use libp2p::PeerId;
use serde::Serialize;

use super::ApiError;
use crate::ledger::{AccountRow, Block, LedgerHandle};
use crate::node::NodeHandle;

#[derive(Serialize)]
pub struct AccountView {
    pub peer: String,
    pub balance: i128,
    /// What the account may spend now (payments to it count once its own chain
    /// acknowledged them).
    pub spendable: i128,
    /// Its chain's head (0: no block yet).
    pub seq: u64,
    pub frozen: bool,
    /// The seq it equivocated at, when frozen: its blocks from there on are void.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frozen_from: Option<u64>,
}

impl From<AccountRow> for AccountView {
    fn from(r: AccountRow) -> Self {
        Self {
            peer: r.peer.to_string(),
            balance: r.balance,
            spendable: r.spendable,
            seq: r.seq,
            frozen: r.frozen_from.is_some(),
            frozen_from: r.frozen_from,
        }
    }
}

#[derive(Serialize)]
pub struct LedgerView {
    /// This node's account.
    pub peer: String,
    pub initial_credits: u64,
    pub accounts: Vec<AccountView>,
    /// SHA-256 (hex) over every account's head.
    pub digest: String,
    /// Payments this node owes that are not sealed in a block yet, and their credits.
    pub payments_waiting: usize,
    pub credits_owed: i128,
}

#[derive(Serialize)]
pub struct BlockView {
    pub account: String,
    pub seq: u64,
    pub hash: String,
    pub prev: String,
    pub deps: Vec<DepView>,
    pub entries: Vec<EntryView>,
    pub signature: String,
    pub bytes: usize,
}

#[derive(Serialize)]
pub struct DepView {
    pub account: String,
    pub seq: u64,
}

#[derive(Serialize)]
pub struct EntryView {
    pub to: String,
    pub amount: u64,
    /// Tasks the payment covers, and the SHA-256 of their ids (the gateway's records name them).
    pub tasks: u32,
    pub tasks_digest: String,
}

impl From<&Block> for BlockView {
    fn from(b: &Block) -> Self {
        Self {
            account: b.account.to_string(),
            seq: b.seq,
            hash: hex::encode(b.hash()),
            prev: hex::encode(b.prev),
            deps: b.deps.iter().map(|d| DepView { account: d.account.to_string(), seq: d.seq }).collect(),
            entries: b
                .entries
                .iter()
                .map(|e| EntryView {
                    to: e.to.to_string(),
                    amount: e.amount,
                    tasks: e.tasks,
                    tasks_digest: hex::encode(e.tasks_digest),
                })
                .collect(),
            signature: hex::encode(&b.signature),
            bytes: b.encoded_len(),
        }
    }
}

fn ledger_of(h: &NodeHandle) -> Result<&LedgerHandle, ApiError> {
    h.ledger().ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "ledger_disabled", "this node keeps no ledger (ledger.enabled is false)")
    })
}

fn peer_of(raw: &str) -> Result<PeerId, ApiError> {
    raw.parse().map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", format!("peer id {raw:?}: {e}")))
}

pub(super) async fn summary(State(h): State<NodeHandle>) -> Result<axum::Json<LedgerView>, ApiError> {
    let ledger = ledger_of(&h)?;
    let (payments_waiting, credits_owed) = ledger.owed();
    Ok(axum::Json(LedgerView {
        peer: ledger.local().to_string(),
        initial_credits: ledger.initial_credits(),
        accounts: ledger.accounts().into_iter().map(AccountView::from).collect(),
        digest: hex::encode(ledger.digest()),
        payments_waiting,
        credits_owed,
    }))
}

/// One account; an account the ledger has never seen has its initial credits.
pub(super) async fn account(
    State(h): State<NodeHandle>,
    Path(peer): Path<String>,
) -> Result<axum::Json<AccountView>, ApiError> {
    let ledger = ledger_of(&h)?;
    Ok(axum::Json(ledger.row(&peer_of(&peer)?).into()))
}

pub(super) async fn block(
    State(h): State<NodeHandle>,
    Path((peer, seq)): Path<(String, String)>,
) -> Result<axum::Json<BlockView>, ApiError> {
    let ledger = ledger_of(&h)?;
    let peer = peer_of(&peer)?;
    let seq: u64 =
        seq.parse().map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", format!("seq {seq:?}: {e}")))?;
    match ledger.block(&peer, seq) {
        Some(b) => Ok(axum::Json(BlockView::from(&b))),
        None => {
            Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no block {seq} of {peer} on this node")))
        }
    }
}
