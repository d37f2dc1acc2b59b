//! Triton's trace extension: settings (global, and per model on top), and traces of sampled
//! requests with the timestamps of each stage, written as Triton's trace JSON to the one file
//! the operator named at start (`trace_file.rs`).
//!
//! Settings travel as Triton's JSON: `trace_level` a list (`OFF`, `TIMESTAMPS`), the numbers as
//! strings. `trace_rate` N traces one request in N; `trace_count` stops after that many traces
//! (-1: never); `log_frequency` 0 writes every trace to the file, N writes every N traces to
//! `<trace_file>.<k>`. The file itself cannot be changed over the network, as in Triton.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

pub use super::trace_file::TraceFile;
use super::trace_file::Writer;
use super::Error;

/// When each stage of one request ran.
#[derive(Clone, Copy, Debug)]
pub struct Timeline {
    pub queue_start: Instant,
    pub compute_start: Instant,
    pub compute_input_end: Instant,
    pub compute_output_start: Instant,
    pub compute_end: Instant,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Settings {
    level: Vec<String>,
    rate: u64,
    count: i64,
    log_frequency: u64,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            level: vec!["OFF".into()],
            rate: 1000,
            count: -1,
            log_frequency: 0,
        }
    }
}

impl Settings {
    fn to_json(&self, file: &str) -> Value {
        json!({
            "trace_level": self.level,
            "trace_rate": self.rate.to_string(),
            "trace_count": self.count.to_string(),
            "log_frequency": self.log_frequency.to_string(),
            "trace_file": file,
            "trace_mode": "triton",
        })
    }

    fn timestamps(&self) -> bool {
        timestamps(&self.level)
    }
}

/// One model's settings: each one its own, or (`None`) the global one.
#[derive(Clone, Debug, Default)]
struct Overrides {
    level: Option<Vec<String>>,
    rate: Option<u64>,
    count: Option<i64>,
    log_frequency: Option<u64>,
}

/// A trace in progress.
pub struct Trace {
    id: u64,
    model: String,
    version: u64,
    log_frequency: u64,
    stamps: Vec<(&'static str, Instant)>,
}

impl Trace {
    /// The engine's stages of an executed request, then REQUEST_END (now).
    pub fn executed(&mut self, t: &Timeline) {
        self.stamps.extend([
            ("QUEUE_START", t.queue_start),
            ("COMPUTE_START", t.compute_start),
            ("COMPUTE_INPUT_END", t.compute_input_end),
            ("COMPUTE_OUTPUT_START", t.compute_output_start),
            ("COMPUTE_END", t.compute_end),
            ("REQUEST_END", Instant::now()),
        ]);
    }

    fn to_json(&self) -> Vec<Value> {
        let timestamps: Vec<Value> = self
            .stamps
            .iter()
            .map(|(name, at)| json!({ "name": name, "ns": monotonic_ns(*at) }))
            .collect();
        vec![
            json!({ "id": self.id, "model_name": self.model, "model_version": self.version }),
            json!({ "id": self.id, "timestamps": timestamps }),
        ]
    }
}

/// Nanoseconds on the monotonic clock (Triton's timestamps are steady-clock ns).
fn monotonic_ns(at: Instant) -> u64 {
    static ANCHOR: OnceLock<(Instant, u64)> = OnceLock::new();
    let (instant, ns) = *ANCHOR.get_or_init(|| {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes one timespec into the local it is given.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        (
            Instant::now(),
            ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64,
        )
    });
    match at.checked_duration_since(instant) {
        Some(after) => ns + after.as_nanos() as u64,
        None => ns.saturating_sub(instant.duration_since(at).as_nanos() as u64),
    }
}

#[derive(Default)]
struct State {
    global: Settings,
    models: BTreeMap<String, Overrides>,
    /// Requests seen per model since its settings last changed (for the rate).
    seen: BTreeMap<String, u64>,
    /// Traces taken per model (for the count).
    taken: BTreeMap<String, i64>,
}

#[derive(Default)]
pub struct Tracer {
    state: Mutex<State>,
    next_id: AtomicU64,
    /// Whether any level (global or a model's own) is TIMESTAMPS: while none is, `start`
    /// answers on every infer request without the lock.
    active: AtomicBool,
    /// The trace file's writer (none without `--trace-file`: nothing can be traced).
    writer: Option<Writer>,
}

/// Triton's words for a `trace_file` setting over the network.
const FILE_IS_FIXED: &str = "trace file location can not be updated through network protocol";

impl Tracer {
    /// A tracer writing to `file` (none: tracing cannot be turned on), its thread started.
    pub fn new(file: Option<TraceFile>) -> std::io::Result<Tracer> {
        Ok(Tracer {
            writer: file.map(Writer::start).transpose()?,
            ..Tracer::default()
        })
    }

