//! Prometheus recording and alerting rules: SLO burn rates of every running
//! experiment against its own objectives.
//!
//! The objectives come from the operator's `/metrics`
//! (`relab_experiment_objective_success_ratio` and
//! `relab_experiment_objective_latency_budget`, see
//! [`crate::controller::metrics`]), so one rule set serves every experiment.
//! Window sizes are scaled to experiments, which last minutes rather than a
//! month: the classic multi-window pairs (1 h/5 m at 14.4×, 6 h/30 m at 6×)
//! become 5 m/1 m at 14.4× (fast burn, page) and 30 m/5 m at 6× (slow burn,
//! ticket).
//!
//! * Success ratio: error ratio = (failed + dead-lettered) / (paid + failed +
//!   dead-lettered) jobs; burn rate = error ratio / (1 − objective).
//! * Latency (`apiLatency` on POST /orders, `endToEndLatency` on the order's
//!   life): slow ratio = share of observations above the objective's bound;
//!   burn rate = slow ratio / (1 − percentile). The bound is the largest
//!   histogram bucket at or below `maxMs` (the operator exports it as `le`),
//!   so the alert is never laxer than the objective.

use serde_json::{json, Value};

/// Rate windows of the recording rules.
pub const WINDOWS: [&str; 3] = ["1m", "5m", "30m"];

/// (kind label, histogram, extra selector) of the latency objectives.
const LATENCY: [(&str, &str, &str); 2] = [
    (
        "api",
        "relab_http_request_duration_seconds",
        "route=\"/orders\", method=\"POST\"",
    ),
    ("e2e", "relab_order_e2e_seconds", ""),
];

const BY: &str = "namespace, experiment";

fn success_rules() -> Vec<Value> {
    WINDOWS
        .iter()
        .flat_map(|w| {
            // `or 0 * paid`: a run without a single failure has no failed or
            // dead_lettered series at all, and its error ratio is 0, not absent
            let error_ratio = format!(
                "(\n  sum by ({BY}) (rate(relab_worker_jobs_total{{outcome=~\"failed|dead_lettered\"}}[{w}]))\n  \
                 or 0 * sum by ({BY}) (rate(relab_worker_jobs_total{{outcome=\"paid\"}}[{w}]))\n)\n\
                 /\n\
                 sum by ({BY}) (rate(relab_worker_jobs_total{{outcome=~\"paid|failed|dead_lettered\"}}[{w}]))"
            );
            [
                json!({ "record": format!("relab:order_error_ratio:rate{w}"), "expr": error_ratio }),
                json!({
                    "record": format!("relab:order_error_budget_burn:rate{w}"),
                    "expr": format!(
                        "relab:order_error_ratio:rate{w}\n\
                         / on ({BY}) group_left()\n\
                         (1 - max by ({BY}) (relab_experiment_objective_success_ratio))"
                    ),
                }),
            ]
        })
        .collect()
}

fn latency_rules() -> Vec<Value> {
    let mut out = Vec::new();
    for (kind, histogram, extra) in LATENCY {
        let sel = |more: &str| match (extra.is_empty(), more.is_empty()) {
            (true, _) => more.to_string(),
            (false, true) => extra.to_string(),
            (false, false) => format!("{extra}, {more}"),
        };
        for w in WINDOWS {
            // share of observations at or below each bucket bound, then kept
            // only for the bound each objective names (one series per objective)
            let fast = format!(
                "(\n  sum by ({BY}, le) (rate({histogram}_bucket{{{}}}[{w}]))\n  / on ({BY}) group_left()\n  sum by ({BY}) (rate({histogram}_count{{{}}}[{w}]))\n)\n\
                 * on ({BY}, le) group_right()\n\
                 (max by ({BY}, percentile, le) (relab_experiment_objective_latency_budget{{kind=\"{kind}\"}}) > bool 0)",
                sel(""),
                sel(""),
            );
            out.push(json!({
                "record": format!("relab:{kind}_latency_slow_ratio:rate{w}"),
                "expr": format!("1 - (\n{fast}\n)"),
            }));
            out.push(json!({
                "record": format!("relab:{kind}_latency_budget_burn:rate{w}"),
                "expr": format!(
                    "relab:{kind}_latency_slow_ratio:rate{w}\n\
                     / on ({BY}, percentile, le)\n\
                     max by ({BY}, percentile, le) (relab_experiment_objective_latency_budget{{kind=\"{kind}\"}})"
                ),
            }));
        }
    }
    out
}

