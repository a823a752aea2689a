//! Bounded admission for the whole server: at most `max_in_flight` runs at once, then at most
//! `max_queued` waiting for a place; past both, a request is refused at once (429) rather than
//! held, so neither waiting requests nor their bodies pile up without bound.
//!
//! A request reserves all its runs before any starts (a batch of n reserves n), so a batch is
//! admitted whole or refused whole: it never starts half its items and then fails the rest.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The server-wide bound on runs in flight and waiting.
#[derive(Debug)]
pub(crate) struct Admission {
    slots: Arc<Semaphore>,
    max_in_flight: usize,
    max_queued: usize,
    /// Runs admitted that have no slot yet. Changed under the lock when reserving, so that
    /// two requests never both take the last place.
    waiting: Mutex<usize>,
    /// A copy of `waiting` for the metrics, readable without the lock.
    waiting_now: AtomicUsize,
}

/// Why a reservation was refused: the figures at that moment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Refused {
    pub in_flight: usize,
    pub queued: usize,
}

impl Admission {
    pub fn new(max_in_flight: usize, max_queued: usize) -> Arc<Self> {
        let max_in_flight = max_in_flight.clamp(1, Semaphore::MAX_PERMITS);
        Arc::new(Self {
            slots: Arc::new(Semaphore::new(max_in_flight)),
            max_in_flight,
            max_queued,
            waiting: Mutex::new(0),
            waiting_now: AtomicUsize::new(0),
        })
    }

    /// Reserves places for `n` runs: each either runs at once or waits in the queue. Refused
    /// unless all `n` fit.
    pub fn reserve(self: &Arc<Self>, n: usize) -> Result<Vec<Ticket>, Refused> {
        let mut waiting = match self.waiting.lock() {
            Ok(w) => w,
            Err(poisoned) => poisoned.into_inner(),
        };
        let free = self.slots.available_permits();
        if waiting.saturating_add(n) > free.saturating_add(self.max_queued) {
            return Err(Refused { in_flight: self.in_flight(), queued: *waiting });
        }
        *waiting += n;
        self.waiting_now.store(*waiting, Ordering::Relaxed);
        drop(waiting);
        Ok((0..n).map(|_| Ticket { admission: self.clone(), entered: false }).collect())
    }

    /// Runs holding a slot now.
    pub fn in_flight(&self) -> usize {
        self.max_in_flight.saturating_sub(self.slots.available_permits())
    }

    /// Runs admitted and waiting for a slot now.
    pub fn queued(&self) -> usize {
        self.waiting_now.load(Ordering::Relaxed)
    }

    fn leave_queue(&self) {
        let mut waiting = match self.waiting.lock() {
            Ok(w) => w,
            Err(poisoned) => poisoned.into_inner(),
        };
        *waiting = waiting.saturating_sub(1);
        self.waiting_now.store(*waiting, Ordering::Relaxed);
    }
}

/// One admitted run's place in the queue. Dropped unused (the request was cancelled, or an
/// earlier step failed), it gives its place back.
#[derive(Debug)]
pub(crate) struct Ticket {
    admission: Arc<Admission>,
    entered: bool,
}

impl Ticket {
    /// Waits for a slot; the run holds it while it runs. `None` only if the server is closing
    /// its admission (never, today: the semaphore is never closed).
    pub async fn enter(mut self) -> Option<OwnedSemaphorePermit> {
        let permit = self.admission.slots.clone().acquire_owned().await.ok()?;
        self.entered = true;
        self.admission.leave_queue();
        Some(permit)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.entered {
            self.admission.leave_queue();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_then_queue_then_refusal() {
        let a = Admission::new(1, 1);
        let first = a.reserve(1).unwrap().pop().unwrap().enter().await.unwrap();
        assert_eq!((a.in_flight(), a.queued()), (1, 0));
        let waiting = a.reserve(1).unwrap();
        assert_eq!(a.queued(), 1);
        assert!(a.reserve(1).is_err(), "no slot and the queue is full");
        drop(waiting);
        assert_eq!(a.queued(), 0, "a dropped ticket gives its place back");
        assert!(a.reserve(2).is_err(), "a batch is refused whole");
        drop(first);
        assert_eq!(a.reserve(2).unwrap().len(), 2);
        assert_eq!(a.queued(), 0, "both tickets were dropped");
    }
}
