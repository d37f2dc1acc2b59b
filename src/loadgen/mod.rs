//! tensord-bench: a closed- and open-loop load generator for any Open Inference Protocol HTTP
//! or gRPC endpoint. Requests are encoded once, before the run, and every answer is checked.
//!
//! options → workload (inputs, encoded requests) → runner (streams on monoio threads, with
//! client and check) → report (table, JSON, CSV) → plot.

mod check;
mod client;
mod grpc;
mod options;
mod plot;
mod report;
mod runner;
mod workload;

use std::io::IsTerminal;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;

pub use check::{CheckLevel, Values};
pub use options::{parse_duration, Options};
pub use report::{LevelResult, Report};
pub use workload::{plan_inputs, InputPlan};

use check::Checker;
use client::{fetch, Target};
use runner::{Level, Plan, Shared};
use workload::{encode_request, make_inputs, InputData, Variant};

/// Runs what the options ask; `Ok(false)` when requests failed (the caller exits non-zero).
pub fn run(options: &Options) -> Result<bool, String> {
    if !options.from.is_empty() {
        let reports = options
            .from
            .iter()
            .map(|path| {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                serde_json::from_str::<Report>(&text)
                    .map_err(|e| format!("{}: not a tensord-bench result: {e}", path.display()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let path = options
            .plot
            .as_ref()
            .ok_or("--from needs --plot FILE.svg")?;
        plot::plot(&reports, path)?;
        return Ok(true);
    }
    let model = options.model.as_deref().ok_or("--model is required")?;
    let target = Target::parse(&options.url)?;
    let model_path = match &options.model_version {
        Some(v) => format!("/v2/models/{model}/versions/{v}"),
        None => format!("/v2/models/{model}"),
    };
    // A server without metadata (a plain responder) is loaded with --shape's inputs alone, as
    // is a gRPC port (metadata is read over HTTP).
    let metadata = (!options.grpc)
        .then(|| fetch(&target, "GET", &model_path))
        .and_then(Result::ok)
        .filter(|r| r.status == 200)
        .and_then(|r| serde_json::from_slice::<Value>(&r.body).ok());
    let plans = plan_inputs(
        metadata.as_ref(),
        &options.shapes,
        &options.datatypes,
        options.batch_size,
    )?;
    let data = InputData::parse(&options.input_data, options.seed);
    let infer_path = format!("{model_path}/infer");
    let encode: runner::Encoder = {
        let (target, model) = (target.clone(), model.to_string());
        let (version, binary, grpc) = (options.model_version.clone(), options.binary, options.grpc);
        Box::new(move |inputs, step| match grpc {
            true => grpc::encode_request(&model, version.as_deref(), inputs, step),
            false => encode_request(&target, &infer_path, inputs.clone(), binary, step).request,
        })
    };
    let variants = make_inputs(&plans, &data)?
        .into_iter()
        .map(|inputs| Variant {
            request: encode(&inputs, None),
            inputs,
        })
        .collect();
    let threads = options
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let plan = Arc::new(Plan {
        target: target.clone(),
        grpc: options.grpc,
        variants,
        encode,
        sequence_length: options.sequence_length,
        checker: Checker {
            level: options.check,
            values: options.values.resolve(model),
        },
        warmup: options.warmup,
        duration: options.duration,
        requests: options.requests,
        threads,
        arrival: options.arrival,
        seed: options.seed,
    });
    let rates: Vec<Option<f64>> = match options.request_rate.as_slice() {
        [] => vec![None],
        rates => rates.iter().map(|&r| Some(r)).collect(),
    };
    let stats_path = format!("{model_path}/stats");
    let server_counters = || {
        (!options.grpc)
            .then(|| fetch(&target, "GET", &stats_path))
            .and_then(Result::ok)
            .filter(|r| r.status == 200)
            .and_then(|r| serde_json::from_slice::<Value>(&r.body).ok())
            .and_then(|v| report::server_counters(&v))
    };
    let progress = !options.quiet && std::io::stderr().is_terminal();
    let mut results = Vec::new();
    for &concurrency in &options.concurrency {
        for &rate in &rates {
            let level = Level { concurrency, rate };
            let mut before = None;
            let measured = runner::run_level(
                &plan,
                level,
                || before = Some(server_counters()),
                |shared| {
                    if progress {
                        show_progress(&plan, shared, level);
                    }
                },
            );
            if progress {
                eprint!("\r\x1b[2K");
            }
            let server = match (before.flatten(), server_counters()) {
                (Some(b), Some(a)) => Some(report::server_side(b, a)),
                _ => None,
            };
            results.push(LevelResult::new(level, &measured, server));
        }
    }
    let report = Report {
        label: options
            .label
            .clone()
            .unwrap_or_else(|| format!("{model}@{}", options.url)),
        url: options.url.clone(),
        model: model.to_string(),
        binary: options.binary || options.grpc,
        batch_size: options.batch_size,
        results,
    };
    emit(options, &report)?;
    let errors: u64 = report.results.iter().map(|r| r.errors).sum();
    if errors > 0 {
        eprintln!("\n*** ERRORS: {errors} requests failed ***");
        for r in report.results.iter().filter(|r| r.errors > 0) {
            eprintln!("concurrency {}: {} failed", r.concurrency, r.errors);
            for e in &r.first_errors {
                eprintln!("  {e}");
            }
        }
    }
    Ok(errors == 0)
}

fn emit(options: &Options, report: &Report) -> Result<(), String> {
    let json = serde_json::to_string_pretty(report).map_err(|e| e.to_string())?;
    if options.json {
        println!("{json}");
    } else if options.csv {
        print!("{}", report::csv(report));
    } else {
        print!("{}", report::table(report));
    }
    if let Some(path) = &options.output {
        std::fs::write(path, &json).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if let Some(path) = &options.plot {
        plot::plot(std::slice::from_ref(report), path)?;
    }
    Ok(())
}

fn show_progress(plan: &Plan, shared: &Shared, level: Level) {
    let now = Instant::now();
    let from = shared.measure_from();
    let done = shared.done.load(Ordering::Relaxed);
    let failed = shared.failed.load(Ordering::Relaxed);
    let (phase, fraction) = if now < from {
        ("warm-up", 0.0)
    } else {
        let elapsed = now - from;
        let fraction = match (shared.planned(), plan.requests) {
            (Some(d), _) => elapsed.as_secs_f64() / d.as_secs_f64(),
            (None, Some(n)) => done as f64 / n as f64,
            (None, None) => 0.0,
        };
        ("measuring", fraction.min(1.0))
    };
    let width = 30;
    let filled = (fraction * width as f64) as usize;
    eprint!(
        "\r\x1b[2Kconcurrency {:>4} [{}{}] {phase} {done} answers, {failed} failed",
        level.concurrency,
        "#".repeat(filled),
        ".".repeat(width - filled),
    );
}
