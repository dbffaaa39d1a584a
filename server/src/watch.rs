//! Blocking-query support: one `tokio::sync::watch` channel per catalog table holding the
//! table's max index, published by the state machine after each applied batch.
//!
//! Invariants: a waiter costs one subscription per watched table and nothing else (no task, no
//! timer beyond its own deadline); `watch::Receiver::wait_for` checks the current value first,
//! so a change published between the caller's read and its wait is never lost.

use futures::future::{FutureExt, select_all};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::catalog::model::Index;
use crate::catalog::{Table, TableIndexes};

/// The per-table index channels.
pub(crate) struct TableWatches {
    nodes: watch::Sender<Index>,
    services: watch::Sender<Index>,
    checks: watch::Sender<Index>,
}

impl TableWatches {
    pub(crate) fn new(initial: TableIndexes) -> Self {
        TableWatches {
            nodes: watch::Sender::new(initial.nodes),
            services: watch::Sender::new(initial.services),
            checks: watch::Sender::new(initial.checks),
        }
    }

    fn sender(&self, table: Table) -> &watch::Sender<Index> {
        match table {
            Table::Nodes => &self.nodes,
            Table::Services => &self.services,
            Table::Checks => &self.checks,
        }
    }

    /// Publishes new table indexes, waking only the watchers of tables that moved.
    pub(crate) fn publish(&self, indexes: TableIndexes) {
        for table in Table::ALL {
            let new = indexes.get(table);
            self.sender(table).send_if_modified(|v| {
                let changed = *v != new;
                *v = new;
                changed
            });
        }
    }

    /// A receiver of the nodes table index, for tests.
    #[cfg(test)]
    pub(crate) fn nodes_receiver_for_test(&self) -> watch::Receiver<Index> {
        self.nodes.subscribe()
    }

    /// The current max index over `tables`.
    pub(crate) fn current(&self, tables: &[Table]) -> Index {
        tables
            .iter()
            .map(|t| *self.sender(*t).borrow())
            .max()
            .unwrap_or(0)
    }

    /// Waits until any of `tables` has an index above `after`, `deadline` passes or `cancel`
    /// fires; returns the max index of `tables` then.
    pub(crate) async fn wait_for_change(
        &self,
        tables: &[Table],
        after: Index,
        deadline: Instant,
        cancel: &CancellationToken,
    ) -> Index {
        let mut receivers: Vec<_> = tables.iter().map(|t| self.sender(*t).subscribe()).collect();
        if receivers.is_empty() {
            return 0;
        }
        let waits = receivers
            .iter_mut()
            .map(|rx| async move { rx.wait_for(|i| *i > after).await.map(|_| ()) }.boxed());
        tokio::select! {
            _ = select_all(waits) => {}
            _ = tokio::time::sleep_until(deadline) => {}
            _ = cancel.cancelled() => {}
        }
        self.current(tables)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    fn ix(nodes: Index, services: Index, checks: Index) -> TableIndexes {
        TableIndexes {
            nodes,
            services,
            checks,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn wakes_on_a_watched_table_only() {
        let w = Arc::new(TableWatches::new(ix(5, 5, 5)));
        let cancel = CancellationToken::new();
        let waiter = {
            let (w, cancel) = (w.clone(), cancel.clone());
            tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(300);
                let idx = w
                    .wait_for_change(&[Table::Services], 5, deadline, &cancel)
                    .await;
                (idx, Instant::now())
            })
        };
        let start = Instant::now();
        tokio::time::sleep(Duration::from_secs(1)).await;
        // A checks-only change does not wake a services watcher.
        w.publish(ix(5, 5, 6));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!waiter.is_finished());
        w.publish(ix(5, 7, 6));
        let (idx, at) = waiter.await.unwrap();
        assert_eq!(idx, 7);
        assert!(at - start < Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn returns_at_once_when_already_past_and_times_out_otherwise() {
        let w = TableWatches::new(ix(9, 3, 3));
        let cancel = CancellationToken::new();
        let start = Instant::now();
        let far = start + Duration::from_secs(600);
        assert_eq!(
            w.wait_for_change(&[Table::Nodes, Table::Checks], 4, far, &cancel)
                .await,
            9
        );
        assert_eq!(Instant::now(), start);
        let deadline = start + Duration::from_secs(60);
        assert_eq!(
            w.wait_for_change(&[Table::Checks], 3, deadline, &cancel)
                .await,
            3
        );
        assert!(Instant::now() >= deadline);
    }

    #[tokio::test(start_paused = true)]
    async fn cancel_wakes_waiters() {
        let w = Arc::new(TableWatches::new(ix(1, 1, 1)));
        let cancel = CancellationToken::new();
        let waiter = {
            let (w, cancel) = (w.clone(), cancel.clone());
            tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(600);
                w.wait_for_change(&Table::ALL, 1, deadline, &cancel).await
            })
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        cancel.cancel();
        assert_eq!(waiter.await.unwrap(), 1);
    }
}
