//! Group commit for ingestion. A tenant's batches resolve one at a time under its advisory
//! lock, and a batch of 100 holds the lock ~11 ms, most of it round trips and fixed costs (the
//! lock, the log position, the subscribers, a dozen statements, the commit) rather than rows.
//! So the batches of one tenant that arrive while one is resolving wait in a queue of this
//! process, and the next transaction takes all of them (up to [`GROUP_SIGNALS`] signals, with
//! the same identity settings), resolves them one after another, as consecutive transactions
//! would, and answers each with its own outcomes. If a group's transaction fails, its batches
//! run again one by one, so a batch the database refuses fails alone.
//!
//! Other processes sharing the database queue on their own; the advisory lock still orders the
//! transactions of all of them.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use idgraph_core::identity::IdentitySettings;
use idgraph_core::tenancy::TenantId;
use idgraph_store::{IngestOutcome, SignalRecord, StoreError, StoreResult};
use tokio::sync::oneshot;

use crate::PostgresStore;

/// At most this many signals in one group transaction: 20 batches of 100. A batch this large
/// or larger (an import's chunk) runs alone.
pub(crate) const GROUP_SIGNALS: usize = 2_000;

/// The queues of batches waiting for their tenant's transaction.
#[derive(Default)]
pub(crate) struct Groups {
    queues: Mutex<HashMap<TenantId, Queue>>,
    /// Batches that shared their transaction with others, since the store was opened.
    grouped: AtomicU64,
}

#[derive(Default)]
struct Queue {
    waiting: VecDeque<Waiting>,
    /// A task is taking groups off this queue; it stops when the queue is empty.
    draining: bool,
}

struct Waiting {
    settings: IdentitySettings,
    signals: Vec<SignalRecord>,
    answer: oneshot::Sender<StoreResult<Vec<IngestOutcome>>>,
}

impl Groups {
    /// Queues a batch; true when no task drains the tenant's queue yet, so the caller must
    /// start one.
    fn push(&self, tenant: &TenantId, waiting: Waiting) -> bool {
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        let queue = queues.entry(tenant.clone()).or_default();
        queue.waiting.push_back(waiting);
        !std::mem::replace(&mut queue.draining, true)
    }

    /// The next group: the oldest batch and the others waiting with the same settings, within
    /// [`GROUP_SIGNALS`]. Batches waiting together were sent concurrently, so taking them out
    /// of arrival order is an order their senders could have seen anyway. Empty (and the
    /// queue released) when nothing waits.
    fn next_group(&self, tenant: &TenantId) -> Vec<Waiting> {
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        let Some(queue) = queues.get_mut(tenant) else {
            return Vec::new();
        };
        let Some(first) = queue.waiting.pop_front() else {
            queues.remove(tenant);
            return Vec::new();
        };
        let mut signals = first.signals.len();
        let mut group = vec![first];
        let mut others = VecDeque::new();
        while let Some(next) = queue.waiting.pop_front() {
            if next.settings == group[0].settings && signals + next.signals.len() <= GROUP_SIGNALS {
                signals += next.signals.len();
                group.push(next);
            } else {
                others.push_back(next);
            }
        }
        queue.waiting = others;
        group
    }
}

/// A drain in progress. A drain that ends without emptying its queue (a panic, or the runtime
/// dropping the task at shutdown) takes the queue with it: the batches waiting there are
/// answered with an error rather than left waiting for a drain that no longer runs, and the
/// next batch starts a new one. Only the drain that owns a queue removes it: no other drain of
/// the tenant runs until this one has emptied and released its queue.
struct Draining<'a> {
    groups: &'a Groups,
    tenant: &'a TenantId,
    emptied: bool,
}

impl Drop for Draining<'_> {
    fn drop(&mut self) {
        if !self.emptied {
            let mut queues = self.groups.queues.lock().unwrap_or_else(|p| p.into_inner());
            queues.remove(self.tenant);
        }
    }
}

impl PostgresStore {
    /// How many batches shared a transaction with others since the store was opened.
    pub fn grouped_batches(&self) -> u64 {
        self.groups.grouped.load(Ordering::Relaxed)
    }

    pub(crate) async fn ingest_grouped(
        &self,
        tenant_id: &TenantId,
        settings: &IdentitySettings,
        signals: Vec<SignalRecord>,
    ) -> StoreResult<Vec<IngestOutcome>> {
        if signals.len() >= GROUP_SIGNALS {
            return self.ingest_signals(tenant_id, settings, signals).await;
        }
        let (answer, answered) = oneshot::channel();
        let waiting = Waiting {
            settings: settings.clone(),
            signals,
            answer,
        };
        if self.groups.push(tenant_id, waiting) {
            // A task of its own, not this caller's future: the caller answers its client when
            // its own group is done, and a dropped request must not stop the batches queued
            // behind it.
            tokio::spawn(self.clone().drain(tenant_id.clone()));
        }
        answered.await.map_err(|_| {
            StoreError::Other("ingestion stopped before the batch was resolved".into())
        })?
    }

