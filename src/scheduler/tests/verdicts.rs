//! Judging an answer on its own, without a gateway: which answers complete a task, which are
//! retried (network errors included, with their text as the network gives it), which fail it.

use super::*;
use crate::network::DispatchError;
use crate::scheduler::admission::Checked;
use crate::scheduler::attempts::{Verdict, judge};
use crate::scheduler::entry::Entry;
use crate::scheduler::record::AttemptOutcome;
use crate::tasks::TaskKind;

const WORKER: &str = "the-worker";

/// Attempt 1 of task "t", sent to `WORKER`.
fn sent(kind: TaskKind, payload: &str) -> Entry {
    let checked = Checked { kind, timeout: Duration::from_secs(1), max_attempts: 3, replicas: 1, quorum: 1 };
    let mut entry = Entry::new("t".into(), spec(kind.name(), payload), checked);
    entry.record.worker = Some(WORKER.into());
    entry
}

fn reply(outcome: TaskOutcome) -> Result<TaskResponse, DispatchError> {
    Ok(TaskResponse {
        v: WIRE_VERSION,
        task_id: "t".into(),
        attempt: 1,
        worker: WORKER.into(),
        outcome,
        started_ms: None,
        fuel_used: None,
    })
}

#[test]
fn only_a_response_for_the_attempt_as_sent_counts() {
    let entry = sent(TaskKind::Echo, "hi");
    assert_eq!(judge(&entry, "t", 1, reply(ok("hi")), 4), Verdict::Done("hi".into()));
    let mutations: [fn(&mut TaskResponse); 3] =
        [|r| r.task_id = "u".into(), |r| r.attempt = 2, |r| r.worker = "someone-else".into()];
    for mutate in mutations {
        let mut response = reply(ok("hi")).unwrap();
        mutate(&mut response);
        assert_eq!(judge(&entry, "t", 1, Ok(response), 4), Verdict::Mismatched);
    }
}

#[test]
fn network_errors_are_retried_as_lost_with_their_text() {
    let entry = sent(TaskKind::Echo, "hi");
    let errors = [
        DispatchError::Unreachable("dial failed".into()),
        DispatchError::ConnectionLost("connection closed".into()),
        DispatchError::Timeout,
        DispatchError::BadResponse("garbage".into()),
    ];
    for error in errors {
        let text = error.to_string();
        assert_eq!(judge(&entry, "t", 1, Err(error), 4), Verdict::Retry(AttemptOutcome::Lost, text));
    }
}

#[test]
fn worker_errors_are_busy_fatal_or_retried() {
    let entry = sent(TaskKind::Echo, "hi");
    assert_eq!(judge(&entry, "t", 1, reply(err(TaskError::Busy)), 4), Verdict::Busy);
    let fatal = TaskError::BadPayload("no".into());
    assert_eq!(judge(&entry, "t", 1, reply(err(fatal.clone())), 4), Verdict::Fatal(fatal));
    let retried = TaskError::Failed("flaky".into());
    let expected = Verdict::Retry(AttemptOutcome::Error, retried.to_string());
    assert_eq!(judge(&entry, "t", 1, reply(err(retried)), 4), expected);
}

#[test]
fn compute_results_must_verify_at_the_difficulty() {
    let entry = sent(TaskKind::Compute, "block");
    let good = proof("block", 4);
    assert_eq!(judge(&entry, "t", 1, reply(ok(&good)), 4), Verdict::Done(good));
    for bad in ["not a proof".to_string(), proof("other block", 4)] {
        match judge(&entry, "t", 1, reply(ok(&bad)), 4) {
            Verdict::Retry(AttemptOutcome::Error, why) => {
                assert!(why.starts_with("result failed verification"), "{why}")
            }
            other => panic!("{bad:?}: expected a retry, got {other:?}"),
        }
    }
}
