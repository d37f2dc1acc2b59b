//! systemd integration without libsystemd: sd_notify over $NOTIFY_SOCKET, and the watchdog,
//! pinged only while every io runtime keeps proving it is alive.

use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Sends one notification (`READY=1`, `STOPPING=1`, `STATUS=...`); a no-op outside systemd.
pub fn notify(state: &str) {
    let Ok(path) = std::env::var("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(socket) = UnixDatagram::unbound() else {
        return;
    };
    let sent = match path.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name)
                .and_then(|a| socket.send_to_addr(state.as_bytes(), &a))
        }
        None => socket.send_to(state.as_bytes(), &path),
    };
    if let Err(e) = sent {
        tracing::warn!("sd_notify to {path} failed: {e}");
    }
}

/// The watchdog period systemd asked for (WATCHDOG_USEC, when WATCHDOG_PID is ours or unset).
pub fn watchdog_period() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    let for_us = std::env::var("WATCHDOG_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        .is_none_or(|pid| pid == std::process::id());
    (for_us && usec > 0).then(|| Duration::from_micros(usec))
}

/// One counter per io runtime, bumped by a task on that runtime's own event loop.
pub type Heartbeats = Arc<Vec<AtomicU64>>;

/// Pings WATCHDOG=1 every half period, but only when every runtime's heartbeat moved since the
/// last look: a stalled event loop stops the pings and systemd restarts the service.
pub fn start_watchdog(period: Duration, beats: Heartbeats) {
    let spawned = std::thread::Builder::new()
        .name("tensord-watchdog".into())
        .spawn(move || {
            let mut last: Vec<u64> = beats.iter().map(|b| b.load(Ordering::Relaxed)).collect();
            loop {
                std::thread::sleep(period / 2);
                let now: Vec<u64> = beats.iter().map(|b| b.load(Ordering::Relaxed)).collect();
                if now.iter().zip(&last).all(|(n, l)| n != l) {
                    notify("WATCHDOG=1");
                } else {
                    tracing::error!(
                        "an io runtime missed its heartbeat: withholding the watchdog ping"
                    );
                }
                last = now;
            }
        });
    if let Err(e) = spawned {
        tracing::error!("cannot start the watchdog thread: {e}");
    }
}