/// A multi-window burn-rate alert over `burn` (a recording rule prefix).
fn burn_alert(name: &str, burn: &str, factor: f64, long: &str, short: &str, severity: &str, what: &str) -> Value {
    json!({
        "alert": name,
        "expr": format!("{burn}:rate{long} > {factor}\nand\n{burn}:rate{short} > {factor}"),
        "for": "1m",
        "labels": { "severity": severity },
        "annotations": {
            "summary": format!("{{{{ $labels.namespace }}}}/{{{{ $labels.experiment }}}}: {what} budget burning {factor}x too fast"),
            "description": format!(
                "{what} error budget of ReliabilityExperiment {{{{ $labels.namespace }}}}/{{{{ $labels.experiment }}}} \
                 burns at {{{{ $value | humanize }}}}x over {long} (and above {factor}x over {short}). \
                 At this rate the objective will not be met. \
                 Look at its dashboard (kubectl get rx -n {{{{ $labels.namespace }}}} {{{{ $labels.experiment }}}} -o jsonpath='{{.status.dashboard}}')."
            ),
            "runbook_url": "https://example.invalid/relab/docs/runbooks.md#slo-burn-rate",
        },
    })
}

fn alerts() -> Vec<Value> {
    let mut out = vec![
        burn_alert(
            "RelabSuccessRatioFastBurn",
            "relab:order_error_budget_burn",
            14.4,
            "5m",
            "1m",
            "critical",
            "success ratio",
        ),
        burn_alert(
            "RelabSuccessRatioSlowBurn",
            "relab:order_error_budget_burn",
            6.0,
            "30m",
            "5m",
            "warning",
            "success ratio",
        ),
    ];
    for (kind, name, what) in [
        ("api", "RelabApiLatency", "API latency"),
        ("e2e", "RelabEndToEndLatency", "end-to-end latency"),
    ] {
        let burn = format!("relab:{kind}_latency_budget_burn");
        out.push(burn_alert(
            &format!("{name}FastBurn"),
            &burn,
            14.4,
            "5m",
            "1m",
            "critical",
            what,
        ));
        out.push(burn_alert(
            &format!("{name}SlowBurn"),
            &burn,
            6.0,
            "30m",
            "5m",
            "warning",
            what,
        ));
    }
    out.push(json!({
        "alert": "RelabOperatorReconcileErrors",
        "expr": "sum by (kind) (rate(relab_operator_reconcile_errors_total[5m])) > 0.1",
        "for": "5m",
        "labels": { "severity": "warning" },
        "annotations": {
            "summary": "relab operator: {{ $labels.kind }} reconcile errors",
            "description": "The relab operator fails {{ $value | humanize }} reconciles/s of kind {{ $labels.kind }}; see its logs.",
            "runbook_url": "https://example.invalid/relab/docs/runbooks.md#operator-errors",
        },
    }));
    out
}

/// The rule groups, as in a Prometheus rule file (`groups:`) or the `spec` of
/// a PrometheusRule.
pub fn groups() -> Value {
    json!({
        "groups": [
            { "name": "relab.slo.recording", "interval": "15s", "rules": success_rules().into_iter().chain(latency_rules()).collect::<Vec<_>>() },
            { "name": "relab.slo.alerts", "interval": "15s", "rules": alerts() },
        ]
    })
}

/// [`groups`] as YAML, with a header saying where it comes from.
pub fn rules_yaml() -> String {
    format!(
        "# Generated by `relab monitoring --write .` from operator/src/monitoring/rules.rs: do not edit.\n{}",
        serde_yaml::to_string(&groups()).expect("rules serialize")
    )
}
