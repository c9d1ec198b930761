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
        loop {
            let group = self.groups.next_group(&tenant_id);
            if group.is_empty() {
                return;
            }
            self.resolve_group(&tenant_id, group).await;
        }
    }

    async fn resolve_group(&self, tenant_id: &TenantId, group: Vec<Waiting>) {
        if group.len() == 1 {
            for one in group {
                let outcome = self
                    .ingest_signals(tenant_id, &one.settings, one.signals)
                    .await;
                let _ = one.answer.send(outcome);
            }
            return;
        }
        self.groups
            .grouped
            .fetch_add(group.len() as u64, Ordering::Relaxed);
        let settings = group[0].settings.clone();
        let all: Vec<SignalRecord> = group
            .iter()
            .flat_map(|w| w.signals.iter().cloned())
            .collect();
        match self.ingest_signals(tenant_id, &settings, all).await {
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
                    let outcome = self
                        .ingest_signals(tenant_id, &one.settings, one.signals)
                        .await;
                    let _ = one.answer.send(outcome);
                }
            }
        }
    }
}
