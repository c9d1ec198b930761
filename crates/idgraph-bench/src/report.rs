//! Presenting results: the plain-text table with its baseline column, number formatting, and the
//! JSON file for machines.

use std::path::Path;

use anyhow::Context;
use serde::Serialize;

use crate::latency::LatencySummary;
use crate::load::LoadFigures;
use crate::server::{LogProblems, ServerFigures};

/// A four-column table: workload, figure, baseline, ratio. Columns are padded to fit.
#[derive(Debug)]
pub(crate) struct Table {
    rows: Vec<[String; 4]>,
}

impl Table {
    pub(crate) fn new(baseline_title: &str) -> Self {
        Self {
            rows: vec![[
                "workload".into(),
                "figure".into(),
                format!("baseline ({baseline_title})"),
                "ratio".into(),
            ]],
        }
    }

    pub(crate) fn row(
        &mut self,
        label: impl Into<String>,
        figure: impl Into<String>,
        baseline: impl Into<String>,
        ratio: impl Into<String>,
    ) {
        self.rows
            .push([label.into(), figure.into(), baseline.into(), ratio.into()]);
    }

    pub(crate) fn render(&self) -> String {
        let mut widths = [0usize; 4];
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i == 3 {
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    let pad = widths[i] - cell.chars().count() + 3;
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// 1234567 → "1,234,567".
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A rate rounded to a whole number, with separators.
pub(crate) fn per_second(rate: f64, unit: &str) -> String {
    format!("{} {unit}/s", thousands(rate.round().max(0.0) as u64))
}

/// Milliseconds with a precision that suits the size.
pub(crate) fn ms(value: f64) -> String {
    if value < 0.01 {
        // In-process baselines take nanoseconds: "0.00 ms" would hide them.
        format!("{:.0} ns", value * 1e6)
    } else if value >= 100.0 {
        format!("{value:.0} ms")
    } else if value >= 1.0 {
        format!("{value:.1} ms")
    } else {
        format!("{value:.2} ms")
    }
}

pub(crate) fn megabytes(bytes: u64) -> String {
    format!("{} MB", thousands((bytes as f64 / 1e6).round() as u64))
}

/// `figure / baseline`, or a dash when there is nothing to divide by.
pub(crate) fn ratio(figure: f64, baseline: f64) -> String {
    match ratio_value(figure, baseline) {
        Some(r) if r >= 10.0 => format!("{r:.0}"),
        Some(r) if r >= 0.1 || r == 0.0 => format!("{r:.2}"),
        // Two significant digits, so a tiny ratio does not print as 0.00.
        Some(r) => {
            let decimals = (-r.log10()).ceil() as usize + 1;
            format!("{r:.decimals$}")
        }
        None => "-".into(),
    }
}

pub(crate) fn ratio_value(figure: f64, baseline: f64) -> Option<f64> {
    (baseline > 0.0 && figure.is_finite()).then(|| figure / baseline)
}

/// "p50 / p99" of a latency summary.
pub(crate) fn p50_p99(latency: &LatencySummary) -> String {
    format!("{} / {}", ms(latency.p50_ms), ms(latency.p99_ms))
}

/// "p90 / max" of a latency summary.
pub(crate) fn p90_max(latency: &LatencySummary) -> String {
    format!("{} / {}", ms(latency.p90_ms), ms(latency.max_ms))
}

/// "p50 / p99 / max" of a latency summary.
pub(crate) fn p50_p99_max(latency: &LatencySummary) -> String {
    format!(
        "{} / {} / {}",
        ms(latency.p50_ms),
        ms(latency.p99_ms),
        ms(latency.max_ms)
    )
}

/// Table rows about the server process, shared with the timeline workload.
pub(crate) fn server_rows(table: &mut Table, server: &ServerFigures) {
    table.row(
        "  peak RSS",
        format!(
            "{} ({} after start)",
            megabytes(server.memory_at_end.peak_rss_bytes),
            megabytes(server.memory_after_start.rss_bytes)
        ),
        "",
        "",
    );
    if let Some(trace) = &server.rss_trace {
        table.row(
            "  RSS max, 1st / 2nd half of the run",
            format!(
                "{} / {} ({:.2}×)",
                megabytes(trace.first_half_max_bytes),
                megabytes(trace.second_half_max_bytes),
                trace.growth()
            ),
            "",
            "",
        );
    }
    if let Some(bytes) = server.store_bytes {
        table.row("  store on disk", megabytes(bytes), "", "");
    }
    table.row(
        "  server log",
        format!(
            "{} warnings, {} errors",
            server.log.warnings, server.log.errors
        ),
        "",
        "",
    );
    table.row(
        "  stop (SIGTERM)",
        format!("{:.1} s, {}", server.stopped.seconds, server.stopped.exit),
        "",
        "",
    );
}

/// Lines after the table for anything that went wrong.
pub(crate) fn problem_lines(out: &mut String, name: &str, figures: &LoadFigures) {
    if let Some(error) = &figures.first_error {
        out.push_str(&format!("first failed request to {name}: {error}\n"));
    }
    let Some(items) = &figures.items else {
        return;
    };
    if let Some(rejection) = &items.first_rejection {
        out.push_str(&format!("first rejected item at {name}: {rejection}\n"));
    }
    if items.duplicates > 0 {
        out.push_str(&format!(
            "{name} reported {} duplicate messages: the store was not fresh\n",
            thousands(items.duplicates)
        ));
    }
}

pub(crate) fn log_lines(out: &mut String, log: &LogProblems) {
    for line in &log.first {
        out.push_str(&format!("server log: {line}\n"));
    }
}

/// Rows about one load run: acknowledged events, failures, and idgraph's own item counts.
pub(crate) fn load_rows(table: &mut Table, idgraph: &LoadFigures, baseline: Option<&LoadFigures>) {
    let acknowledged = |f: &LoadFigures| {
        format!(
            "{} / {} events",
            thousands(f.events_acknowledged),
            thousands(f.events_sent)
        )
    };
    let failures = |f: &LoadFigures| {
        format!(
            "{} / {}",
            thousands(f.non_200),
            thousands(f.transport_errors)
        )
    };
    table.row(
        "  batch p50/p99",
        p50_p99(&idgraph.batch_latency),
        baseline.map_or(String::new(), |b| p50_p99(&b.batch_latency)),
        "",
    );
    table.row(
        "  batch p90/max",
        p90_max(&idgraph.batch_latency),
        baseline.map_or(String::new(), |b| p90_max(&b.batch_latency)),
        "",
    );
    table.row(
        "  wall time",
        format!("{:.1} s", idgraph.wall_seconds),
        baseline.map_or(String::new(), |b| format!("{:.1} s", b.wall_seconds)),
        "",
    );
    table.row(
        "  acknowledged (200)",
        acknowledged(idgraph),
        baseline.map_or(String::new(), acknowledged),
        "",
    );
    table.row(
        "  non-200 / no answer",
        failures(idgraph),
        baseline.map_or(String::new(), failures),
        "",
    );
    if let Some(items) = &idgraph.items {
        table.row(
            "  accepted/dup/rejected",
            format!(
                "{} / {} / {}",
                thousands(items.accepted),
                thousands(items.duplicates),
                thousands(items.rejected)
            ),
            "",
            "",
        );
    }
}

/// One line of the summary table `idgraph-bench all` prints: the headline figure of a workload
/// next to its baseline, with the numbers behind both for the JSON file.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SummaryRow {
    pub(crate) workload: String,
    pub(crate) figure: String,
    pub(crate) value: Option<f64>,
    pub(crate) baseline: String,
    pub(crate) baseline_value: Option<f64>,
    /// `value / baseline_value`: below 1 is slower for a rate, above 1 is slower for a time.
    pub(crate) ratio: Option<f64>,
    /// Peak resident set of the process measured (the server, or the import), when there is one.
    pub(crate) peak_rss_bytes: Option<u64>,
}

impl SummaryRow {
    /// A row comparing two numbers, each shown through `show`.
    pub(crate) fn compared(
        workload: impl Into<String>,
        value: f64,
        baseline: Option<f64>,
        show: impl Fn(f64) -> String,
    ) -> Self {
        Self {
            workload: workload.into(),
            figure: show(value),
            value: Some(value),
            baseline: baseline.map_or_else(|| "-".to_owned(), &show),
            baseline_value: baseline,
            ratio: baseline.and_then(|b| ratio_value(value, b)),
            peak_rss_bytes: None,
        }
    }

    /// A row with a figure that has no baseline (a count, a quality score, a memory figure).
    pub(crate) fn plain(workload: impl Into<String>, figure: impl Into<String>) -> Self {
        Self {
            workload: workload.into(),
            figure: figure.into(),
            value: None,
            baseline: String::new(),
            baseline_value: None,
            ratio: None,
            peak_rss_bytes: None,
        }
    }

    pub(crate) fn with_value(mut self, value: f64) -> Self {
        self.value = Some(value);
        self
    }

    pub(crate) fn with_rss(mut self, bytes: u64) -> Self {
        self.peak_rss_bytes = Some(bytes);
        self
    }
}

/// The row showing whether the server's memory grew over the run: the largest RSS of the second
/// half of the samples against the first half's.
pub(crate) fn memory_growth_row(workload: &str, server: &ServerFigures) -> Option<SummaryRow> {
    let trace = server.rss_trace?;
    Some(
        SummaryRow::plain(
            format!("  {workload}: RSS 2nd half / 1st half"),
            format!(
                "{:.2}× ({} → {})",
                trace.growth(),
                megabytes(trace.first_half_max_bytes),
                megabytes(trace.second_half_max_bytes)
            ),
        )
        .with_value(trace.growth()),
    )
}

/// What a workload hands back to the runner of all of them: its summary rows, its full results
/// (as its own `--json` would write them), and anything that should fail the run. The runner
/// names each run, since one workload may run on both stores.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) rows: Vec<SummaryRow>,
    pub(crate) details: serde_json::Value,
    pub(crate) failures: Vec<String>,
}

impl Outcome {
    pub(crate) fn new<T: Serialize>(rows: Vec<SummaryRow>, details: &T) -> anyhow::Result<Self> {
        Ok(Self {
            rows,
            details: serde_json::to_value(details).context("cannot serialize the results")?,
            failures: Vec::new(),
        })
    }
}

/// The summary table: workload, figure, baseline, ratio, peak RSS.
pub(crate) fn render_summary(rows: &[SummaryRow]) -> String {
    let mut cells: Vec<[String; 5]> = vec![[
        "workload".into(),
        "figure".into(),
        "baseline".into(),
        "ratio".into(),
        "peak RSS".into(),
    ]];
    for row in rows {
        cells.push([
            row.workload.clone(),
            row.figure.clone(),
            row.baseline.clone(),
            row.ratio.map_or_else(String::new, |r| ratio(r, 1.0)),
            row.peak_rss_bytes.map_or_else(String::new, megabytes),
        ]);
    }
    let mut widths = [0usize; 5];
    for row in &cells {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &cells {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if i + 1 < row.len() {
                let pad = widths[i] - cell.chars().count() + 3;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value).context("cannot serialize the results")?;
    text.push('\n');
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(per_second(52_299.6, "events"), "52,300 events/s");
        assert_eq!(ms(0.123), "0.12 ms");
        assert_eq!(ms(0.000_017), "17 ns");
        assert_eq!(ms(12.14), "12.1 ms");
        assert_eq!(ms(1234.0), "1234 ms");
        assert_eq!(megabytes(85_400_000), "85 MB");
        assert_eq!(ratio(52_300.0, 180_000.0), "0.29");
        assert_eq!(ratio(120.0, 3.0), "40");
        assert_eq!(ratio(1.0, 0.0), "-");
        assert_eq!(ratio(616.0, 448_670.0), "0.0014");
        assert_eq!(ratio(5.0, 100.0), "0.050");
        assert_eq!(ratio(0.0, 100.0), "0.00");
    }

    #[test]
    fn columns_line_up() {
        let mut table = Table::new("trivial handler");
        table.row(
            "ingest sqlite",
            "52,300 events/s",
            "180,000 events/s",
            "0.29",
        );
        table.row("  peak RSS", "85 MB", "", "");
        let rendered = table.render();
        let lines: Vec<&str> = rendered.lines().collect();
        assert_eq!(lines.len(), 3);
        let column = lines[0].find("figure").unwrap();
        assert_eq!(lines[1].find("52,300").unwrap(), column);
        assert_eq!(lines[2].find("85 MB").unwrap(), column);
        assert_eq!(
            lines[0].find("ratio").unwrap(),
            lines[1].find("0.29").unwrap()
        );
        assert!(lines.iter().all(|l| !l.ends_with(' ')));
    }
}
