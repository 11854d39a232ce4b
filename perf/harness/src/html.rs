//! `report.html`: one self-contained page (inline CSS and SVG, no script, nothing fetched).
//!
//! Plots: latency CDFs (lane vs direct overlaid, fan-out steps), packets per second over time,
//! the stall timeline, CPU per core (and the media worker thread) over time; then the verdict
//! table, every metric, the phases, the notes and the environment.

use std::fmt::Write as _;

use crate::report::{Overall, Report, Series, StallTimeline, Status};

const PALETTE: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];
const W: f64 = 760.0;
const H: f64 = 300.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 24.0;
const BOTTOM: f64 = 44.0;

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Axis scaling.
#[derive(Debug, Clone, Copy)]
struct Axis {
    lo: f64,
    hi: f64,
    log: bool,
}

impl Axis {
    fn fit(values: impl Iterator<Item = f64>, log: bool, zero_based: bool) -> Self {
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for v in values.filter(|v| v.is_finite() && (!log || *v > 0.0)) {
            lo = lo.min(v);
            hi = hi.max(v);
        }
        if !lo.is_finite() {
            return Self {
                lo: if log { 1.0 } else { 0.0 },
                hi: if log { 10.0 } else { 1.0 },
                log,
            };
        }
        if log {
            let lo = 10f64.powf(lo.log10().floor());
            let hi = 10f64.powf(hi.log10().ceil()).max(lo * 10.0);
            Self { lo, hi, log }
        } else {
            if zero_based {
                lo = lo.min(0.0);
            }
            if hi <= lo {
                hi = lo + 1.0;
            }
            let step = nice_step((hi - lo) / 5.0);
            Self {
                lo: (lo / step).floor() * step,
                hi: (hi / step).ceil() * step,
                log,
            }
        }
    }

    /// 0..1 position of `v`.
    fn pos(&self, v: f64) -> f64 {
        if self.log {
            let v = v.max(self.lo);
            (v.log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10())
        } else {
            (v - self.lo) / (self.hi - self.lo)
        }
    }

    fn ticks(&self) -> Vec<f64> {
        if self.log {
            let mut t = Vec::new();
            let mut v = self.lo;
            while v <= self.hi * 1.0001 && t.len() < 12 {
                t.push(v);
                v *= 10.0;
            }
            t
        } else {
            let step = nice_step((self.hi - self.lo) / 5.0);
            let mut t = Vec::new();
            let mut v = self.lo;
            while v <= self.hi + step * 1e-6 && t.len() < 12 {
                t.push(v);
                v += step;
            }
            t
        }
    }
}

