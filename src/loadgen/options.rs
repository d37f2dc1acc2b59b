//! tensord-bench's flags.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use super::check::{CheckLevel, Values};
use super::runner::Arrival;

/// tensord-bench: a load generator for Open Inference Protocol (KServe V2) HTTP and gRPC servers.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "tensord-bench",
    version,
    about = "Load generator for Open Inference Protocol servers: V2 REST (JSON or binary) and gRPC, with latency percentiles and plots",
    args_override_self = true
)]
pub struct Options {
    /// The server's root URL.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    pub url: String,

    /// Model to load (required unless --from).
    #[arg(long)]
    pub model: Option<String>,

    /// Model version (default: the server's choice).
    #[arg(long)]
    pub model_version: Option<String>,

    /// Concurrent keep-alive connections; a list sweeps: 1,8,32.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub concurrency: Vec<usize>,

    /// Open loop: requests per second offered (a list sweeps); without it, closed loop.
    #[arg(long, value_delimiter = ',')]
    pub request_rate: Vec<f64>,

    /// Arrival process of the open loop.
    #[arg(long, value_enum, default_value_t = Arrival::Poisson)]
    pub arrival: Arrival,

    /// Measured time per level: 10s, 500ms, 2m (plain numbers are seconds).
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub duration: Duration,

    /// Measured requests per level, instead of a duration.
    #[arg(long)]
    pub requests: Option<u64>,

    /// Unmeasured load before each level.
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub warmup: Duration,

    /// An input's shape, overriding the metadata: NAME:dims, NAME: for a scalar (repeat for
    /// several inputs).
    #[arg(long = "shape")]
    pub shapes: Vec<String>,

    /// An input's datatype where the server has no metadata: NAME:TYPE (default FP32).
    #[arg(long = "datatype")]
    pub datatypes: Vec<String>,

    /// Input values: random, zero, a JSON file (perf_analyzer's format), or a folder of
    /// images (JPEG/PNG sent as BYTES for the server to decode).
    #[arg(long, default_value = "random")]
    pub input_data: String,

    /// Binary tensors (inputs and outputs, the binary tensor extension) instead of JSON.
    #[arg(long)]
    pub binary: bool,

    /// Call ModelInfer over gRPC, with raw tensor contents; --url is then the gRPC port
    /// (http://127.0.0.1:8001). Metadata and statistics are not read: give --shape.
    #[arg(long)]
    pub grpc: bool,

    /// Batch size: the first dimension of inputs whose metadata says -1 there.
    #[arg(long, default_value_t = 1)]
    pub batch_size: u64,

    /// Each stream sends sequences of this many requests (Triton's sequence extension): stream
    /// k uses sequence_id k+1, with sequence_start on every sequence's first request.
    #[arg(long)]
    pub sequence_length: Option<u64>,

    /// Load threads, each with its own runtime [default: available cores].
    #[arg(long)]
    pub threads: Option<usize>,

    /// How much of every response is checked.
    #[arg(long, value_enum, default_value_t = CheckLevel::Full)]
    pub check: CheckLevel,

    /// Which values responses must carry.
    #[arg(long, value_enum, default_value_t = Values::Auto)]
    pub values: Values,

    /// Print the results as one JSON document.
    #[arg(long)]
    pub json: bool,

    /// Print the results as CSV.
    #[arg(long)]
    pub csv: bool,

    /// Also write the results (JSON) to this file, for --from and --plot later.
    #[arg(long)]
    pub output: Option<PathBuf>,

    /// Draw throughput and p99 against concurrency into this SVG file.
    #[arg(long)]
    pub plot: Option<PathBuf>,

    /// Plot these result files (from --output or --json) instead of running a load.
    #[arg(long, value_delimiter = ',')]
    pub from: Vec<PathBuf>,

    /// The run's name in reports and plots [default: MODEL@URL].
    #[arg(long)]
    pub label: Option<String>,

    /// No progress line, even on a terminal.
    #[arg(long)]
    pub quiet: bool,

    /// Seed of random inputs and Poisson arrivals.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else {
        (text, 1.0)
    };
    number
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .map(|v| Duration::from_secs_f64(v * scale))
        .ok_or_else(|| format!("'{text}' is not a duration (10s, 500ms, 2m)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("-1s").is_err() && parse_duration("soon").is_err());
    }
}