    /// Applies one of Triton's start-up `--trace-config` settings: `[triton,]<key>=<value>`
    /// with key `level`, `rate`, `count` or `log-frequency`.
    pub fn configure(&self, spec: &str) -> Result<(), String> {
        let setting = spec.strip_prefix("triton,").unwrap_or(spec);
        let (key, value) = setting.split_once('=').ok_or_else(|| {
            format!("--trace-config '{spec}': expected [triton,]<setting>=<value>")
        })?;
        let (key, value) = match key {
            "level" => ("trace_level", json!([value.to_ascii_uppercase()])),
            "rate" => ("trace_rate", json!(value)),
            "count" => ("trace_count", json!(value)),
            "log-frequency" => ("log_frequency", json!(value)),
            "file" => return Err("--trace-config file=: use --trace-file".into()),
            other => {
                return Err(format!(
                    "--trace-config '{spec}': unknown setting '{other}' (level, rate, count, \
                     log-frequency; mode triton)"
                ))
            }
        };
        let update = Map::from_iter([(key.to_string(), value)]);
        self.update(None, &update)
            .map(drop)
            .map_err(|e| format!("--trace-config '{spec}': {e}"))
    }

    fn file_name(&self) -> String {
        (self.writer.as_ref()).map_or_else(String::new, |w| w.path().display().to_string())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn effective(state: &State, model: Option<&str>) -> Settings {
        let g = &state.global;
        let Some(o) = model.and_then(|m| state.models.get(m)) else {
            return g.clone();
        };
        Settings {
            level: o.level.clone().unwrap_or_else(|| g.level.clone()),
            rate: o.rate.unwrap_or(g.rate),
            count: o.count.unwrap_or(g.count),
            log_frequency: o.log_frequency.unwrap_or(g.log_frequency),
        }
    }

    /// The settings in Triton's JSON, global or as one model sees them.
    pub fn settings(&self, model: Option<&str>) -> Value {
        Tracer::effective(&self.lock(), model).to_json(&self.file_name())
    }

    /// Applies an update, setting by setting (global, or for one model where `Null` restores
    /// the global value), and returns the settings that result.
    pub fn update(&self, model: Option<&str>, update: &Map<String, Value>) -> Result<Value, Error> {
        if update.contains_key("trace_file") {
            return Err(Error::unsupported(FILE_IS_FIXED));
        }
        let mut state = self.lock();
        let mut next = match model {
            Some(m) => state.models.get(m).cloned().unwrap_or_default(),
            None => Overrides::default(),
        };
        for (key, value) in update {
            let clear = value.is_null();
            if clear && model.is_none() {
                return Err(Error::invalid(format!(
                    "trace setting '{key}': null clears a model's own value; the global one stays"
                )));
            }
            match key.as_str() {
                "trace_level" => next.level = (!clear).then(|| levels(value)).transpose()?,
                "trace_rate" => next.rate = (!clear).then(|| number(key, value)).transpose()?,
                "trace_count" => next.count = (!clear).then(|| number(key, value)).transpose()?,
                "log_frequency" => {
                    next.log_frequency = (!clear).then(|| number(key, value)).transpose()?
                }
                "trace_mode" if value.as_str() == Some("triton") => {}
                _ => {
                    return Err(Error::invalid(format!(
                        "unknown trace setting '{key}' (trace_level, trace_rate, trace_count, \
                         log_frequency; trace_mode triton)"
                    )))
                }
            }
        }
        if next.rate == Some(0) {
            return Err(Error::invalid("trace_rate must be at least 1"));
        }
        if next.level.as_deref().is_some_and(timestamps) && self.writer.is_none() {
            return Err(Error::invalid(
                "trace_level TIMESTAMPS needs a trace file, which only the operator sets (tensord \
                 --trace-file PATH)",
            ));
        }
        match model {
            Some(m) => {
                state.models.insert(m.to_string(), next);
            }
            None => {
                let g = state.global.clone();
                state.global = Settings {
                    level: next.level.unwrap_or(g.level),
                    rate: next.rate.unwrap_or(g.rate),
                    count: next.count.unwrap_or(g.count),
                    log_frequency: next.log_frequency.unwrap_or(g.log_frequency),
                };
            }
        }
        let active = timestamps(&state.global.level)
            || (state.models.values()).any(|o| o.level.as_deref().is_some_and(timestamps));
        self.active.store(active, Ordering::Relaxed);
        let after = Tracer::effective(&state, model);
        // New settings start a new count, as in Triton.
        match model {
            Some(m) => {
                state.seen.remove(m);
                state.taken.remove(m);
            }
            None => {
                state.seen.clear();
                state.taken.clear();
            }
        }
        Ok(after.to_json(&self.file_name()))
    }

    /// A trace for this request of `model`, if its settings sample it, stamped with the front
    /// door's two receive stages (HTTP_RECV_START/END, GRPC_WAITREAD_START/END) and
    /// REQUEST_START (now).
    pub fn start(
        &self,
        model: &str,
        version: u64,
        received: [(&'static str, Instant); 2],
    ) -> Option<Trace> {
        if !self.active.load(Ordering::Relaxed) {
            return None;
        }
        let mut state = self.lock();
        let settings = Tracer::effective(&state, Some(model));
        if !settings.timestamps() {
            return None;
        }
        let seen = state.seen.entry(model.to_string()).or_default();
        *seen += 1;
        if !(*seen - 1).is_multiple_of(settings.rate) {
            return None;
        }
        let taken = state.taken.entry(model.to_string()).or_default();
        if settings.count >= 0 && *taken >= settings.count {
            return None;
        }
        *taken += 1;
        Some(Trace {
            id: self.next_id.fetch_add(1, Ordering::Relaxed) + 1,
            model: model.to_string(),
            version,
            log_frequency: settings.log_frequency,
            stamps: {
                let mut stamps = Vec::with_capacity(12);
                stamps.extend([received[0], received[1], ("REQUEST_START", Instant::now())]);
                stamps
            },
        })
    }

    /// Stamps a trace (if any) with the door's send stage (now) and hands it to the writer.
    pub fn finish(&self, trace: Option<Trace>, send_start: &'static str) {
        let (Some(mut trace), Some(writer)) = (trace, &self.writer) else {
            return;
        };
        trace.stamps.push((send_start, Instant::now()));
        writer.send(trace.to_json(), trace.log_frequency);
    }

    /// Writes every trace not yet written (at shutdown).
    pub fn flush_all(&self) {
        if let Some(writer) = &self.writer {
            writer.flush(Duration::from_secs(10));
        }
    }
}

/// Whether a level list traces (has TIMESTAMPS).
fn timestamps(level: &[String]) -> bool {
    level.iter().any(|l| l == "TIMESTAMPS")
}

fn levels(value: &Value) -> Result<Vec<String>, Error> {
    let bad = || Error::invalid("trace_level must be a list of OFF or TIMESTAMPS");
    let items = value.as_array().ok_or_else(bad)?;
    let levels: Vec<String> = items
        .iter()
        .map(|l| l.as_str().map(str::to_string).ok_or_else(bad))
        .collect::<Result<_, _>>()?;
    if let Some(other) = levels.iter().find(|l| *l != "OFF" && *l != "TIMESTAMPS") {
        return Err(Error::invalid(format!(
            "trace_level '{other}' is not supported (OFF, TIMESTAMPS)"
        )));
    }
    Ok(levels)
}

fn text<'v>(key: &str, value: &'v Value) -> Result<&'v str, Error> {
    value
        .as_str()
        .ok_or_else(|| Error::invalid(format!("trace setting '{key}' must be a string")))
}

/// Triton sends numbers as strings; plain JSON numbers are taken too.
fn number<T: std::str::FromStr>(key: &str, value: &Value) -> Result<T, Error> {
    let text = match value {
        Value::Number(n) => n.to_string(),
        other => text(key, other)?.to_string(),
    };
    text.trim().parse().map_err(|_| {
        Error::invalid(format!(
            "trace setting '{key}': '{text}' is not a valid number"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(body: &[u8]) -> Map<String, Value> {
        serde_json::from_slice(body).unwrap()
    }

    #[test]
    fn settings_global_and_per_model() {
        let path = std::env::temp_dir().join(format!("tensord-tracer-{}", std::process::id()));
        let file = TraceFile {
            path: path.clone(),
            max_files: 1,
        };
        let tracer = Tracer::new(Some(file)).unwrap();
        assert_eq!(tracer.settings(None)["trace_level"], json!(["OFF"]));
        assert_eq!(
            tracer.settings(None)["trace_file"],
            json!(path.display().to_string())
        );
        // The file is the operator's: refused over the network, with Triton's words and kind.
        for body in [
            &br#"{"trace_file": "/tmp/x"}"#[..],
            br#"{"trace_file": null}"#,
        ] {
            for model in [None, Some("m")] {
                let e = tracer.update(model, &map(body)).unwrap_err();
                assert_eq!(e.kind, crate::engine::ErrorKind::Unsupported);
                assert_eq!(e.message, FILE_IS_FIXED);
            }
        }
        let global = br#"{"trace_level": ["TIMESTAMPS"], "trace_rate": "2"}"#;
        tracer.update(None, &map(global)).unwrap();
        let model = tracer
            .update(
                Some("m"),
                &map(br#"{"trace_rate": "1", "trace_count": "1"}"#),
            )
            .unwrap();
        assert_eq!(
            (model["trace_rate"].as_str(), model["trace_count"].as_str()),
            (Some("1"), Some("1"))
        );
        assert_eq!(tracer.settings(Some("other"))["trace_rate"], json!("2"));
        // Model m: rate 1, count 1: one trace. Another model: one in two.
        let now = Instant::now();
        let received = [("RECV_START", now), ("RECV_END", now)];
        assert!(tracer.start("m", 1, received).is_some());
        assert!(tracer.start("m", 1, received).is_none());
        let sampled: Vec<bool> = (0..4)
            .map(|_| tracer.start("other", 1, received).is_some())
            .collect();
        assert_eq!(sampled, [true, false, true, false]);
        // null restores the global value for the model.
        let back = tracer
            .update(Some("m"), &map(br#"{"trace_rate": null}"#))
            .unwrap();
        assert_eq!(back["trace_rate"], json!("2"));
        for bad in [
            &br#"{"trace_level": ["TENSORS"]}"#[..],
            br#"{"trace_rate": "0"}"#,
            br#"{"rate": "1"}"#,
            br#"{"trace_rate": null}"#,
        ] {
            assert!(tracer.update(None, &map(bad)).is_err());
        }
        // Without a file, tracing cannot be turned on; the start-up settings go the same way.
        let fileless = Tracer::new(None).unwrap();
        let e = fileless.update(None, &map(global)).unwrap_err();
        assert!(e.message.contains("--trace-file"), "{e}");
        assert!(fileless.configure("level=TIMESTAMPS").is_err());
        fileless.configure("triton,rate=5").unwrap();
        fileless.configure("log-frequency=3").unwrap();
        assert_eq!(fileless.settings(None)["trace_rate"], json!("5"));
        assert_eq!(fileless.settings(None)["log_frequency"], json!("3"));
        for bad in ["rate", "speed=1", "count=x", "file=/tmp/y"] {
            assert!(fileless.configure(bad).is_err(), "{bad}");
        }
        let _ = std::fs::remove_file(path);
    }
}