fn nice_step(raw: f64) -> f64 {
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let nice = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

fn fmt_tick(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// A line chart of named point lists.
fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    lines: &[(&str, &[[f64; 2]])],
    log_x: bool,
    step: bool,
) -> String {
    banded_chart(title, x_label, y_label, lines, log_x, step, &[])
}

/// A line chart with shaded x ranges behind the lines, each labelled (the fault windows of a
/// stability run).
fn banded_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    lines: &[(&str, &[[f64; 2]])],
    log_x: bool,
    step: bool,
    bands: &[(&str, f64, f64)],
) -> String {
    let x = Axis::fit(
        lines
            .iter()
            .flat_map(|(_, p)| p.iter().map(|q| q[0]))
            .chain(bands.iter().flat_map(|b| [b.1, b.2])),
        log_x,
        false,
    );
    let y = Axis::fit(
        lines.iter().flat_map(|(_, p)| p.iter().map(|q| q[1])),
        false,
        true,
    );
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let px = |v: f64| LEFT + x.pos(v) * pw;
    let py = |v: f64| TOP + (1.0 - y.pos(v)) * ph;
    let mut s = String::new();
    let _ = write!(
        s,
        "<figure><figcaption>{}</figcaption><svg viewBox=\"0 0 {W} {H}\" width=\"{W}\" height=\"{H}\" role=\"img\" aria-label=\"{}\">",
        escape(title),
        escape(title)
    );
    let _ = write!(s, "<rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{pw}\" height=\"{ph}\" fill=\"#fff\" stroke=\"#999\"/>");
    for (label, from, to) in bands {
        let (x0, x1) = (px(*from), px(*to));
        let _ = write!(
            s,
            "<rect x=\"{x0:.1}\" y=\"{TOP}\" width=\"{:.1}\" height=\"{ph}\" fill=\"#fbe3c4\" opacity=\"0.8\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" class=\"tick\">{}</text>",
            (x1 - x0).max(1.0),
            (x0 + x1) / 2.0,
            TOP + ph - 4.0,
            escape(label)
        );
    }
    for t in x.ticks() {
        let xp = px(t);
        let _ = write!(
            s,
            "<line x1=\"{xp:.1}\" y1=\"{TOP}\" x2=\"{xp:.1}\" y2=\"{:.1}\" stroke=\"#eee\"/><text x=\"{xp:.1}\" y=\"{:.1}\" text-anchor=\"middle\" class=\"tick\">{}</text>",
            TOP + ph,
            TOP + ph + 14.0,
            fmt_tick(t)
        );
    }
    for t in y.ticks() {
        let yp = py(t);
        let _ = write!(
            s,
            "<line x1=\"{LEFT}\" y1=\"{yp:.1}\" x2=\"{:.1}\" y2=\"{yp:.1}\" stroke=\"#eee\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" class=\"tick\">{}</text>",
            LEFT + pw,
            LEFT - 4.0,
            yp + 4.0,
            fmt_tick(t)
        );
    }
    let _ = write!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" class=\"label\">{}</text><text x=\"14\" y=\"{:.1}\" text-anchor=\"middle\" class=\"label\" transform=\"rotate(-90 14 {:.1})\">{}</text>",
        LEFT + pw / 2.0,
        H - 8.0,
        escape(x_label),
        TOP + ph / 2.0,
        TOP + ph / 2.0,
        escape(y_label)
    );
    for (i, (name, points)) in lines.iter().enumerate() {
        let color = PALETTE.get(i % PALETTE.len()).copied().unwrap_or("#000");
        let mut d = String::new();
        let mut prev_y: Option<f64> = None;
        for (j, p) in points
            .iter()
            .filter(|p| p[0].is_finite() && p[1].is_finite() && (!log_x || p[0] > 0.0))
            .enumerate()
        {
            let (xp, yp) = (px(p[0]), py(p[1]));
            if j == 0 {
                let _ = write!(d, "M{xp:.1},{yp:.1}");
            } else {
                if step {
                    if let Some(prev) = prev_y {
                        let _ = write!(d, " L{xp:.1},{prev:.1}");
                    }
                }
                let _ = write!(d, " L{xp:.1},{yp:.1}");
            }
            prev_y = Some(yp);
        }
        let _ = write!(
            s,
            "<path d=\"{d}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"1.6\"/>"
        );
        let ly = TOP + 14.0 + 14.0 * i as f64;
        let _ = write!(
            s,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"10\" height=\"3\" fill=\"{color}\"/><text x=\"{:.1}\" y=\"{:.1}\" class=\"legend\">{}</text>",
            LEFT + 8.0,
            ly - 4.0,
            LEFT + 22.0,
            ly,
            escape(name)
        );
    }
    if lines.iter().all(|(_, p)| p.is_empty()) {
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" class=\"label\">no data</text>",
            LEFT + pw / 2.0,
            TOP + ph / 2.0
        );
    }
    s.push_str("</svg></figure>\n");
    s
}

