//! The log filter, changeable while serving: Triton's logging extension (`/v2/logging`) reads
//! and sets it in Triton's terms. tensord logs to stderr (the journal under systemd) in one
//! format; settings it cannot honour are refused, never accepted and ignored.

use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tracing_subscriber::{reload, EnvFilter, Registry};

/// Triton's log settings document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub log_file: String,
    pub log_info: bool,
    pub log_warning: bool,
    pub log_error: bool,
    pub log_verbose_level: u32,
    pub log_format: String,
}

/// A partial update, as a POST carries it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogUpdate {
    log_file: Option<String>,
    log_info: Option<bool>,
    log_warning: Option<bool>,
    log_error: Option<bool>,
    log_verbose_level: Option<u32>,
    log_format: Option<String>,
}

pub struct Logging {
    filter: reload::Handle<EnvFilter, Registry>,
    settings: Mutex<LogSettings>,
}

impl LogSettings {
    /// The settings a tracing level (the start-up `--log-level`) stands for.
    fn of_level(level: &str) -> LogSettings {
        let rank = ["off", "error", "warn", "info", "debug", "trace"]
            .iter()
            .position(|l| level.eq_ignore_ascii_case(l))
            .unwrap_or(3);
        LogSettings {
            log_file: String::new(),
            log_error: rank >= 1,
            log_warning: rank >= 2,
            log_info: rank >= 3,
            log_verbose_level: rank.saturating_sub(3) as u32,
            log_format: "default".into(),
        }
    }

    /// The tracing filter for these settings. tracing's levels nest, so the switches must too.
    fn filter(&self) -> Result<String, String> {
        if !self.log_file.is_empty() {
            return Err(
                "log_file cannot be set: tensord logs to stderr (the journal under systemd)".into(),
            );
        }
        if self.log_format != "default" {
            return Err(format!(
                "log_format '{}' is not supported (default is the one format)",
                self.log_format
            ));
        }
        let nested = (!self.log_info || self.log_warning) && (!self.log_warning || self.log_error);
        if !nested || (self.log_verbose_level > 0 && !self.log_info) {
            return Err(
                "tensord's log levels nest: log_info needs log_warning, log_warning needs \
                 log_error, and a verbose level needs log_info"
                    .into(),
            );
        }
        let level = match (
            self.log_verbose_level,
            self.log_info,
            self.log_warning,
            self.log_error,
        ) {
            (2.., ..) => "trace",
            (1, ..) => "debug",
            (0, true, ..) => "info",
            (0, false, true, _) => "warn",
            (0, false, false, true) => "error",
            _ => "off",
        };
        // ONNX Runtime logs every graph transformer at info: keep it to warnings at most.
        Ok(format!("{level},ort=warn"))
    }
}

impl Logging {
    /// `filter` is the start-up filter behind `handle`; `level` the `--log-level` it came from.
    pub fn new(handle: reload::Handle<EnvFilter, Registry>, level: &str) -> Logging {
        Logging {
            filter: handle,
            settings: Mutex::new(LogSettings::of_level(level)),
        }
    }

    pub fn settings(&self) -> LogSettings {
        self.settings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Applies a POSTed update (JSON, any subset of the settings) and returns the new settings.
    pub fn update(&self, body: &[u8]) -> Result<LogSettings, String> {
        let update: LogUpdate =
            serde_json::from_slice(body).map_err(|e| format!("invalid log settings: {e}"))?;
        let mut settings = self.settings.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = settings.clone();
        next.log_file = update.log_file.unwrap_or(next.log_file);
        next.log_info = update.log_info.unwrap_or(next.log_info);
        next.log_warning = update.log_warning.unwrap_or(next.log_warning);
        next.log_error = update.log_error.unwrap_or(next.log_error);
        next.log_verbose_level = update.log_verbose_level.unwrap_or(next.log_verbose_level);
        next.log_format = update.log_format.unwrap_or(next.log_format);
        let filter = EnvFilter::try_new(next.filter()?).map_err(|e| e.to_string())?;
        self.filter
            .reload(filter)
            .map_err(|e| format!("cannot change the log filter: {e}"))?;
        *settings = next.clone();
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_map_both_ways_and_odd_switches_are_refused() {
        let info = LogSettings::of_level("info");
        assert!(info.log_info && info.log_warning && info.log_error);
        assert_eq!(info.log_verbose_level, 0);
        assert_eq!(info.filter().unwrap(), "info,ort=warn");
        assert_eq!(
            LogSettings::of_level("trace").filter().unwrap(),
            "trace,ort=warn"
        );
        let warn = LogSettings::of_level("warn");
        assert!(!warn.log_info && warn.log_warning);
        assert_eq!(warn.filter().unwrap(), "warn,ort=warn");
        let refused = [
            LogSettings {
                log_error: false,
                ..info.clone()
            },
            LogSettings {
                log_info: false,
                log_verbose_level: 1,
                ..info.clone()
            },
            LogSettings {
                log_file: "/tmp/x".into(),
                ..info.clone()
            },
            LogSettings {
                log_format: "ISO8601".into(),
                ..info.clone()
            },
        ];
        for settings in refused {
            assert!(settings.filter().is_err(), "{settings:?}");
        }
    }
}
