//! The results table and verdict as printed to a terminal.

use crate::crd::{ReliabilityExperimentStatus, VerdictResult};
use std::fmt::Write;

pub fn render(name: &str, status: &ReliabilityExperimentStatus) -> String {
    let mut s = String::new();
    let Some(r) = &status.results else {
        return format!("{name}: no results\n");
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
    s
}
