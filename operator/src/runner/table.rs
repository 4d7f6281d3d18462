//! The results table and verdict as printed to a terminal.

use crate::crd::{ReliabilityExperimentStatus, VerdictResult};
use std::fmt::Write;

pub fn render(name: &str, status: &ReliabilityExperimentStatus) -> String {
    let mut s = String::new();
    if !status.variants.is_empty() {
        s.push_str(&variants(name, status));
    }
    let Some(r) = &status.results else {
        if status.variants.is_empty() {
            return format!("{name}: no results\n");
        }
        verdict(&mut s, status);
        return s;
    };
    let o = &r.orders;
    let _ = writeln!(s, "\nexperiment {name}");
    let _ = writeln!(
        s,
        "  orders      sent {} | accepted {} | shed {} | rejected {} | errors {} | late sends {}",
        o.sent, o.accepted, o.shed, o.rejected, o.errors, o.late_sends
    );
    let _ = writeln!(
        s,
        "  outcomes    paid {} | failed {} | dead-lettered {} | stuck {}   success ratio {:.4}",
        o.paid, o.failed, o.dead_lettered, o.pending, r.success_ratio
    );
    let l = &r.api_latency_ms;
    let _ = writeln!(
        s,
        "  API ms      p50 {:.1} | p90 {:.1} | p95 {:.1} | p99 {:.1} | max {:.1}  ({} samples)",
        l.p50, l.p90, l.p95, l.p99, l.max, l.count
    );
    let e = &r.end_to_end_latency_ms;
    let _ = writeln!(
        s,
        "  e2e ms      p50 {:.1} | p90 {:.1} | p95 {:.1} | p99 {:.1} | max {:.1}",
        e.p50, e.p90, e.p95, e.p99, e.max
    );
    let failures: Vec<String> = r
        .payment
        .failures_by_reason
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    let _ = writeln!(
        s,
        "  payment     calls {} | charges {} | failures: {}",
        r.payment.calls,
        r.payment.charges,
        if failures.is_empty() {
            "none".into()
        } else {
            failures.join(", ")
        }
    );
    let i = &r.payment.injected;
    let _ = writeln!(
        s,
        "  injected    failure {:.3} | timeout {:.3} | lost response {:.3} | declined {:.3} | 429 {:.3}  (of {} calls)",
        i.failure_rate, i.timeout_rate, i.lost_response_rate, i.decline_rate, i.rate_limit_rate, i.calls
    );
    let rt = &r.retries;
    let _ = writeln!(
        s,
        "  retry loops succeeded {} | gave up {} | permanent {} | breaker-rejected {} | retries {}",
        rt.succeeded, rt.gave_up, rt.permanent, rt.breaker_rejected, rt.retries
    );
    let transitions: Vec<String> = r.breaker.transitions.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let _ = writeln!(
        s,
        "  breaker     {} | not closed {:.0} s",
        if transitions.is_empty() {
            "no transitions".to_string()
        } else {
            transitions.join(", ")
        },
        r.breaker.seconds_not_closed
    );
    let inv = &r.invariants;
    let _ = writeln!(
        s,
        "  invariants  lost {} | stuck {} | double charges {} | charges without order {} | paid without charge {}",
        inv.lost_orders, inv.stuck_orders, inv.double_charges, inv.charges_without_order, inv.paid_without_charge
    );
    let _ = writeln!(
        s,
        "  queue       max depth {} | dead letters {}",
        r.max_queue_depth, r.dead_letters
    );
    verdict(&mut s, status);
    s
}

/// The variants side by side, each objective with its interval, and the
/// sweep's recommendation.
fn variants(name: &str, status: &ReliabilityExperimentStatus) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "\nexperiment {name}: {} variant(s)", status.variants.len());
    let _ = writeln!(
        s,
        "  {:<34} {:<7} {:<13} {:<4} {:>4} {:>8} {:>9} {:>9} {:>9} {:>7} {:>6} {:>6} {:>6}",
        "variant",
        "expect",
        "verdict",
        "met",
        "runs",
        "success",
        "API p95",
        "e2e p95",
        "calls/paid",
        "retries",
        "opened",
        "dead",
        "shed"
    );
    for v in &status.variants {
        let r = v.results.clone().unwrap_or_default();
        let _ = writeln!(
            s,
            "  {:<34} {:<7} {:<13} {:<4} {:>4} {:>8.4} {:>9.1} {:>9.1} {:>9.2} {:>7} {:>6} {:>6} {:>6}",
            v.name,
            format!("{:?}", v.expect),
            v.verdict.map_or("not run".to_string(), |r| format!("{r:?}")),
            if v.expectation_met == Some(true) { "yes" } else { "NO" },
            v.runs.len(),
            r.success_ratio,
            r.api_latency_ms.p95,
            r.end_to_end_latency_ms.p95,
            r.calls_per_paid_order(),
            r.retries.retries,
            r.breaker_openings(),
            r.dead_letters,
            r.orders.shed
        );
        for o in &v.objectives {
            let _ = writeln!(
                s,
                "      {:<24} {:<14} {:.4} [{:.4}, {:.4}] {:?}",
                o.name, o.target, o.interval.point, o.interval.lower, o.interval.upper, o.result
            );
        }
    }
    if let Some(ratio) = status.comparison.as_ref().and_then(|c| c.ratio.as_ref()) {
        let _ = writeln!(
            s,
            "  {}: payment calls x{:.2}, calls per paid order x{:.2}, retries x{:.2}, API p95 x{:.2}",
            ratio.variant, ratio.payment_calls, ratio.payment_calls_per_paid_order, ratio.retries, ratio.api_p95_ms
        );
    }
    if let Some(r) = &status.recommendation {
        let _ = writeln!(s, "  recommendation: {}", r.message);
        let _ = writeln!(s, "    ({})", r.rule);
    }
    s
}

fn verdict(s: &mut String, status: &ReliabilityExperimentStatus) {
    if let Some(b) = &status.baseline {
        let _ = writeln!(s, "\n  baseline {}: {:?}", b.baseline, b.result);
        for f in &b.figures {
            let _ = writeln!(s, "    {}", f.message);
        }
    }
    if let Some(v) = &status.verdict {
        let _ = writeln!(s, "\n  {:<24} {:<14} {:<28} result", "objective", "target", "observed");
        for row in &v.objectives {
            let _ = writeln!(
                s,
                "  {:<24} {:<14} {:<28} {}",
                row.name,
                row.target,
                row.observed,
                if row.passed { "passed" } else { "FAILED" }
            );
        }
        let word = match v.result {
            VerdictResult::Passed => "PASSED: every objective met",
            VerdictResult::Failed => "FAILED: objectives not met",
            VerdictResult::Inconclusive => "INCONCLUSIVE: the run did not test what it claimed",
        };
        let _ = writeln!(s, "\n  verdict: {word}");
        for reason in &v.inconclusive_reasons {
            let _ = writeln!(s, "    - {reason}");
        }
    }
}
