//! Shutdown, signalled from the signal thread to every runtime.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};

/// Fired once; each runtime's accept loop waits on it through its own waker slot.
pub struct ShutdownSignal {
    fired: AtomicBool,
    wakers: Mutex<Vec<Option<Waker>>>,
}

impl ShutdownSignal {
    pub fn new(runtimes: usize) -> ShutdownSignal {
        ShutdownSignal {
            fired: AtomicBool::new(false),
            wakers: Mutex::new(vec![None; runtimes]),
        }
    }

    pub fn is_fired(&self) -> bool {
        self.fired.load(Ordering::Acquire)
    }

    pub fn fire(&self) {
        self.fired.store(true, Ordering::Release);
        let wakers = std::mem::take(&mut *self.wakers.lock().unwrap_or_else(|e| e.into_inner()));
        for waker in wakers.into_iter().flatten() {
            waker.wake();
        }
    }

    /// How many waiters it has room for.
    pub fn slots(&self) -> usize {
        self.wakers.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Resolves once `fire` has been called; `slot` is the waiting runtime's index.
    pub fn fired(&self, slot: usize) -> Fired<'_> {
        Fired { signal: self, slot }
    }
}

pub struct Fired<'a> {
    signal: &'a ShutdownSignal,
    slot: usize,
}

impl Future for Fired<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.signal.is_fired() {
            return Poll::Ready(());
        }
        {
            let mut wakers = self.signal.wakers.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(slot) = wakers.get_mut(self.slot) {
                *slot = Some(cx.waker().clone());
            }
        }
        // Fired between the check and the registration: the waker list was already taken.
        if self.signal.is_fired() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}
