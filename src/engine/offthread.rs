//! Blocking work handed to other threads while the io thread awaits its result.

use super::Error;

/// Work handed to another thread.
type Errand = Box<dyn FnOnce() + Send>;

/// CPU-heavy work (image decoding) on rayon's pool.
pub async fn on_pool<T: Send + 'static>(
    what: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Error> {
    elsewhere(
        what,
        |errand| {
            rayon::spawn(errand);
            Ok(())
        },
        work,
    )
    .await
}

/// Long blocking work (loading a model) on a thread of its own.
pub async fn on_loader_thread<T: Send + 'static>(
    what: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Error> {
    let spawn = |errand: Errand| {
        std::thread::Builder::new()
            .name("tensord-loader".into())
            .spawn(errand)
            .map(drop)
    };
    elsewhere(what, spawn, work).await
}

/// Runs `work` on the thread `spawn` starts it on. A panic fails the request (on rayon's pool
/// it would abort the process).
async fn elsewhere<T: Send + 'static>(
    what: &str,
    spawn: impl FnOnce(Errand) -> std::io::Result<()>,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Error> {
    let (done, result) = flume::bounded(1);
    spawn(Box::new(move || {
        let _ = done.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).ok());
    }))
    .map_err(|e| Error::internal(format!("cannot start the {what}: {e}")))?;
    result
        .recv_async()
        .await
        .ok()
        .flatten()
        .ok_or_else(|| Error::internal(format!("the {what} failed")))
}