/// The stall timeline of one phase: a row per viewer, a bar per stall.
fn stall_chart(t: &StallTimeline, x_range: (f64, f64)) -> String {
    let rows = t.viewers.clamp(1, 200) as f64;
    let h = (TOP + BOTTOM + rows * 6.0).max(140.0);
    let pw = W - LEFT - RIGHT;
    let ph = h - TOP - BOTTOM;
    let x = Axis::fit([x_range.0, x_range.1].into_iter(), false, true);
    let px = |v: f64| LEFT + x.pos(v) * pw;
    let mut s = String::new();
    let title = format!(
        "Stalls, {}: {} stall(s) over {:.2} viewer-minutes ({:.3}/viewer-min), {:.2} s stalled, gap > {} ms",
        t.phase,
        t.stalls,
        t.viewer_minutes,
        t.rate_per_viewer_min(),
        t.stalled_s,
        t.threshold_ms
    );
    let _ = write!(s, "<figure><figcaption>{}</figcaption><svg viewBox=\"0 0 {W} {h}\" width=\"{W}\" height=\"{h}\" role=\"img\" aria-label=\"{}\">", escape(&title), escape(&title));
    let _ = write!(s, "<rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{pw}\" height=\"{ph}\" fill=\"#fff\" stroke=\"#999\"/>");
    for tick in x.ticks() {
        let xp = px(tick);
        let _ = write!(s, "<line x1=\"{xp:.1}\" y1=\"{TOP}\" x2=\"{xp:.1}\" y2=\"{:.1}\" stroke=\"#eee\"/><text x=\"{xp:.1}\" y=\"{:.1}\" text-anchor=\"middle\" class=\"tick\">{}</text>", TOP + ph, TOP + ph + 14.0, fmt_tick(tick));
    }
    let row_h = ph / rows;
    for e in &t.events {
        if f64::from(e.viewer) >= rows {
            continue;
        }
        let x0 = px(e.start_s);
        let x1 = px(e.start_s + e.duration_s).max(x0 + 1.5);
        let y0 = TOP + f64::from(e.viewer) * row_h;
        let _ = write!(
            s,
            "<rect x=\"{x0:.1}\" y=\"{y0:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#d62728\"><title>viewer {} stalled {:.3} s at {:.2} s</title></rect>",
            x1 - x0,
            (row_h * 0.8).max(1.0),
            e.viewer,
            e.duration_s,
            e.start_s
        );
    }
    let _ = write!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" class=\"label\">seconds since start (rows: viewers{})</text>",
        LEFT + pw / 2.0,
        h - 8.0,
        if t.viewers > 200 { ", first 200" } else { "" }
    );
    if t.events.is_empty() {
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" class=\"label\">no stalls</text>",
            LEFT + pw / 2.0,
            TOP + ph / 2.0
        );
    }
    s.push_str("</svg></figure>\n");
    s
}

fn series_named<'a>(report: &'a Report, prefix: &str) -> Vec<&'a Series> {
    report
        .series
        .iter()
        .filter(|s| s.name.starts_with(prefix))
        .collect()
}

