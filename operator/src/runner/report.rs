//! A self-contained HTML report: inline SVG plots (no scripts, no network),
//! so a browser opens it anywhere. Plots share the time axis of the load and
//! shade the fault phases.

use crate::crd::{ReliabilityExperimentStatus, Verdict, VerdictResult};
use crate::runner::LabRunOutput;
use lab_service::summary::{RunResults, TimelinePoint};
use relab_model::results::BreakerState;
use relab_model::status::VariantStatus;
use relab_model::ValidatedExperiment;
use std::fmt::Write;

const W: f64 = 760.0;
const H: f64 = 220.0;
const PAD_L: f64 = 56.0;
const PAD_R: f64 = 16.0;
const PAD_T: f64 = 28.0;
const PAD_B: f64 = 34.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A shaded interval on the time axis.
pub struct Band {
    pub label: String,
    pub start: f64,
    pub end: f64,
    pub color: &'static str,
}

/// One line: name, colour, (x, y) points.
pub struct Series<'a> {
    pub name: &'a str,
    pub color: &'static str,
    pub points: Vec<(f64, f64)>,
    pub step: bool,
}

/// A series drawn as a line (not as steps).
fn line<'a>(name: &'a str, color: &'static str, points: Vec<(f64, f64)>) -> Series<'a> {
    Series {
        name,
        color,
        points,
        step: false,
    }
}

fn nice_max(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if v <= m * mag {
            return m * mag;
        }
    }
    10.0 * mag
}

/// An SVG line chart over `x_max` seconds.
pub fn line_chart(
    title: &str,
    y_label: &str,
    x_max: f64,
    series: &[Series],
    bands: &[Band],
    y_ticks: Option<&[(f64, &str)]>,
) -> String {
    let x_max = x_max.max(1.0);
    let y_max = match y_ticks {
        Some(t) => t.iter().map(|(v, _)| *v).fold(0.0, f64::max),
        None => nice_max(
            series
                .iter()
                .flat_map(|s| s.points.iter().map(|p| p.1))
                .fold(0.0, f64::max),
        ),
    };
    let (pw, ph) = (W - PAD_L - PAD_R, H - PAD_T - PAD_B);
    let x = |v: f64| PAD_L + v / x_max * pw;
    let y = |v: f64| PAD_T + ph - v / y_max * ph;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{t}"><title>{t}</title>"#,
        t = esc(title)
    );
    let _ = write!(s, r#"<text x="{PAD_L}" y="16" class="t">{}</text>"#, esc(title));
    for b in bands {
        let (x0, x1) = (x(b.start.max(0.0)), x(b.end.min(x_max)));
        let _ = write!(
            s,
            r#"<rect x="{x0:.1}" y="{PAD_T}" width="{:.1}" height="{ph}" fill="{}" opacity="0.18"><title>{}</title></rect><text x="{:.1}" y="{:.1}" class="b">{}</text>"#,
            (x1 - x0).max(1.0),
            b.color,
            esc(&b.label),
            x0 + 3.0,
            PAD_T + 11.0,
            esc(&b.label)
        );
    }
    let ticks: Vec<(f64, String)> = match y_ticks {
        Some(t) => t.iter().map(|(v, l)| (*v, l.to_string())).collect(),
        None => (0..=4)
            .map(|i| {
                (
                    y_max * i as f64 / 4.0,
                    format!("{}", (y_max * i as f64 / 4.0 * 100.0).round() / 100.0),
                )
            })
            .collect(),
    };
    for (v, l) in &ticks {
        let _ = write!(
            s,
            r##"<line x1="{PAD_L}" x2="{:.1}" y1="{yy:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" class="a" text-anchor="end">{}</text>"##,
            W - PAD_R,
            PAD_L - 4.0,
            y(*v) + 4.0,
            esc(l),
            yy = y(*v)
        );
    }
    for i in 0..=5 {
        let v = x_max * i as f64 / 5.0;
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" class="a" text-anchor="middle">{:.0}s</text>"#,
            x(v),
            H - PAD_B + 16.0,
            v
        );
    }
    let _ = write!(
        s,
        r#"<text x="12" y="{:.1}" class="a" transform="rotate(-90 12 {:.1})" text-anchor="middle">{}</text>"#,
        PAD_T + ph / 2.0,
        PAD_T + ph / 2.0,
        esc(y_label)
    );
    for (i, ser) in series.iter().enumerate() {
        let mut d = String::new();
        let mut prev: Option<(f64, f64)> = None;
        for &(px, py) in &ser.points {
            if d.is_empty() {
                let _ = write!(d, "M{:.1},{:.1}", x(px), y(py));
            } else {
                if ser.step {
                    if let Some((_, pv)) = prev {
                        let _ = write!(d, " L{:.1},{:.1}", x(px), y(pv));
                    }
                }
                let _ = write!(d, " L{:.1},{:.1}", x(px), y(py));
            }
            prev = Some((px, py));
        }
        let _ = write!(
            s,
            r#"<path d="{d}" fill="none" stroke="{}" stroke-width="1.8"/>"#,
            ser.color
        );
        let lx = PAD_L + 8.0 + i as f64 * 130.0;
        let _ = write!(
            s,
            r#"<rect x="{lx:.1}" y="{:.1}" width="10" height="3" fill="{}"/><text x="{:.1}" y="{:.1}" class="a">{}</text>"#,
            H - 10.0,
            ser.color,
            lx + 14.0,
            H - 6.0,
            esc(ser.name)
        );
    }
    s.push_str("</svg>");
    s
}

