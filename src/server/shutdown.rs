//! Shutdown, signalled from the signal thread to every runtime.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
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

/// Runtime-local: tells one runtime's connections that its listeners have closed, so idle
/// connections close at once and gRPC connections start their graceful shutdown.
#[derive(Default)]
pub struct Closing {
    closed: Cell<bool>,
    next: Cell<u64>,
    waiting: RefCell<HashMap<u64, Waker>>,
}

impl Closing {
    pub fn close(&self) {
        self.closed.set(true);
        for (_, waker) in self.waiting.take() {
            waker.wake();
        }
    }

    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }

    /// Resolves once `close` has been called.
    pub fn closed(&self) -> Closed<'_> {
        let id = self.next.get();
        self.next.set(id + 1);
        Closed { closing: self, id }
    }
}

pub struct Closed<'a> {
    closing: &'a Closing,
    id: u64,
}

impl Future for Closed<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.closing.is_closed() {
            return Poll::Ready(());
        }
        let mut waiting = self.closing.waiting.borrow_mut();
        waiting.insert(self.id, cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for Closed<'_> {
    fn drop(&mut self) {
        self.closing.waiting.borrow_mut().remove(&self.id);
    }
}
