//! Admission on its own, without a gateway: each refusal carries the reason it is counted
//! under, and an accepted spec gets the configured defaults.

use super::*;
use crate::scheduler::admission::{Refused, check};
use crate::scheduler::reasons::Rejection;
use crate::tasks::TaskKind;

fn reason(spec: TaskSpec, workers: &[WorkerView]) -> Rejection {
    match check(&spec, workers, &config()) {
        Err(Refused(reason, _)) => reason,
        Ok(_) => panic!("{spec:?} was accepted"),
    }
}

#[test]
fn each_refusal_carries_its_reason() {
    let workers = [worker(1, &["storage"])];
    assert_eq!(reason(spec("mine-bitcoin", "x"), &workers), Rejection::UnknownType);
    assert_eq!(reason(spec("sleep", "soon"), &workers), Rejection::BadPayload);
    assert_eq!(reason(TaskSpec { timeout_ms: Some(0), ..echo() }, &workers), Rejection::BadTimeout);
    assert_eq!(reason(TaskSpec { max_attempts: Some(0), ..echo() }, &workers), Rejection::BadMaxAttempts);
    assert_eq!(reason(spec("compute", "block"), &workers), Rejection::NoCapableWorker);
}

#[test]
fn accepted_specs_get_the_configured_defaults() {
    let checked = check(&spec("storage", "get k"), &[worker(1, &["storage"])], &config()).unwrap();
    assert_eq!(checked.kind, TaskKind::Storage);
    assert_eq!(checked.timeout, Duration::from_millis(10_000));
    assert_eq!(checked.max_attempts, 3);
}