/// Horizontal bars with counts.
pub fn bar_chart(title: &str, bars: &[(&str, u64, &'static str)]) -> String {
    let max = bars.iter().map(|b| b.1).max().unwrap_or(0).max(1) as f64;
    let row = 26.0;
    let h = PAD_T + row * bars.len() as f64 + 10.0;
    let mut s = format!(
        r#"<svg viewBox="0 0 {W} {h}" width="{W}" height="{h}" role="img" aria-label="{t}"><title>{t}</title><text x="{PAD_L}" y="16" class="t">{t}</text>"#,
        t = esc(title)
    );
    for (i, (name, v, color)) in bars.iter().enumerate() {
        let yy = PAD_T + i as f64 * row;
        let w = (W - 260.0) * (*v as f64) / max;
        let _ = write!(
            s,
            r#"<text x="130" y="{:.1}" class="a" text-anchor="end">{}</text><rect x="136" y="{yy:.1}" width="{w:.1}" height="18" fill="{color}"/><text x="{:.1}" y="{:.1}" class="a">{v}</text>"#,
            yy + 13.0,
            esc(name),
            140.0 + w,
            yy + 13.0
        );
    }
    s.push_str("</svg>");
    s
}

/// The fault phases as the run had them (scaled by `--time-scale`).
fn fault_bands(experiment: &ValidatedExperiment, total: f64) -> Vec<Band> {
    experiment
        .fault_plan()
        .schedule
        .iter()
        .map(|p| Band {
            label: p.name.clone(),
            start: p.start_ms as f64 / 1000.0,
            end: p.end_ms.map_or(total, |e| e as f64 / 1000.0),
            color: "#e4572e",
        })
        .collect()
}

/// Each disruption that fired, as a band from its firing to its end (an
/// instant one gets a narrow band), labelled with its name.
fn disruption_bands(results: &RunResults) -> Vec<Band> {
    results
        .disruptions
        .iter()
        .filter_map(|d| {
            let start = d.fired_at_seconds?;
            let end = d.ended_at_seconds.unwrap_or(start).max(start + 0.5);
            Some(Band {
                label: d.name.clone(),
                start,
                end,
                color: "#6a4c93",
            })
        })
        .collect()
}

/// The disruptions' table: asked, fired, hit, recovered.
fn disruption_table(results: &RunResults) -> String {
    if results.disruptions.is_empty() {
        return String::new();
    }
    let secs = |v: Option<f64>, none: &str| v.map_or_else(|| none.to_string(), |s| format!("{s:.1} s"));
    let mut rows = String::new();
    for d in &results.disruptions {
        let hit = match (&d.error, d.hit.is_empty()) {
            (Some(e), _) => format!("error: {e}"),
            (None, true) => "nothing".into(),
            (None, false) => d.hit.join(", "),
        };
        let _ = write!(
            rows,
            "<tr><td>{}</td><td>{}</td><td>{:.1} s</td><td class=\"{}\">{}</td><td>{}</td><td class=\"{}\">{}</td></tr>",
            esc(&d.name),
            d.action.as_str(),
            d.at_seconds,
            if d.fired_at_seconds.is_some() { "ok" } else { "bad" },
            secs(d.fired_at_seconds, "did not fire"),
            esc(&hit),
            if d.recovery_seconds.is_some() { "ok" } else { "bad" },
            secs(d.recovery_seconds, "never recovered"),
        );
    }
    format!(
        "<h2>Disruptions</h2><table><tr><th>disruption</th><th>action</th><th>asked at</th><th>fired at</th><th>hit</th><th>recovery</th></tr>{rows}</table>"
    )
}

/// The whole report page.
pub fn render(
    experiment: &ValidatedExperiment,
    results: &RunResults,
    verdict: &Verdict,
    timeline: &[TimelinePoint],
) -> String {
    let name = experiment.name();
    let total = results.load_seconds.max(timeline.len() as f64);
    let mut bands = fault_bands(experiment, total);
    bands.extend(disruption_bands(results));
    let pts = |f: &dyn Fn(&TimelinePoint) -> f64| -> Vec<(f64, f64)> {
        timeline.iter().map(|p| (f64::from(p.second) + 1.0, f(p))).collect()
    };
    // latency exists only for seconds in which requests were sent (none while draining)
    let sampled = |f: &dyn Fn(&TimelinePoint) -> f64| -> Vec<(f64, f64)> {
        timeline
            .iter()
            .filter(|p| p.sent > 0)
            .map(|p| (f64::from(p.second) + 1.0, f(p)))
            .collect()
    };
    let latency = line_chart(
        "Order API latency (from intended send time)",
        "ms",
        total,
        &[
            Series {
                name: "p50",
                color: "#2e86ab",
                points: sampled(&|p| p.api_p50_ms),
                step: false,
            },
            Series {
                name: "p99",
                color: "#a23b72",
                points: sampled(&|p| p.api_p99_ms),
                step: false,
            },
        ],
        &bands,
        None,
    );
    let throughput = line_chart(
        "Throughput per second",
        "orders/s",
        total,
        &[
            line("sent", "#888", pts(&|p| p.sent as f64)),
            line("accepted", "#2e86ab", pts(&|p| p.accepted as f64)),
            line("paid", "#3bb273", pts(&|p| p.paid as f64)),
            line("payment calls", "#f18f01", pts(&|p| p.payment_calls as f64)),
            line("shed", "#c73e1d", pts(&|p| p.shed as f64)),
        ],
        &bands,
        None,
    );
    let breaker = line_chart(
        "Circuit breaker state",
        "state",
        total,
        &[Series {
            name: "breaker",
            color: "#5f0f40",
            points: pts(&|p| p.breaker_state as f64),
            step: true,
        }],
        &bands,
        Some(&BreakerState::ALL.map(|state| (state.gauge() as f64, state.as_str()))),
    );
    let queue = line_chart(
        "Queue depth (queued + running jobs)",
        "jobs",
        total,
        &[Series {
            name: "queue depth",
            color: "#2e86ab",
            points: pts(&|p| p.queue_depth as f64),
            step: false,
        }],
        &bands,
        None,
    );
    let o = &results.orders;
    let outcomes = bar_chart(
        "Orders by outcome",
        &[
            ("paid", o.paid, "#3bb273"),
            ("failed", o.failed, "#f18f01"),
            ("dead-lettered", o.dead_lettered, "#a23b72"),
            ("pending (stuck)", o.pending, "#c73e1d"),
            ("shed (503)", o.shed, "#888"),
            ("errors", o.errors, "#555"),
        ],
    );
    let (badge, color) = match verdict.result {
        VerdictResult::Passed => ("PASSED", "#3bb273"),
        VerdictResult::Failed => ("FAILED", "#c73e1d"),
        VerdictResult::Inconclusive => ("INCONCLUSIVE", "#f18f01"),
    };
    let mut rows = String::new();
    for r in &verdict.objectives {
        let _ = write!(
            rows,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td></tr>",
            esc(&r.name),
            esc(&r.target),
            esc(&r.observed),
            if r.passed { "ok" } else { "bad" },
            if r.passed { "passed" } else { "FAILED" }
        );
    }
    let reasons: String = verdict
        .inconclusive_reasons
        .iter()
        .map(|r| format!("<li>{}</li>", esc(r)))
        .collect();
    let results_json = esc(&serde_json::to_string_pretty(results).unwrap_or_default());
    format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>relab: {name}</title>
<style>body{{font:14px system-ui,sans-serif;margin:24px;max-width:820px;color:#222}}h1{{font-size:20px}}
.badge{{display:inline-block;padding:3px 10px;border-radius:4px;color:#fff;background:{color};font-weight:600}}
table{{border-collapse:collapse;margin:12px 0}}td,th{{border:1px solid #ddd;padding:4px 10px;text-align:left}}
.ok{{color:#3bb273}}.bad{{color:#c73e1d;font-weight:600}}svg{{display:block;margin:18px 0}}
.t{{font-size:13px;font-weight:600}}.a{{font-size:11px;fill:#444}}.b{{font-size:10px;fill:#c73e1d}}pre{{background:#f6f6f6;padding:10px;overflow:auto}}</style></head>
<body><h1>relab experiment <code>{name}</code> <span class="badge">{badge}</span></h1>
<p>{sent} orders sent, {accepted} accepted, success ratio {ratio:.4}, API p95 {p95:.1} ms, end-to-end p95 {e2e:.1} ms;
{calls} payment calls, {retries} retries, max queue depth {depth}; breaker not closed for {open:.0} s.</p>
<table><tr><th>objective</th><th>target</th><th>observed</th><th></th></tr>{rows}</table>
{reasons_block}
{disruptions}
{latency}{throughput}{breaker}{queue}{outcomes}
<h2>Results</h2><pre>{results_json}</pre></body></html>
"#,
        name = esc(name),
        sent = o.sent,
        accepted = o.accepted,
        ratio = results.success_ratio,
        p95 = results.api_latency_ms.p95,
        e2e = results.end_to_end_latency_ms.p95,
        calls = results.payment.calls,
        retries = results.retries.retries,
        depth = results.max_queue_depth,
        open = results.breaker.seconds_not_closed,
        disruptions = disruption_table(results),
        reasons_block = if reasons.is_empty() {
            String::new()
        } else {
            format!("<p>Inconclusive because:</p><ul>{reasons}</ul>")
        },
    )
}

/// Colours of the variants' lines and bars, in order.
const PALETTE: [&str; 8] = [
    "#2e86ab", "#c73e1d", "#3bb273", "#f18f01", "#5f0f40", "#6a4c93", "#8d6a1f", "#1b998b",
];

/// The report of a finished `relab run`: one run as [`render`] draws it; a
/// comparison (variants, or repeats of one configuration) with a
/// comparison section on top.
pub fn render_status(
    experiment: &ValidatedExperiment,
    status: &ReliabilityExperimentStatus,
    runs: &[LabRunOutput],
) -> String {
    let verdict = status.verdict.clone().unwrap_or_default();
    let last = runs.last().map(|r| r.output.timeline.as_slice()).unwrap_or_default();
    if status.variants.is_empty() {
        let results = status.results.clone().unwrap_or_default();
        return render(experiment, &results, &verdict, last);
    }
    let page = comparison_page(experiment, status, runs);
    match &status.results {
        // repeats of one configuration: the comparison, then the last run as usual
        Some(results) => render(experiment, results, &verdict, last).replacen("</h1>", &format!("</h1>{page}"), 1),
        None => page_shell(experiment.name(), &verdict, &page),
    }
}

fn badge(result: VerdictResult) -> (&'static str, &'static str) {
    match result {
        VerdictResult::Passed => ("PASSED", "#3bb273"),
        VerdictResult::Failed => ("FAILED", "#c73e1d"),
        VerdictResult::Inconclusive => ("INCONCLUSIVE", "#f18f01"),
    }
}

fn page_shell(name: &str, verdict: &Verdict, body: &str) -> String {
    let (text, color) = badge(verdict.result);
    let reasons: String = verdict
        .inconclusive_reasons
        .iter()
        .map(|r| format!("<li>{}</li>", esc(r)))
        .collect();
    format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>relab: {name}</title>
<style>body{{font:14px system-ui,sans-serif;margin:24px;max-width:820px;color:#222}}h1{{font-size:20px}}
.badge{{display:inline-block;padding:3px 10px;border-radius:4px;color:#fff;background:{color};font-weight:600}}
table{{border-collapse:collapse;margin:12px 0}}td,th{{border:1px solid #ddd;padding:4px 10px;text-align:left}}
.ok{{color:#3bb273}}.bad{{color:#c73e1d;font-weight:600}}svg{{display:block;margin:18px 0}}
.t{{font-size:13px;font-weight:600}}.a{{font-size:11px;fill:#444}}.b{{font-size:10px;fill:#c73e1d}}pre{{background:#f6f6f6;padding:10px;overflow:auto}}</style></head>
<body><h1>relab experiment <code>{name}</code> <span class="badge">{text}</span></h1>{reasons}{body}</body></html>
"#,
        name = esc(name),
        reasons = if reasons.is_empty() {
            String::new()
        } else {
            format!("<p>Inconclusive because:</p><ul>{reasons}</ul>")
        },
    )
}

/// Per objective, one bar per variant at its point estimate with the
/// interval as a whisker, and the target as a dashed line.
fn interval_bars(objective: &str, target: &str, variants: &[&VariantStatus]) -> String {
    let rows: Vec<(&str, relab_model::stats::Interval, VerdictResult)> = variants
        .iter()
        .filter_map(|v| {
            v.objectives
                .iter()
                .find(|o| o.name == objective)
                .map(|o| (v.name.as_str(), o.interval, o.result))
        })
        .collect();
    let target_value: Option<f64> = target
        .trim_start_matches(['>', '<', '=', ' '])
        .trim_end_matches(" ms")
        .trim()
        .parse()
        .ok();
    let max = rows
        .iter()
        .map(|(_, i, _)| i.upper)
        .chain(target_value)
        .fold(0.0_f64, f64::max);
    let max = nice_max(max * 1.05);
    let row = 26.0;
    let h = PAD_T + row * rows.len() as f64 + 24.0;
    let x = |v: f64| 150.0 + (W - 190.0) * (v / max).clamp(0.0, 1.0);
    let mut s = format!(
        r#"<svg viewBox="0 0 {W} {h}" width="{W}" height="{h}" role="img" aria-label="{t}"><title>{t}</title><text x="{PAD_L}" y="16" class="t">{t} (target {target})</text>"#,
        t = esc(objective),
        target = esc(target)
    );
    for (i, (name, interval, result)) in rows.iter().enumerate() {
        let yy = PAD_T + i as f64 * row;
        let color = PALETTE[i % PALETTE.len()];
        let _ = write!(
            s,
            r##"<text x="144" y="{ty:.1}" class="a" text-anchor="end">{n}</text><rect x="150" y="{yy:.1}" width="{w:.1}" height="16" fill="{color}" opacity="0.75"/><line x1="{lo:.1}" x2="{hi:.1}" y1="{my:.1}" y2="{my:.1}" stroke="#222" stroke-width="1.5"/><line x1="{lo:.1}" x2="{lo:.1}" y1="{y0:.1}" y2="{y1:.1}" stroke="#222"/><line x1="{hi:.1}" x2="{hi:.1}" y1="{y0:.1}" y2="{y1:.1}" stroke="#222"/><text x="{tx:.1}" y="{ty:.1}" class="a">{p:.4} [{l:.4}, {u:.4}] {r:?}</text>"##,
            ty = yy + 12.0,
            n = esc(name),
            w = (x(interval.point) - 150.0).max(1.0),
            lo = x(interval.lower),
            hi = x(interval.upper),
            my = yy + 8.0,
            y0 = yy + 2.0,
            y1 = yy + 14.0,
            tx = x(interval.upper) + 6.0,
            p = interval.point,
            l = interval.lower,
            u = interval.upper,
            r = result,
        );
    }
    if let Some(t) = target_value {
        let _ = write!(
            s,
            r##"<line x1="{tx:.1}" x2="{tx:.1}" y1="{PAD_T}" y2="{y1:.1}" stroke="#c73e1d" stroke-dasharray="4 3"/>"##,
            tx = x(t),
            y1 = h - 20.0
        );
    }
    s.push_str("</svg>");
    s
}

/// The comparison section: the variants' verdicts against their
/// expectations, the figures side by side, the recommendation, interval
/// bars per objective, and latency, payment calls and breaker state per
/// variant over time (each variant's first run).
fn comparison_page(
    experiment: &ValidatedExperiment,
    status: &ReliabilityExperimentStatus,
    runs: &[LabRunOutput],
) -> String {
    let variants: Vec<&VariantStatus> = status.variants.iter().collect();
    let mut out = String::from(r#"<section id="comparison"><h2>Comparison</h2>"#);
    let _ = write!(
        out,
        "<table><tr><th>variant</th><th>expect</th><th>verdict</th><th>met</th><th>runs</th></tr>"
    );
    for v in &variants {
        let met = v.expectation_met == Some(true);
        let _ = write!(
            out,
            r#"<tr class="variant" data-variant="{n}"><td>{n}</td><td>{e:?}</td><td>{r}</td><td class="{c}">{m}</td><td>{k}</td></tr>"#,
            n = esc(&v.name),
            e = v.expect,
            r = v.verdict.map_or("not run".to_string(), |r| format!("{r:?}")),
            c = if met { "ok" } else { "bad" },
            m = if met { "yes" } else { "NO" },
            k = v.runs.len(),
        );
    }
    out.push_str("</table>");
    if let Some(c) = &status.comparison {
        out.push_str("<table><tr><th>variant</th><th>success</th><th>API p95 / p99 ms</th><th>e2e p95 / p99 ms</th><th>calls / paid</th><th>retries</th><th>breaker opened</th><th>dead letters</th><th>shed</th></tr>");
        for r in c.rows.iter().chain(c.ratio.iter()) {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{:.4}</td><td>{:.1} / {:.1}</td><td>{:.1} / {:.1}</td><td>{:.2}</td><td>{:.0}</td><td>{:.0}</td><td>{:.0}</td><td>{:.0}</td></tr>",
                esc(&r.variant),
                r.success_ratio,
                r.api_p95_ms,
                r.api_p99_ms,
                r.end_to_end_p95_ms,
                r.end_to_end_p99_ms,
                r.payment_calls_per_paid_order,
                r.retries,
                r.breaker_openings,
                r.dead_letters,
                r.shed
            );
        }
        out.push_str("</table>");
    }
    if let Some(r) = &status.recommendation {
        let _ = write!(
            out,
            r#"<p id="recommendation"><b>Recommendation:</b> {}<br><small>{}</small></p>"#,
            esc(&r.message),
            esc(&r.rule)
        );
    }
    let mut names: Vec<(String, String)> = Vec::new();
    for v in &variants {
        for o in &v.objectives {
            if !names.iter().any(|(n, _)| *n == o.name) {
                names.push((o.name.clone(), o.target.clone()));
            }
        }
    }
    for (name, target) in &names {
        out.push_str(&interval_bars(name, target, &variants));
    }
    // lines over time: each variant's first run
    let first = |name: &str| {
        runs.iter()
            .find(|r| r.variant.as_deref().unwrap_or(experiment.name()) == name && r.repeat == 0)
            .map(|r| r.output.timeline.as_slice())
            .unwrap_or_default()
    };
    let total = variants.iter().map(|v| first(&v.name).len()).max().unwrap_or(1) as f64;
    let bands = fault_bands(experiment, total);
    let lines = |f: &dyn Fn(&TimelinePoint) -> f64, only_sent: bool| -> Vec<Series> {
        variants
            .iter()
            .enumerate()
            .map(|(i, v)| Series {
                name: &v.name,
                color: PALETTE[i % PALETTE.len()],
                points: first(&v.name)
                    .iter()
                    .filter(|p| !only_sent || p.sent > 0)
                    .map(|p| (f64::from(p.second) + 1.0, f(p)))
                    .collect(),
                step: false,
            })
            .collect()
    };
    out.push_str(&line_chart(
        "API p99 by variant (first run)",
        "ms",
        total,
        &lines(&|p| p.api_p99_ms, true),
        &bands,
        None,
    ));
    out.push_str(&line_chart(
        "Payment calls per second by variant (first run)",
        "calls/s",
        total,
        &lines(&|p| p.payment_calls as f64, false),
        &bands,
        None,
    ));
    let mut breaker = lines(&|p| p.breaker_state as f64, false);
    for b in &mut breaker {
        b.step = true;
    }
    out.push_str(&line_chart(
        "Circuit breaker state by variant (first run)",
        "state",
        total,
        &breaker,
        &bands,
        Some(&BreakerState::ALL.map(|state| (state.gauge() as f64, state.as_str()))),
    ));
    out.push_str("</section>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_self_contained_svg_with_shaded_phases() {
        let svg = line_chart(
            "x",
            "ms",
            30.0,
            &[Series {
                name: "p50",
                color: "#000",
                points: vec![(1.0, 5.0), (2.0, 7.0)],
                step: false,
            }],
            &[Band {
                label: "outage".into(),
                start: 10.0,
                end: 20.0,
                color: "#f00",
            }],
            None,
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("outage") && svg.contains("<path d=\"M"));
        assert!(!svg.contains("http://") || svg.matches("http://").count() == 0);
    }

    #[test]
    fn every_disruption_is_a_band_and_a_row_and_one_that_did_not_fire_is_marked() {
        use relab_model::disruptions::{DisruptionAction, DisruptionResult};
        let d = |name: &str, fired: Option<f64>, recovery: Option<f64>| DisruptionResult {
            name: name.into(),
            action: DisruptionAction::DatabaseOutage,
            at_seconds: 10.0,
            fired_at_seconds: fired,
            ended_at_seconds: fired.map(|f| f + 5.0),
            hit: fired
                .map(|_| vec!["3 connections reset".to_string()])
                .unwrap_or_default(),
            recovered_at_seconds: recovery.map(|r| r + 15.0),
            recovery_seconds: recovery,
            error: None,
        };
        let results = RunResults {
            disruptions: vec![d("db-cut", Some(10.2), Some(2.5)), d("late", None, None)],
            ..RunResults::default()
        };
        let bands = disruption_bands(&results);
        assert_eq!(bands.len(), 1, "only what fired is drawn");
        assert_eq!(
            (bands[0].label.as_str(), bands[0].start, bands[0].end),
            ("db-cut", 10.2, 15.2)
        );
        let table = disruption_table(&results);
        assert!(table.contains("<td>db-cut</td><td>DatabaseOutage</td><td>10.0 s</td><td class=\"ok\">10.2 s</td><td>3 connections reset</td><td class=\"ok\">2.5 s</td>"), "{table}");
        assert!(
            table.contains("did not fire") && table.contains("never recovered"),
            "{table}"
        );
        assert_eq!(
            disruption_table(&RunResults::default()),
            "",
            "no table without disruptions"
        );
    }

    #[test]
    fn nice_axis_maxima() {
        assert_eq!(nice_max(7.3), 10.0);
        assert_eq!(nice_max(230.0), 250.0);
        assert_eq!(nice_max(0.0), 1.0);
    }
}
