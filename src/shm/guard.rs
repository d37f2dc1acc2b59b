//! The truncation guard. A client may shrink a shared-memory object after registering it;
//! touching the mapped pages past its new end then raises SIGBUS, which ends a process (Triton
//! 2.51 dies of it). Every mapping is listed in a fixed table here. A SIGBUS whose address lies
//! in a listed mapping is caught: the mapping's pages are replaced by private zero pages, the
//! entry is marked, and the faulting access runs again on the zeros. The engine then fails each
//! request that used the mapping rather than answer from lost bytes. Any other SIGBUS goes to
//! the handler that was there before (Rust's stack-overflow handler), or ends the process.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::OnceLock;

struct Entry {
    /// Taken by a live mapping.
    used: AtomicBool,
    /// The mapping's pages, [start, end); both 0 while the entry is free.
    start: AtomicUsize,
    end: AtomicUsize,
    /// A SIGBUS hit it.
    hit: AtomicBool,
}

/// The table, sized once at start (the most mappings the server keeps), and the SIGBUS handler
/// that was installed before ours.
static TABLE: OnceLock<Box<[Entry]>> = OnceLock::new();
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();

/// Installs the handler, with room for `capacity` mappings. Later calls change nothing.
pub fn install(capacity: usize) -> std::io::Result<()> {
    if TABLE.get().is_some() {
        return Ok(());
    }
    let entries = (0..capacity)
        .map(|_| Entry {
            used: AtomicBool::new(false),
            start: AtomicUsize::new(0),
            end: AtomicUsize::new(0),
            hit: AtomicBool::new(false),
        })
        .collect();
    if TABLE.set(entries).is_err() {
        return Ok(());
    }
    // SAFETY: a zeroed sigaction is a valid empty one; the handler is async-signal-safe (atomics
    // and mmap only) and lives for the program.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            on_sigbus;
        action.sa_sigaction = handler as usize;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_NODEFER;
        libc::sigemptyset(&mut action.sa_mask);
        let mut previous: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(libc::SIGBUS, &action, &mut previous) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let _ = PREVIOUS.set(previous);
    }
    Ok(())
}

/// A mapping's entry in the table, freed on drop (before the mapping is unmapped).
pub struct Guard(Option<&'static Entry>);

impl Guard {
    /// Lists the mapping at `[addr, addr + len)`; `None` when the table is full. Without the
    /// handler installed (tests), the mapping is unguarded.
    pub fn claim(addr: usize, len: usize) -> Option<Guard> {
        let Some(table) = TABLE.get() else {
            return Some(Guard(None));
        };
        let entry = table.iter().find(|e| {
            e.used
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        })?;
        // Whole pages: the mapping owns every page its bytes touch.
        let page = page_size();
        entry.hit.store(false, Ordering::Release);
        entry
            .end
            .store((addr + len).next_multiple_of(page), Ordering::Release);
        entry.start.store(addr - addr % page, Ordering::Release);
        Some(Guard(Some(entry)))
    }

    pub fn hit(&self) -> bool {
        self.0.is_some_and(|e| e.hit.load(Ordering::Acquire))
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(entry) = self.0 {
            entry.start.store(0, Ordering::Release);
            entry.end.store(0, Ordering::Release);
            entry.used.store(false, Ordering::Release);
        }
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096)
}

extern "C" fn on_sigbus(
    signal: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let addr = unsafe { (*info).si_addr() } as usize;
    if let Some(table) = TABLE.get() {
        for entry in table.iter() {
            let (start, end) = (
                entry.start.load(Ordering::Acquire),
                entry.end.load(Ordering::Acquire),
            );
            if start <= addr && addr < end {
                // SAFETY: [start, end) is a live mapping of ours (its entry is cleared before it
                // is unmapped); zero pages replace it in place.
                let replaced = unsafe {
                    libc::mmap(
                        start as *mut libc::c_void,
                        end - start,
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                        -1,
                        0,
                    )
                };
                if replaced != libc::MAP_FAILED {
                    entry.hit.store(true, Ordering::Release);
                    return;
                }
            }
        }
    }
    // Not a mapping of ours: the handler before ours decides, else the default action.
    // SAFETY: calling the previous handler as it was installed, or restoring the default so
    // that the faulting access, run again, ends the process as it would have.
    unsafe {
        match PREVIOUS.get() {
            Some(p) if p.sa_sigaction == libc::SIG_DFL || p.sa_sigaction == libc::SIG_IGN => {}
            Some(p) if p.sa_flags & libc::SA_SIGINFO != 0 => {
                let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                    std::mem::transmute(p.sa_sigaction);
                return handler(signal, info, context);
            }
            Some(p) => {
                let handler: extern "C" fn(libc::c_int) = std::mem::transmute(p.sa_sigaction);
                return handler(signal);
            }
            None => {}
        }
        libc::signal(libc::SIGBUS, libc::SIG_DFL);
    }
}
