//! `--plot FILE.svg`: throughput and p99 latency against concurrency, one line per report.

use std::path::Path;

use plotters::prelude::*;

use super::report::Report;

/// One line of (concurrency, value) points per report.
type Series = Vec<Vec<(f64, f64)>>;

pub fn plot(reports: &[Report], path: &Path) -> Result<(), String> {
    if path.extension().and_then(|e| e.to_str()) != Some("svg") {
        return Err(format!(
            "--plot {}: plots are written as SVG (name the file .svg)",
            path.display()
        ));
    }
    let fail = |e: &dyn std::fmt::Display| format!("--plot {}: {e}", path.display());
    let points = |value: fn(&super::report::LevelResult) -> f64| -> Series {
        reports
            .iter()
            .map(|r| {
                r.results
                    .iter()
                    .map(|l| (l.concurrency as f64, value(l)))
                    .collect()
            })
            .collect()
    };
    let throughput = points(|l| l.throughput_rps);
    let p99 = points(|l| l.latency_us.p99 as f64 / 1000.0);
    let all = |series: &[Vec<(f64, f64)>], pick: fn(&(f64, f64)) -> f64| {
        series.iter().flatten().map(pick).fold(0.0f64, f64::max)
    };
    let max_x = all(&throughput, |p| p.0).max(2.0);
    let root = SVGBackend::new(path, (1200, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let panels = root.split_evenly((1, 2));
    type Format = fn(&f64) -> String;
    let charts: [(&str, &str, &Series, Format); 2] = [
        ("Throughput", "requests/s", &throughput, |y| {
            format!("{y:.0}")
        }),
        ("p99 latency", "p99 (ms)", &p99, |y| format!("{y:.2}")),
    ];
    for (area, (title, y_label, series, y_format)) in panels.iter().zip(charts) {
        let max_y = all(series, |p| p.1).max(1e-3) * 1.1;
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d((1.0..max_x * 1.2).log_scale(), 0.0..max_y)
            .map_err(|e| fail(&e))?;
        chart
            .configure_mesh()
            .light_line_style(WHITE)
            .x_desc("concurrency")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_desc(y_label)
            .y_label_formatter(&y_format)
            .draw()
            .map_err(|e| fail(&e))?;
        for (i, (report, line)) in reports.iter().zip(series.iter()).enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(line.iter().copied(), color.stroke_width(2)))
                .map_err(|e| fail(&e))?
                .label(report.label.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
            chart
                .draw_series(line.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(|e| fail(&e))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(|e| fail(&e))?;
    }
    root.present().map_err(|e| fail(&e))
}