fn num(v: f64) -> String {
    if v.abs() >= 1000.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 || v == 0.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

/// Renders the page.
pub fn render(report: &Report) -> String {
    let mut h = String::new();
    let title = format!("popmesh capacity report: {}", report.scenario.name);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>\
         body{{font-family:system-ui,sans-serif;margin:24px;max-width:1000px;color:#222}}\
         table{{border-collapse:collapse;margin:8px 0 16px}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left;font-size:13px}}\
         th{{background:#f4f4f4}}.pass{{color:#116611;font-weight:bold}}.fail{{color:#b00;font-weight:bold}}.missing{{color:#a60;font-weight:bold}}\
         figure{{margin:12px 0}}figcaption{{font-weight:600;margin-bottom:4px}}.tick{{font-size:10px;fill:#555}}.label{{font-size:11px;fill:#333}}\
         .legend{{font-size:11px;fill:#222}}pre{{background:#f7f7f7;padding:8px;overflow:auto;font-size:12px}}</style></head><body>\n",
        escape(&title)
    );
    let (cls, word) = match report.overall {
        Overall::Pass => ("pass", "PASS"),
        Overall::Fail => ("fail", "FAIL"),
    };
    let _ = write!(
        h,
        "<h1>{}</h1><p>{} scenario, started {} on {} ({} CPUs, {}). Overall: <span class=\"{cls}\">{word}</span> ({} threshold(s)).</p>\n<p>{}</p>\n",
        escape(&title),
        escape(&report.scenario.kind),
        escape(&report.environment.started_at),
        escape(&report.environment.hostname),
        report.environment.cores,
        escape(&report.environment.cpu_model),
        report.verdicts.len(),
        escape(&report.scenario.description)
    );

    h.push_str("<h2>Thresholds</h2><table><tr><th>metric</th><th>bound</th><th>measured</th><th>verdict</th><th>source</th><th>meaning</th></tr>\n");
    for v in &report.verdicts {
        let (cls, word) = match v.status {
            Status::Pass => ("pass", "pass"),
            Status::Fail => ("fail", "fail"),
            Status::Missing => ("missing", "missing"),
        };
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{} {}</td><td>{}</td><td class=\"{cls}\">{word}</td><td>{:?}</td><td>{}</td></tr>",
            escape(&v.metric),
            if v.bound == "max" { "&le;" } else { "&ge;" },
            num(v.limit),
            v.measured.map_or("not measured".to_string(), |m| format!("{} {}", num(m), escape(v.unit.as_deref().unwrap_or("")))),
            v.source,
            escape(&v.description)
        );
    }
    h.push_str("</table>\n");

    if !report.notes.is_empty() {
        h.push_str("<h2>Notes</h2><ul>");
        for n in &report.notes {
            let _ = write!(h, "<li>{}</li>", escape(n));
        }
        h.push_str("</ul>\n");
    }

    h.push_str("<h2>Latency</h2>\n");
    let lane_direct: Vec<(&str, &[[f64; 2]])> = report
        .latency_cdfs
        .iter()
        .filter(|c| !c.name.starts_with("fanout"))
        .map(|c| (c.name.as_str(), c.points.as_slice()))
        .collect();
    // The control plane's CDFs are joins (a new mTLS connection and one request per user); a
    // stability run has one CDF of the viewers' media over the whole run.
    let (title, x_label, y_label) = if report.scenario.kind == "control-plane" {
        (
            "Join latency CDF: signaling lane vs direct",
            "connect + TLS + join (us, log)",
            "fraction of users",
        )
    } else if report.scenario.kind == "stability" {
        (
            "End-to-end latency CDF of the viewers' media, faults included",
            "one-way latency (us, log)",
            "fraction of packets",
        )
    } else {
        (
            "End-to-end latency CDF: media lane vs direct",
            "one-way latency (us, log)",
            "fraction of packets",
        )
    };
    h.push_str(&line_chart(
        title,
        x_label,
        y_label,
        &lane_direct,
        true,
        true,
    ));
    let fanout: Vec<(&str, &[[f64; 2]])> = report
        .latency_cdfs
        .iter()
        .filter(|c| c.name.starts_with("fanout"))
        .map(|c| (c.name.as_str(), c.points.as_slice()))
        .collect();
    if !fanout.is_empty() {
        h.push_str(&line_chart(
            "Latency CDF per fan-out step",
            "one-way latency (us, log)",
            "fraction of packets",
            &fanout,
            true,
            true,
        ));
    }
    let p99: Vec<(&str, &[[f64; 2]])> = series_named(report, "latency_p99.")
        .into_iter()
        .map(|s| {
            (
                s.name.trim_start_matches("latency_p99."),
                s.points.as_slice(),
            )
        })
        .collect();
    h.push_str(&line_chart(
        "Latency P99 per second",
        "seconds since start",
        "us",
        &p99,
        false,
        false,
    ));

    h.push_str("<h2>Throughput</h2>\n");
    let pps: Vec<(&str, &[[f64; 2]])> = series_named(report, "pps.")
        .into_iter()
        .map(|s| (s.name.as_str(), s.points.as_slice()))
        .collect();
    let bands: Vec<(&str, f64, f64)> = report
        .faults
        .iter()
        .map(|f| (f.name.as_str(), f.start_s, f.end_s))
        .collect();
    if pps.is_empty() {
        h.push_str("<p>No media in this run: no packets/s series.</p>\n");
    } else {
        h.push_str(&banded_chart(
            "Packets per second over time",
            "seconds since start",
            "packets/s",
            &pps,
            false,
            false,
            &bands,
        ));
    }
    if !report.faults.is_empty() {
        h.push_str("<h2>Faults</h2><table><tr><th>fault</th><th>kind</th><th>from (s)</th><th>to (s)</th></tr>\n");
        for f in &report.faults {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{:.2}</td><td>{:.2}</td></tr>",
                escape(&f.name),
                escape(&f.kind),
                f.start_s,
                f.end_s
            );
        }
        h.push_str("</table>\n");
        let loss: Vec<(&str, &[[f64; 2]])> = series_named(report, "loss_ratio.")
            .into_iter()
            .map(|s| (s.name.as_str(), s.points.as_slice()))
            .collect();
        let rps: Vec<(&str, &[[f64; 2]])> = series_named(report, "rps.")
            .into_iter()
            .map(|s| (s.name.as_str(), s.points.as_slice()))
            .collect();
        if !rps.is_empty() {
            h.push_str(&banded_chart(
                "Requests per second through the signaling lane, by outcome (shaded: fault windows)",
                "seconds since start",
                "requests/s",
                &rps,
                false,
                false,
                &bands,
            ));
        }
        h.push_str(&banded_chart(
            "Share of the nominal rate the viewers missed, per interval (shaded: fault windows)",
            "seconds since start",
            "ratio",
            &loss,
            false,
            true,
            &bands,
        ));
    }

    // Control plane: WebSockets held open per phase, and the appliance's memory under them.
    for (prefix, title, unit) in [
        ("users.", "WebSockets open over time", "open WebSockets"),
        ("rss.", "Appliance resident memory", "MiB"),
    ] {
        let points: Vec<(&str, &[[f64; 2]])> = series_named(report, prefix)
            .into_iter()
            .map(|s| (s.name.as_str(), s.points.as_slice()))
            .collect();
        if !points.is_empty() {
            h.push_str(&line_chart(
                title,
                "seconds since start",
                unit,
                &points,
                false,
                false,
            ));
        }
    }

    h.push_str("<h2>Stalls</h2>\n");
    let end = report
        .phases
        .iter()
        .map(|p| p.start_s + p.duration_s)
        .fold(1.0f64, f64::max);
    for t in &report.stalls {
        let range = report
            .phases
            .iter()
            .find(|p| p.name == t.phase)
            .map_or((0.0, end), |p| (p.start_s, p.start_s + p.duration_s));
        h.push_str(&stall_chart(t, range));
    }
    if report.stalls.is_empty() {
        h.push_str("<p>No phase measured stalls.</p>\n");
    }

    h.push_str("<h2>CPU</h2>\n");
    let cpu: Vec<(&str, &[[f64; 2]])> = series_named(report, "cpu.")
        .into_iter()
        .map(|s| (s.name.as_str(), s.points.as_slice()))
        .collect();
    h.push_str(&line_chart(
        "CPU per core (and the appliance's threads) over time",
        "seconds since start",
        "percent of one CPU",
        &cpu,
        false,
        false,
    ));

    h.push_str("<h2>Phases</h2><table><tr><th>phase</th><th>start (s)</th><th>length (s)</th><th>what</th></tr>\n");
    for p in &report.phases {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{:.1}</td><td>{:.1}</td><td>{}</td></tr>",
            escape(&p.name),
            p.start_s,
            p.duration_s,
            escape(&p.description)
        );
    }
    h.push_str("</table>\n<h2>Metrics</h2><table><tr><th>metric</th><th>value</th><th>unit</th><th>better</th></tr>\n");
    for (name, m) in &report.metrics {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:?}</td></tr>",
            escape(name),
            num(m.value),
            escape(&m.unit),
            m.better
        );
    }
    h.push_str("</table>\n");
    let files: Vec<&str> = report
        .latency_cdfs
        .iter()
        .filter_map(|c| c.hlog.as_deref())
        .collect();
    if !files.is_empty() {
        h.push_str("<p>HdrHistogram interval logs (ns, one interval per second): ");
        h.push_str(
            &files
                .iter()
                .map(|f| format!("<code>{}</code>", escape(f)))
                .collect::<Vec<_>>()
                .join(", "),
        );
        h.push_str("</p>\n");
    }

    let e = &report.environment;
    let _ = write!(
        h,
        "<h2>Environment</h2><table><tr><th>CPU</th><td>{}</td></tr><tr><th>CPUs</th><td>{}</td></tr><tr><th>kernel</th><td>{}</td></tr><tr><th>host</th><td>{}</td></tr><tr><th>backend</th><td>{}</td></tr><tr><th>harness</th><td>popmesh-perf {}</td></tr><tr><th>started</th><td>{}</td></tr></table>\n<h3>Effective scenario</h3><pre>{}</pre>\n",
        escape(&e.cpu_model),
        e.cores,
        escape(&e.kernel_release),
        escape(&e.hostname),
        escape(&e.backend),
        escape(&e.harness_version),
        escape(&e.started_at),
        escape(&e.scenario_toml)
    );
    if let Some(c) = &e.appliance_config_toml {
        let _ = writeln!(
            h,
            "<h3>Appliance config (lane phase)</h3><pre>{}</pre>",
            escape(c)
        );
    }
    h.push_str("</body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn axes_are_sane_for_odd_data() {
        let a = Axis::fit([].into_iter(), false, true);
        assert!(a.hi > a.lo);
        let a = Axis::fit([5.0, 5.0].into_iter(), false, false);
        assert!(a.hi > a.lo);
        let a = Axis::fit([3.0, 4_000.0].into_iter(), true, false);
        assert_eq!((a.lo, a.hi), (1.0, 10_000.0));
        assert!((a.pos(100.0) - 0.5).abs() < 1e-9);
        let chart = line_chart(
            "t",
            "x",
            "y",
            &[("a", &[[f64::NAN, 1.0], [1.0, 2.0]])],
            false,
            false,
        );
        assert!(!chart.contains("NaN"));
    }
}
