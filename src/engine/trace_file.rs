//! Where traces go: the one file the operator named at start (`--trace-file`), written by a
//! thread of its own so that no io thread ever waits on a disk. Traces queue in a bounded
//! channel (when the writer falls behind, new traces are dropped and counted) and are written
//! in batches, so memory stays bounded whatever the settings.
//!
//! With `log_frequency` 0 the file is one JSON array that grows: each batch replaces its
//! closing `]`, so the file is valid JSON after every write. With N > 0, every N traces go to
//! `<file>.<k>`, k counting from 0, and only the newest `max_files` of those are kept.
//! Files are opened without following a link (`O_NOFOLLOW`) and with mode 0600.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::time::Duration;

use serde_json::Value;

/// Traces waiting for the writer; more are dropped.
const QUEUED: usize = 4096;
/// With `log_frequency` 0, traces are appended to the file in batches of this many.
const BATCH: usize = 1000;

/// The trace file's settings, fixed at start.
#[derive(Clone, Debug)]
pub struct TraceFile {
    pub path: PathBuf,
    /// The most `<file>.<k>` files kept (oldest removed).
    pub max_files: u64,
}

enum Message {
    /// One trace's JSON objects, and the `log_frequency` it was taken under.
    Trace(Vec<Value>, u64),
    /// Write everything pending, then answer.
    Flush(SyncSender<()>),
}

/// The sending side: cheap to call from an io thread.
pub struct Writer {
    path: PathBuf,
    queue: SyncSender<Message>,
    dropped: AtomicU64,
}

impl Writer {
    pub fn start(file: TraceFile) -> std::io::Result<Writer> {
        let (queue, received) = sync_channel(QUEUED);
        let path = file.path.clone();
        std::thread::Builder::new()
            .name("tensord-trace".into())
            .spawn(move || Files::new(file).run(received))?;
        Ok(Writer {
            path,
            queue,
            dropped: AtomicU64::new(0),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues one trace; never blocks.
    pub fn send(&self, trace: Vec<Value>, log_frequency: u64) {
        if let Err(TrySendError::Full(_)) =
            self.queue.try_send(Message::Trace(trace, log_frequency))
        {
            if self.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                tracing::warn!(
                    "the trace writer is behind: traces are dropped until it catches up"
                );
            }
        }
    }

    /// Writes every queued trace, waiting up to `limit` (at shutdown).
    pub fn flush(&self, limit: Duration) {
        let (done, wait) = sync_channel(1);
        if self.queue.send(Message::Flush(done)).is_ok() {
            let _ = wait.recv_timeout(limit);
        }
        let dropped = self.dropped.load(Ordering::Relaxed);
        if dropped > 0 {
            tracing::warn!(dropped, "traces dropped while the trace writer was behind");
        }
    }
}

/// The writing side, on its own thread.
struct Files {
    file: TraceFile,
    pending: Vec<Value>,
    /// The `log_frequency` the pending traces were taken under.
    frequency: u64,
    /// With `log_frequency` 0: the file, once opened, and whether its array holds anything.
    array: Option<(File, bool)>,
    next_index: u64,
    /// The `<file>.<k>` written, oldest first.
    written: VecDeque<u64>,
}

impl Files {
    fn new(file: TraceFile) -> Files {
        Files {
            file,
            pending: Vec::new(),
            frequency: 0,
            array: None,
            next_index: 0,
            written: VecDeque::new(),
        }
    }

    fn run(mut self, received: Receiver<Message>) {
        for message in received {
            match message {
                Message::Trace(objects, frequency) => {
                    if frequency != self.frequency {
                        self.write_pending();
                        self.frequency = frequency;
                    }
                    self.pending.extend(objects);
                    // Each trace is two objects (model, timestamps).
                    let traces = self.pending.len() / 2;
                    let full = match self.frequency {
                        0 => traces >= BATCH,
                        n => traces as u64 >= n.min(BATCH as u64),
                    };
                    if full {
                        self.write_pending();
                    }
                }
                Message::Flush(done) => {
                    self.write_pending();
                    let _ = done.send(());
                }
            }
        }
    }

    fn write_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let traces = std::mem::take(&mut self.pending);
        let written = match self.frequency {
            0 => self.append(&traces),
            _ => self.write_indexed(&traces),
        };
        if let Err(e) = written {
            tracing::error!(file = %self.file.path.display(), "cannot write traces: {e}");
        }
    }

    /// Grows the one JSON array of `<file>`.
    fn append(&mut self, traces: &[Value]) -> std::io::Result<()> {
        if self.array.is_none() {
            self.array = Some((create(&self.file.path)?, false));
        }
        let Some((file, any)) = self.array.as_mut() else {
            return Ok(());
        };
        let items = Value::Array(traces.to_vec()).to_string();
        let items = &items[1..items.len() - 1];
        if *any {
            file.seek(SeekFrom::End(-1))?;
            file.write_all(format!(",{items}]").as_bytes())?;
        } else {
            file.write_all(format!("[{items}]").as_bytes())?;
            *any = true;
        }
        Ok(())
    }

    /// Writes `<file>.<k>`, then removes the oldest beyond `max_files`.
    fn write_indexed(&mut self, traces: &[Value]) -> std::io::Result<()> {
        let k = self.next_index;
        self.next_index += 1;
        let mut file = create(&indexed(&self.file.path, k))?;
        file.write_all(Value::Array(traces.to_vec()).to_string().as_bytes())?;
        self.written.push_back(k);
        while self.written.len() as u64 > self.file.max_files {
            if let Some(old) = self.written.pop_front() {
                let _ = std::fs::remove_file(indexed(&self.file.path, old));
            }
        }
        Ok(())
    }
}

fn indexed(path: &Path, k: u64) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{k}"));
    PathBuf::from(name)
}

/// Opens `path` for writing from its start: never through a link, created with mode 0600 (an
/// existing file is made 0600 too).
fn create(path: &Path) -> std::io::Result<File> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn trace(id: u64) -> Vec<Value> {
        vec![json!({ "id": id }), json!({ "id": id, "timestamps": [] })]
    }

    #[test]
    fn batches_and_capped_indexed_files_never_through_a_link() {
        let dir = std::env::temp_dir().join(format!("tensord-trace-file-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("trace.json");
        let writer = Writer::start(TraceFile {
            path: path.clone(),
            max_files: 2,
        })
        .unwrap();
        // log_frequency 0: one array, valid after each write.
        for id in 0..3 {
            writer.send(trace(id), 0);
            writer.flush(Duration::from_secs(5));
            let all: Vec<Value> =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            assert_eq!(all.len(), 2 * (id as usize + 1));
        }
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        // log_frequency 2: files .0 to .3, of which the newest two are kept.
        for id in 0..8 {
            writer.send(trace(id), 2);
        }
        writer.flush(Duration::from_secs(5));
        let exists = |k| indexed(&path, k).exists();
        assert_eq!(
            (0..5).map(exists).collect::<Vec<_>>(),
            [false, false, true, true, false]
        );
        let last: Vec<Value> =
            serde_json::from_str(&std::fs::read_to_string(indexed(&path, 3)).unwrap()).unwrap();
        assert_eq!(last[0]["id"], 6);

        // A link where a file would go is not followed.
        let victim = dir.join("victim");
        std::fs::write(&victim, "keep").unwrap();
        std::os::unix::fs::symlink(&victim, dir.join("linked.json")).unwrap();
        let linked = Writer::start(TraceFile {
            path: dir.join("linked.json"),
            max_files: 1,
        })
        .unwrap();
        linked.send(trace(1), 0);
        linked.flush(Duration::from_secs(5));
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
