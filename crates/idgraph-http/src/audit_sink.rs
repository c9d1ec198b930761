//! The audit log's writer: entries are queued by the request that made them and written in
//! batches by one background task, so a management call does not wait for a commit of its own
//! audit entry. Reading the log flushes the queue first, and so does shutdown.

use idgraph_store::{AuditEntry, Store};
use tokio::sync::{mpsc, oneshot};

/// Entries waiting beyond this make callers wait for room: the log falls behind, never drops.
const QUEUE: usize = 10_000;
/// Most entries written in one transaction.
const BATCH: usize = 512;
/// How long the writer gathers entries after the first before it writes them. Without it a
/// steady stream of cheap calls costs one write transaction each (measured: a quarter of a
/// lookup's throughput on SQLite, `benches/platform.rs`); with it, one per interval.
const LINGER: std::time::Duration = std::time::Duration::from_millis(25);

enum Message {
    Entry(Box<AuditEntry>),
    Flush(oneshot::Sender<()>),
}

/// A handle to the writer task. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AuditSink {
    sender: mpsc::Sender<Message>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Message::Entry(_) => "Entry",
            Message::Flush(_) => "Flush",
        })
    }
}

impl AuditSink {
    /// Starts the writer task on the current runtime.
    pub fn start<S: Store>(store: S) -> Self {
        let (sender, receiver) = mpsc::channel(QUEUE);
        tokio::spawn(write_loop(store, receiver));
        Self { sender }
    }

    pub(crate) async fn record(&self, entry: AuditEntry) {
        if self
            .sender
            .send(Message::Entry(Box::new(entry)))
            .await
            .is_err()
        {
            tracing::error!("the audit writer has stopped; an entry was not recorded");
            metrics::counter!("idgraph_audit_failures_total").increment(1);
        }
    }

    /// Returns once every entry queued before the call is written (or failed and was logged).
    pub async fn flush(&self) {
        let (done, written) = oneshot::channel();
        if self.sender.send(Message::Flush(done)).await.is_ok() {
            let _ = written.await;
        }
    }
}

async fn write_loop<S: Store>(store: S, mut receiver: mpsc::Receiver<Message>) {
    let mut batch: Vec<AuditEntry> = Vec::with_capacity(BATCH);
    let mut waiting: Vec<oneshot::Sender<()>> = Vec::new();
    while let Some(first) = receiver.recv().await {
        let deadline = tokio::time::Instant::now() + LINGER;
        let mut next = Some(first);
        // Gather for a moment, up to a batch; a flush (a reader or shutdown waiting) or a
        // closed queue ends the wait at once.
        while let Some(message) = next.take() {
            match message {
                Message::Entry(entry) => batch.push(*entry),
                Message::Flush(done) => waiting.push(done),
            }
            if batch.len() >= BATCH {
                break;
            }
            next = match receiver.try_recv() {
                Ok(message) => Some(message),
                Err(_) if !waiting.is_empty() => None,
                Err(_) => tokio::time::timeout_at(deadline, receiver.recv())
                    .await
                    .ok()
                    .flatten(),
            };
        }
        if !batch.is_empty() {
            let entries = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
            let count = entries.len();
            if let Err(error) = store.append_audit(entries).await {
                // The calls have happened; losing their record is an operator's problem to see,
                // not a reason to fail anyone's request.
                metrics::counter!("idgraph_audit_failures_total").increment(count as u64);
                tracing::error!(%error, count, "could not append audit entries");
            }
        }
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
    }
}
