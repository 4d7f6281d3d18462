//! Bulkhead: a bound on concurrent calls to one dependency, with a bounded
//! wait for a slot. A full bulkhead is a fast, explicit rejection instead of a
//! pile-up of callers that all time out together.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

#[derive(Clone)]
pub struct Bulkhead {
    slots: Arc<Semaphore>,
    max_concurrent: usize,
    max_wait: Duration,
}

/// The bulkhead stayed full for the whole `max_wait`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkheadFull;

impl Bulkhead {
    pub fn new(max_concurrent: usize, max_wait: Duration) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max_concurrent)),
            max_concurrent,
            max_wait,
        }
    }

    pub fn max_concurrent(&self) -> usize {
        self.max_concurrent
    }

    pub fn in_use(&self) -> usize {
        self.max_concurrent - self.slots.available_permits()
    }

    /// Wait up to `max_wait` for a slot; the slot is freed when the permit drops.
    pub async fn enter(&self) -> Result<OwnedSemaphorePermit, BulkheadFull> {
        match tokio::time::timeout(self.max_wait, self.slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(BulkheadFull),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn rejects_past_the_bound_after_the_wait_and_frees_on_drop() {
        let b = Bulkhead::new(2, Duration::from_millis(20));
        let a = b.enter().await.unwrap();
        let _c = b.enter().await.unwrap();
        assert_eq!(b.in_use(), 2);
        assert_eq!(b.enter().await.err(), Some(BulkheadFull));
        drop(a);
        assert!(b.enter().await.is_ok());
    }
}