    async fn drain(self, tenant_id: TenantId) {
        let mut draining = Draining {
            groups: &self.groups,
            tenant: &tenant_id,
            emptied: false,
        };
        loop {
            let group = self.groups.next_group(&tenant_id);
            if group.is_empty() {
                draining.emptied = true;
                return;
            }
            self.resolve_group(&tenant_id, group).await;
        }
    }

    async fn resolve_group(&self, tenant_id: &TenantId, mut group: Vec<Waiting>) {
        if group.len() == 1 {
            if let Some(one) = group.pop() {
                self.resolve_alone(tenant_id, one).await;
            }
            return;
        }
        self.groups
            .grouped
            .fetch_add(group.len() as u64, Ordering::Relaxed);
        let all: Vec<SignalRecord> = group
            .iter()
            .flat_map(|w| w.signals.iter().cloned())
            .collect();
        match self
            .ingest_signals(tenant_id, &group[0].settings, all)
            .await
        {
            Ok(outcomes) => {
                let mut outcomes = outcomes.into_iter();
                for one in group {
                    let own: Vec<IngestOutcome> =
                        outcomes.by_ref().take(one.signals.len()).collect();
                    let _ = one.answer.send(Ok(own));
                }
            }
            Err(error) => {
                tracing::warn!(tenant = %tenant_id, batches = group.len(), %error,
                               "a group of batches failed; resolving them one by one");
                for one in group {
                    self.resolve_alone(tenant_id, one).await;
                }
            }
        }
    }

    /// One batch in a transaction of its own, its caller answered with what came of it.
    async fn resolve_alone(&self, tenant_id: &TenantId, one: Waiting) {
        let outcome = self
            .ingest_signals(tenant_id, &one.settings, one.signals)
            .await;
        let _ = one.answer.send(outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(
        settings: &IdentitySettings,
        signals: usize,
    ) -> (Waiting, oneshot::Receiver<StoreResult<Vec<IngestOutcome>>>) {
        let (answer, answered) = oneshot::channel();
        let record = SignalRecord {
            event: idgraph_store::EventRow {
                event_id: "e".into(),
                workspace: idgraph_core::tenancy::WorkspaceName::parse("default").expect("valid"),
                kind: "track".into(),
                name: None,
                occurred_at: jiff::Timestamp::UNIX_EPOCH,
                ingested_at: jiff::Timestamp::UNIX_EPOCH,
                schema_version: 1,
                message_id: "m".into(),
                properties: "{}".into(),
                context: "{}".into(),
            },
            identifiers: Vec::new(),
            traits: Vec::new(),
            source: "test".into(),
        };
        let waiting = Waiting {
            settings: settings.clone(),
            signals: vec![record; signals],
            answer,
        };
        (waiting, answered)
    }

    fn tenant() -> TenantId {
        TenantId::parse("default").expect("valid")
    }

    #[test]
    fn a_group_takes_the_waiting_batches_with_the_first_ones_settings_within_the_cap() {
        let groups = Groups::default();
        let (usual, mut shared) = (IdentitySettings::default(), IdentitySettings::default());
        shared
            .shared_values
            .entry("phone".into())
            .or_default()
            .insert("+14155550100".into());
        let sizes = [
            (&usual, 100),
            (&shared, 100),
            (&usual, 1_850),
            (&usual, 100),
            (&usual, 50),
        ];
        let mut answers = Vec::new();
        for (n, (settings, signals)) in sizes.into_iter().enumerate() {
            let (one, answered) = waiting(settings, signals);
            assert_eq!(groups.push(&tenant(), one), n == 0, "batch {n}");
            answers.push(answered);
        }
        let sizes_of =
            |group: Vec<Waiting>| group.iter().map(|w| w.signals.len()).collect::<Vec<_>>();
        // 100 + 1,850 fit; the next 100 would pass 2,000, the 50 after it does not.
        assert_eq!(sizes_of(groups.next_group(&tenant())), vec![100, 1_850, 50]);
        assert_eq!(sizes_of(groups.next_group(&tenant())), vec![100]);
        assert_eq!(sizes_of(groups.next_group(&tenant())), vec![100]);
        assert!(groups.next_group(&tenant()).is_empty());
        // The queue was released: the next batch starts a drain.
        let (one, _answered) = waiting(&usual, 1);
        assert!(groups.push(&tenant(), one));
    }

    #[tokio::test]
    async fn a_drain_that_stops_early_fails_its_waiting_batches_and_frees_the_queue() {
        let groups = Groups::default();
        let settings = IdentitySettings::default();
        let (first, first_answer) = waiting(&settings, 1);
        let (second, second_answer) = waiting(&settings, 1);
        assert!(groups.push(&tenant(), first));
        assert!(!groups.push(&tenant(), second));
        drop(Draining {
            groups: &groups,
            tenant: &tenant(),
            emptied: false,
        });
        for answered in [first_answer, second_answer] {
            let answer = tokio::time::timeout(std::time::Duration::from_secs(5), answered).await;
            assert!(
                matches!(answer, Ok(Err(_))),
                "a waiting batch was left waiting"
            );
        }
        let (third, _third_answer) = waiting(&settings, 1);
        assert!(groups.push(&tenant(), third), "no new drain would start");
    }
}
