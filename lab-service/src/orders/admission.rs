//! Admission control for new orders: shed (503) once the payment queue
//! would hold more than `maxQueueDepth` jobs.
//!
//! The database's depth is sampled every 100 ms (asking it on every request
//! would load an overloaded database more). Between samples, an API process
//! counts what it admitted itself: orders being inserted (`in_flight`) and
//! orders inserted since the last sample (`since_sample`). A request is
//! admitted only if `sampled + since_sample + in_flight` stays within the
//! bound, so one process never overshoots it, however fast orders arrive.
//! Before, the sampled depth alone was read while admitted requests queued
//! for connections: 12,010 jobs with a bound of 10,000 under 2,000 orders/s.
//! The margin left: with several API replicas, each sees the others'
//! admissions only at the next sample, so the queue may exceed the bound by
//! what the other replicas admit in one sampling interval.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// The depth the API believes in, and what it admitted since it last looked.
#[derive(Debug, Default)]
pub struct Admission {
    sampled: AtomicI64,
    since_sample: AtomicI64,
    in_flight: AtomicI64,
}

/// An admitted request: call [`Permit::inserted`] once its job is in the
/// queue; dropped either way, it stops counting as in flight.
#[derive(Debug)]
pub struct Permit {
    admission: Arc<Admission>,
}

impl Permit {
    /// The order and its job were inserted: they count until the next sample.
    pub fn inserted(self) {
        self.admission.since_sample.fetch_add(1, Ordering::SeqCst);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.admission.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Admission {
    /// The depth as admission sees it: sampled, plus admitted since.
    pub fn depth(&self) -> i64 {
        self.sampled.load(Ordering::SeqCst)
            + self.since_sample.load(Ordering::SeqCst)
            + self.in_flight.load(Ordering::SeqCst)
    }

    /// The last sampled depth (for the gauge).
    pub fn sampled(&self) -> i64 {
        self.sampled.load(Ordering::SeqCst)
    }

    /// Admit one more job if the queue stays within `max`; else the depth seen.
    pub fn try_admit(self: &Arc<Self>, max: i64) -> Result<Permit, i64> {
        let before = self.in_flight.fetch_add(1, Ordering::SeqCst);
        let depth = self.sampled.load(Ordering::SeqCst) + self.since_sample.load(Ordering::SeqCst) + before;
        let permit = Permit {
            admission: self.clone(),
        };
        if depth >= max {
            drop(permit);
            return Err(depth);
        }
        Ok(permit)
    }

    /// Mark the start of a sample: what was inserted until now is in it.
    pub fn sample_started(&self) -> i64 {
        self.since_sample.load(Ordering::SeqCst)
    }

    /// A sample (started when [`Admission::sample_started`] returned
    /// `counted`) read `depth` from the database. Inserts that committed
    /// during the query are counted twice until the next sample: the error
    /// is on the side of shedding.
    pub fn sampled_depth(&self, depth: i64, counted: i64) {
        self.sampled.store(depth, Ordering::SeqCst);
        self.since_sample.fetch_sub(counted, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admissions_between_samples_count_against_the_bound() {
        let a = Arc::new(Admission::default());
        a.sampled_depth(8, 0);
        let p1 = a.try_admit(10).expect("9th");
        let p2 = a.try_admit(10).expect("10th");
        // two in flight, sampled 8: the bound is reached without a new sample
        assert_eq!(a.try_admit(10).unwrap_err(), 10);
        p1.inserted();
        drop(p2); // a replay or a failed insert adds no job
        assert_eq!(a.depth(), 9);
        let p3 = a.try_admit(10).expect("room for one");
        assert!(a.try_admit(10).is_err());
        p3.inserted();
        // the next sample sees both inserts in the database
        let counted = a.sample_started();
        a.sampled_depth(10, counted);
        assert_eq!(a.depth(), 10);
        assert!(a.try_admit(10).is_err());
        // workers drained the queue
        let counted = a.sample_started();
        a.sampled_depth(0, counted);
        assert!(a.try_admit(10).is_ok());
    }

    #[test]
    fn many_threads_never_admit_past_the_bound() {
        let a = Arc::new(Admission::default());
        let admitted = std::sync::atomic::AtomicI64::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..1_000 {
                        if let Ok(p) = a.try_admit(500) {
                            admitted.fetch_add(1, Ordering::SeqCst);
                            p.inserted();
                        }
                    }
                });
            }
        });
        assert_eq!(admitted.load(Ordering::SeqCst), 500);
    }
}
