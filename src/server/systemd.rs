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

/// Sockets systemd passed by socket activation (`LISTEN_FDS` from fd 3, when `LISTEN_PID` is
/// ours), as listeners. The variables are removed so children do not inherit them.
pub fn listen_fds() -> Vec<std::net::TcpListener> {
    use std::os::fd::FromRawFd;
    const FIRST: i32 = 3;
    let count: i32 = match (std::env::var("LISTEN_PID"), std::env::var("LISTEN_FDS")) {
        (Ok(pid), Ok(n)) if pid.parse() == Ok(std::process::id()) => n.parse().unwrap_or(0),
        _ => return Vec::new(),
    };
    for key in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(key);
    }
    (FIRST..FIRST + count.max(0))
        .map(|fd| {
            // SAFETY: systemd hands these descriptors to this process alone, once; taking
            // ownership here is their only use. Like every descriptor we own, they must not
            // leak into children.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
            unsafe { std::net::TcpListener::from_raw_fd(fd) }
        })
        .collect()
}

/// Sends `STATUS=` with what `status` says every `every` while under systemd, until it says
/// nothing (shutdown has its own status lines).
pub fn report_status(every: Duration, mut status: impl FnMut() -> Option<String> + Send + 'static) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("tensord-status".into())
        .spawn(move || loop {
            std::thread::sleep(every);
            match status() {
                Some(line) => notify(&format!("STATUS={line}")),
                None => return,
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot start the status thread: {e}");
    }
}
