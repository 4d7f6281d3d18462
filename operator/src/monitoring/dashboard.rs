//! Grafana dashboards (JSON model, schemaVersion 39), built here so that the
//! panels' PromQL and the lab's metric names live in one crate and are tested
//! against a real Prometheus (operator/tests/monitoring.rs).
//!
//! * [`experiment`]: one dashboard per experiment, put in a ConfigMap by the
//!   operator (`status.dashboard` names it). Its queries select
//!   `{namespace="…", experiment="…"}`: the labels the chart's PodMonitor
//!   gives every series scraped from an experiment's pods. Its time window
//!   is the run's; fault phases and breaker openings are annotations.
//! * [`overview`]: one dashboard comparing experiments (shipped in the chart).

use crate::crd::{ReliabilityExperimentSpec, ReliabilityExperimentStatus};
use relab_model::results::BreakerState;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// Grafana's dashboard JSON schema version these dashboards follow.
pub const SCHEMA_VERSION: u32 = 39;
/// The `datasource` template variable every panel uses.
const DATASOURCE: &str = "${datasource}";
/// Rate window of every panel (fixed, so the queries run as written in
/// Prometheus too; Grafana's `$__rate_interval` would not).
pub const RATE_WINDOW: &str = "1m";

/// One panel of a dashboard.
struct Panel {
    title: &'static str,
    description: &'static str,
    kind: &'static str,
    unit: &'static str,
    targets: Vec<(String, &'static str)>,
    /// Red threshold lines (objectives), in the panel's unit.
    thresholds: Vec<f64>,
    /// Value mappings (e.g. breaker state numbers to names).
    mappings: Value,
}

impl Panel {
    fn new(title: &'static str, description: &'static str, unit: &'static str) -> Self {
        Self {
            title,
            description,
            kind: "timeseries",
            unit,
            targets: Vec::new(),
            thresholds: Vec::new(),
            mappings: json!([]),
        }
    }

    fn target(mut self, expr: String, legend: &'static str) -> Self {
        self.targets.push((expr, legend));
        self
    }

    fn to_json(&self, id: usize, x: u32, y: u32, w: u32) -> Value {
        let targets: Vec<Value> = self
            .targets
            .iter()
            .enumerate()
            .map(|(i, (expr, legend))| {
                json!({
                    "refId": char::from(b'A' + i as u8).to_string(),
                    "datasource": { "type": "prometheus", "uid": DATASOURCE },
                    "expr": expr,
                    "legendFormat": legend,
                    "range": true,
                })
            })
            .collect();
        let mut steps = vec![json!({ "color": "green", "value": null })];
        steps.extend(self.thresholds.iter().map(|t| json!({ "color": "red", "value": t })));
        let mut custom = json!({});
        if self.kind == "timeseries" {
            custom = json!({
                "drawStyle": "line",
                "lineWidth": 1,
                "fillOpacity": 10,
                "showPoints": "never",
                "thresholdsStyle": { "mode": if self.thresholds.is_empty() { "off" } else { "line" } },
            });
        }
        json!({
            "id": id,
            "type": self.kind,
            "title": self.title,
            "description": self.description,
            "datasource": { "type": "prometheus", "uid": DATASOURCE },
            "gridPos": { "h": 8, "w": w, "x": x, "y": y },
            "targets": targets,
            "fieldConfig": {
                "defaults": {
                    "unit": self.unit,
                    "custom": custom,
                    "mappings": self.mappings,
                    "thresholds": { "mode": "absolute", "steps": steps },
                },
                "overrides": [],
            },
            "options": {
                "legend": { "displayMode": "list", "placement": "bottom", "showLegend": true },
                "tooltip": { "mode": "multi", "sort": "none" },
            },
        })
    }
}

/// Lays panels out two per row.
fn layout(panels: &[Panel]) -> Vec<Value> {
    panels
        .iter()
        .enumerate()
        .map(|(i, p)| p.to_json(i + 1, (i as u32 % 2) * 12, (i as u32 / 2) * 8, 12))
        .collect()
}

fn rate(metric: &str, sel: &str) -> String {
    format!("rate({metric}{{{sel}}}[{RATE_WINDOW}])")
}

/// `histogram_quantile` of a latency histogram, in milliseconds.
fn quantile_ms(q: f64, bucket: &str, sel: &str) -> String {
    format!("1000 * histogram_quantile({q}, sum by (le) ({}))", rate(bucket, sel))
}

/// The PromQL label selector of one experiment's series.
pub fn selector(namespace: &str, name: &str) -> String {
    format!("namespace=\"{namespace}\", experiment=\"{name}\"")
}

/// The per-experiment panels over `sel`.
fn experiment_panels(sel: &str, spec: &ReliabilityExperimentSpec) -> Vec<Panel> {
    let api = format!("{sel}, route=\"/orders\", method=\"POST\"");
    let ms = |objectives: &[crate::crd::LatencyObjective]| objectives.iter().map(|o| o.max_ms).collect::<Vec<_>>();
    let mut api_latency = Panel::new(
        "API latency (POST /orders)",
        "Order create latency percentiles; red lines are the apiLatency objectives.",
        "ms",
    )
    .target(
        quantile_ms(0.5, "relab_http_request_duration_seconds_bucket", &api),
        "p50",
    )
    .target(
        quantile_ms(0.95, "relab_http_request_duration_seconds_bucket", &api),
        "p95",
    )
    .target(
        quantile_ms(0.99, "relab_http_request_duration_seconds_bucket", &api),
        "p99",
    );
    api_latency.thresholds = ms(&spec.objectives.api_latency);
    let mut e2e = Panel::new(
        "End-to-end latency (created → final)",
        "Time from order created to paid/failed/dead-lettered; red lines are the endToEndLatency objectives.",
        "ms",
    )
    .target(quantile_ms(0.5, "relab_order_e2e_seconds_bucket", sel), "p50")
    .target(quantile_ms(0.95, "relab_order_e2e_seconds_bucket", sel), "p95")
    .target(quantile_ms(0.99, "relab_order_e2e_seconds_bucket", sel), "p99");
    e2e.thresholds = ms(&spec.objectives.end_to_end_latency);
    let mut breaker = Panel::new(
        "Circuit breaker state",
        "0 closed, 1 open, 2 half_open (per order-service pod).",
        "none",
    )
    .target(format!("max by (pod) (relab_breaker_state{{{sel}}})"), "{{pod}}");
    breaker.kind = "state-timeline";
    let options: serde_json::Map<String, Value> = BreakerState::ALL
        .iter()
        .map(|state| {
            let color = match state {
                BreakerState::Closed => "green",
                BreakerState::Open => "red",
                BreakerState::HalfOpen => "yellow",
            };
            let value = state.gauge();
            (
                value.to_string(),
                json!({ "text": state.as_str(), "color": color, "index": value }),
            )
        })
        .collect();
    breaker.mappings = json!([{ "type": "value", "options": options }]);
    vec![
        Panel::new(
            "Throughput",
            "Orders accepted by the API and paid by the workers, per second.",
            "reqps",
        )
        .target(format!("sum({})", rate("relab_orders_created_total", sel)), "accepted")
        .target(
            format!(
                "sum({})",
                rate("relab_worker_jobs_total", &format!("{sel}, outcome=\"paid\""))
            ),
            "paid",
        )
        .target(format!("sum({})", rate("relab_load_shed_total", sel)), "shed (503)"),
        api_latency,
        e2e,
        Panel::new(
            "Job outcomes",
            "Payment jobs by outcome per second (paid, failed, retry_scheduled, dead_lettered, deferred...).",
            "ops",
        )
        .target(
            format!("sum by (outcome) ({})", rate("relab_worker_jobs_total", sel)),
            "{{outcome}}",
        ),
        Panel::new(
            "Retries by result",
            "Retry loops by how they ended, and payment calls that were retries.",
            "ops",
        )
        .target(
            format!("sum by (result) ({})", rate("relab_retry_loops_total", sel)),
            "{{result}}",
        )
        .target(format!("sum({})", rate("relab_retries_total", sel)), "retry calls"),
        breaker,
        Panel::new("Queue depth", "Jobs queued or running (sampled by the API).", "short")
            .target(format!("max(relab_queue_depth{{{sel}}})"), "queued or running"),
        Panel::new(
            "Dead letters",
            "Dead-lettered jobs (sampled), and dead-letter replays.",
            "short",
        )
        .target(format!("max(relab_dead_letter_depth{{{sel}}})"), "dead-lettered")
        .target(
            format!("sum(increase(relab_dead_letter_replays_total{{{sel}}}[{RATE_WINDOW}]))"),
            "replayed",
        ),
        Panel::new(
            "Payment failures by reason",
            "Failed payment calls as the order service saw them (timeout, status_5xx, rate_limited, declined...).",
            "ops",
        )
        .target(
            format!("sum by (reason) ({})", rate("relab_payment_failures_total", sel)),
            "{{reason}}",
        ),
        Panel::new(
            "Payment mock: calls by injected outcome",
            "What the payment mock did to each charge call (the faults injected).",
            "ops",
        )
        .target(
            format!("sum by (outcome) ({})", rate("relab_mock_calls_total", sel)),
            "{{outcome}}",
        ),
    ]
}

/// A multi-value query variable with "All" (`.*`).
fn variable(name: &str, query: &str) -> Value {
    json!({
        "name": name,
        "type": "query",
        "datasource": { "type": "prometheus", "uid": DATASOURCE },
        "query": { "query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery" },
        "definition": query,
        "includeAll": true,
        "multi": true,
        "allValue": ".*",
        "current": {},
        "refresh": 2,
        "sort": 1,
        "hide": 0,
        "options": [],
    })
}

fn datasource_variable() -> Value {
    json!({
        "name": "datasource",
        "label": "Prometheus",
        "type": "datasource",
        "query": "prometheus",
        "current": {},
        "hide": 0,
        "refresh": 1,
        "options": [],
    })
}

fn builtin_annotations() -> Value {
    json!({
        "builtIn": 1,
        "datasource": { "type": "grafana", "uid": "-- Grafana --" },
        "enable": true,
        "hide": true,
        "iconColor": "rgba(0, 211, 255, 1)",
        "name": "Annotations & Alerts",
        "type": "dashboard",
    })
}

/// Grafana dashboard uids are at most 40 characters: a stable hash of the
/// experiment's namespace and name.
pub fn uid(namespace: &str, name: &str) -> String {
    let digest = Sha256::digest(format!("{namespace}/{name}").as_bytes());
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("relab-{hex}")
}

/// Phases of the fault schedule, for the dashboard's description.
fn schedule_text(spec: &ReliabilityExperimentSpec) -> String {
    if spec.payment.faults_schedule.is_empty() {
        return "no fault schedule".into();
    }
    let phases: Vec<String> = spec
        .payment
        .faults_schedule
        .iter()
        .map(|p| match p.end_seconds {
            Some(end) => format!("{} {}–{} s", p.name, p.start_seconds, end),
            None => format!("{} from {} s", p.name, p.start_seconds),
        })
        .collect();
    format!("fault phases after the load starts: {}", phases.join(", "))
}

/// The disruptions after the load starts: each as asked, and once the run
/// is over, when it fired and how long recovery took.
fn disruptions_text(spec: &ReliabilityExperimentSpec, status: &ReliabilityExperimentStatus) -> String {
    let seen = status
        .results
        .as_ref()
        .map(|r| r.disruptions.as_slice())
        .unwrap_or_default();
    let items: Vec<String> = spec
        .disruptions
        .iter()
        .map(|d| {
            let asked = match d.duration_seconds {
                Some(secs) => format!(
                    "{} {} {}–{} s",
                    d.name,
                    d.action.as_str(),
                    d.at_seconds,
                    d.at_seconds + secs
                ),
                None => format!("{} {} at {} s", d.name, d.action.as_str(), d.at_seconds),
            };
            match seen.iter().find(|r| r.name == d.name) {
                None => asked,
                Some(r) => match (r.fired_at_seconds, r.recovery_seconds) {
                    (None, _) => format!("{asked} (did not fire)"),
                    (Some(f), None) => format!("{asked} (fired {f:.1} s, never recovered)"),
                    (Some(f), Some(rec)) => format!("{asked} (fired {f:.1} s, recovered in {rec:.1} s)"),
                },
            }
        })
        .collect();
    format!("disruptions after the load starts: {}", items.join(", "))
}

/// `3`, or `3s2` for scheduled run 2 of generation 3.
fn run_text(status: &ReliabilityExperimentStatus) -> String {
    let generation = status.observed_generation.unwrap_or(0);
    match status.scheduled_run {
        Some(n) => format!("{generation}s{n}"),
        None => generation.to_string(),
    }
}

/// What a drill as an operation adds: why the run stopped early, and the
/// schedule's next run.
fn operations_text(spec: &ReliabilityExperimentSpec, status: &ReliabilityExperimentStatus) -> String {
    let mut parts = Vec::new();
    if let Some(stopped) = status.results.as_ref().and_then(|r| r.stopped.as_ref()) {
        parts.push(format!(
            "stopped early by {} at {:.1} s: {}",
            stopped.condition, stopped.at_seconds, stopped.observed
        ));
    }
    if !spec.disruptions.is_empty() {
        parts.push(disruptions_text(spec, status));
    }
    if let Some(schedule) = &spec.schedule {
        let next = match &status.next_run_time {
            Some(t) => format!("next run {t}"),
            None => "suspended".into(),
        };
        parts.push(format!(
            "scheduled {:?} in {}: {next}",
            schedule.cron, schedule.time_zone
        ));
    }
    parts.iter().map(|p| format!("; {p}")).collect()
}

/// The dashboard of one experiment: its run's time window (start − 1 min to
/// finish + 1 min, or to now while it runs), fault phases and breaker
/// openings as annotations, and the panels of [`experiment_panels`].
pub fn experiment(
    namespace: &str,
    name: &str,
    spec: &ReliabilityExperimentSpec,
    status: &ReliabilityExperimentStatus,
) -> Value {
    // a comparison's pods carry their variant (`relab.dev/variant`, relabelled
    // to `variant`): every series is selected per variant
    let compared = !spec.variants.is_empty() || !spec.sweep.0.is_empty();
    let sel = if compared {
        format!("{}, variant=~\"$variant\"", selector(namespace, name))
    } else {
        selector(namespace, name)
    };
    let mut templating = vec![datasource_variable()];
    if compared {
        templating.push(variable(
            "variant",
            &format!(
                "label_values(relab_orders_created_total{{{}}}, variant)",
                selector(namespace, name)
            ),
        ));
    }
    let shift = |t: &Option<String>, by: i64| {
        t.as_deref()
            .and_then(relab_model::status::parse_timestamp)
            .map(|t| relab_model::status::timestamp(t + chrono::Duration::seconds(by)))
    };
    let from = shift(&status.start_time, -60).unwrap_or_else(|| "now-15m".into());
    let to = shift(&status.finish_time, 60).unwrap_or_else(|| "now".into());
    let running = status.finish_time.is_none();
    let mut annotations = json!([
        builtin_annotations(),
        {
            "name": "Fault phases",
            "enable": true,
            "iconColor": "red",
            "datasource": { "type": "prometheus", "uid": DATASOURCE },
            "expr": format!("max by (phase) (relab_mock_fault_phase{{{sel}}}) == 1"),
            "step": "5s",
            "titleFormat": "fault phase: {{phase}}",
            "textFormat": schedule_text(spec),
            "tagKeys": "phase",
        },
        {
            "name": "Breaker open",
            "enable": true,
            "iconColor": "orange",
            "datasource": { "type": "prometheus", "uid": DATASOURCE },
            "expr": format!("max(relab_breaker_state{{{sel}}}) == 1"),
            "step": "5s",
            "titleFormat": "circuit breaker open",
            "tagKeys": "",
        },
    ]);
    if !spec.disruptions.is_empty() {
        // the load generator's own account (its /metrics on the progress port)
        let list = annotations.as_array_mut().expect("a list");
        list.push(json!({
            "name": "Disruptions",
            "enable": true,
            "iconColor": "purple",
            "datasource": { "type": "prometheus", "uid": DATASOURCE },
            // the value is the firing time: placed exactly, whatever the scrape interval
            "expr": format!("max by (disruption, action) (relab_disruption_fired_timestamp_seconds{{{sel}}}) * 1000"),
            "useValueForTime": true,
            "step": "5s",
            "titleFormat": "disruption: {{disruption}} ({{action}})",
            "textFormat": disruptions_text(spec, status),
            "tagKeys": "disruption,action",
        }));
    }
    json!({
        "uid": uid(namespace, name),
        "title": format!("relab: {namespace}/{name}"),
        "description": format!(
            "ReliabilityExperiment {namespace}/{name}, run {} ({}){}. Made by the relab operator; edits are overwritten.",
            run_text(status),
            schedule_text(spec),
            operations_text(spec, status)
        ),
        "tags": ["relab", "relab-experiment"],
        "editable": false,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "timezone": "utc",
        "graphTooltip": 1,
        "refresh": if running { "5s" } else { "" },
        "time": { "from": from, "to": to },
        "annotations": { "list": annotations },
        "templating": { "list": templating },
        "links": [{
            "title": "relab overview",
            "type": "dashboards",
            "tags": ["relab-overview"],
            "asDropdown": false,
        }],
        "panels": layout(&experiment_panels(&sel, spec)),
    })
}

/// The overview: experiments side by side, one series per experiment.
pub fn overview() -> Value {
    let by = "namespace, experiment";
    let sel = "namespace=~\"$namespace\", experiment=~\"$experiment\"";
    let final_outcomes = format!("{sel}, outcome=~\"paid|failed|dead_lettered\"");
    let panels = vec![
        Panel::new("Throughput by experiment", "Orders accepted per second.", "reqps").target(
            format!("sum by ({by}) ({})", rate("relab_orders_created_total", sel)),
            "{{namespace}}/{{experiment}}",
        ),
        Panel::new(
            "Success ratio by experiment",
            "Paid / (paid + failed + dead-lettered) jobs over the rate window.",
            "percentunit",
        )
        .target(
            format!(
                "sum by ({by}) ({}) / sum by ({by}) ({})",
                rate("relab_worker_jobs_total", &format!("{sel}, outcome=\"paid\"")),
                rate("relab_worker_jobs_total", &final_outcomes)
            ),
            "{{namespace}}/{{experiment}}",
        ),
        Panel::new("API p95 latency by experiment", "POST /orders p95.", "ms").target(
            format!(
                "1000 * histogram_quantile(0.95, sum by ({by}, le) ({}))",
                rate(
                    "relab_http_request_duration_seconds_bucket",
                    &format!("{sel}, route=\"/orders\", method=\"POST\"")
                )
            ),
            "{{namespace}}/{{experiment}}",
        ),
        Panel::new("End-to-end p95 latency by experiment", "Created → final p95.", "ms").target(
            format!(
                "1000 * histogram_quantile(0.95, sum by ({by}, le) ({}))",
                rate("relab_order_e2e_seconds_bucket", sel)
            ),
            "{{namespace}}/{{experiment}}",
        ),
        Panel::new(
            "Retry calls by experiment",
            "Payment calls that were retries, per second.",
            "ops",
        )
        .target(
            format!("sum by ({by}) ({})", rate("relab_retries_total", sel)),
            "{{namespace}}/{{experiment}}",
        ),
        Panel::new("Breaker open by experiment", "1 while a pod's breaker is open.", "none").target(
            format!("max by ({by}) (relab_breaker_state{{{sel}}} == bool 1)"),
            "{{namespace}}/{{experiment}}",
        ),
        Panel::new("Dead letters by experiment", "Dead-lettered jobs (sampled).", "short").target(
            format!("max by ({by}) (relab_dead_letter_depth{{{sel}}})"),
            "{{namespace}}/{{experiment}}",
        ),
        Panel::new(
            "Experiments by phase",
            "The operator's count of ReliabilityExperiments per phase.",
            "short",
        )
        .target("sum by (phase) (relab_operator_experiments)".into(), "{{phase}}"),
    ];
    json!({
        "uid": "relab-overview",
        "title": "relab: experiments overview",
        "description": "Every ReliabilityExperiment side by side. Each experiment also has its own dashboard (status.dashboard).",
        "tags": ["relab", "relab-overview"],
        "editable": true,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "timezone": "utc",
        "graphTooltip": 1,
        "refresh": "10s",
        "time": { "from": "now-1h", "to": "now" },
        "annotations": { "list": [builtin_annotations()] },
        "templating": { "list": [
            datasource_variable(),
            variable("namespace", "label_values(relab_orders_created_total, namespace)"),
            variable("experiment", "label_values(relab_orders_created_total{namespace=~\"$namespace\"}, experiment)"),
        ]},
        "links": [{
            "title": "experiment dashboards",
            "type": "dashboards",
            "tags": ["relab-experiment"],
            "asDropdown": true,
        }],
        "panels": layout(&panels),
    })
}

/// Every PromQL expression of a dashboard: panel targets and annotation
/// queries (what a test runs against Prometheus).
pub fn queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        for t in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = t["expr"].as_str() {
                out.push((format!("panel {:?} {}", panel["title"], t["refId"]), expr.to_owned()));
            }
        }
    }
    for a in dashboard["annotations"]["list"].as_array().into_iter().flatten() {
        if let Some(expr) = a["expr"].as_str() {
            out.push((format!("annotation {:?}", a["name"]), expr.to_owned()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{FaultPhaseSpec, LatencyObjective, Percentile};
    use relab_model::faults::FaultSettings;
    use std::collections::BTreeSet;

    fn spec() -> ReliabilityExperimentSpec {
        let mut spec = ReliabilityExperimentSpec::default();
        spec.payment.faults_schedule = vec![FaultPhaseSpec {
            name: "outage".into(),
            start_seconds: 10,
            end_seconds: Some(20),
            faults: FaultSettings::default(),
        }];
        spec.objectives.api_latency = vec![LatencyObjective {
            percentile: Percentile::P95,
            max_ms: 100.0,
            requests: Default::default(),
        }];
        spec
    }

    #[test]
    fn the_description_names_each_disruption_and_after_the_run_its_recovery() {
        use relab_model::disruptions::{DisruptionAction, DisruptionSpec, PlannedDisruption};
        let mut spec = spec();
        let d = |name: &str, at, action, duration| DisruptionSpec {
            name: String::from(name),
            at_seconds: at,
            action,
            fraction: None,
            added_ms: None,
            duration_seconds: duration,
        };
        spec.disruptions = vec![
            d("crash", 10, DisruptionAction::KillWorkers, None),
            d("cut", 20, DisruptionAction::DatabaseOutage, Some(5)),
        ];
        let text = |status: &ReliabilityExperimentStatus| {
            experiment("lab", "drill", &spec, status)["description"]
                .as_str()
                .unwrap()
                .to_string()
        };
        let before = text(&ReliabilityExperimentStatus::default());
        assert!(
            before.contains("disruptions after the load starts: crash KillWorkers at 10 s, cut DatabaseOutage 20–25 s"),
            "{before}"
        );
        let mut fired = PlannedDisruption::of(&spec.disruptions[0], 1.0).unfired();
        fired.fired_at_seconds = Some(10.3);
        fired.recovery_seconds = Some(4.2);
        let status = ReliabilityExperimentStatus {
            results: Some(relab_model::results::RunResults {
                disruptions: vec![fired, PlannedDisruption::of(&spec.disruptions[1], 1.0).unfired()],
                ..Default::default()
            }),
            ..Default::default()
        };
        let after = text(&status);
        assert!(
            after.contains("crash KillWorkers at 10 s (fired 10.3 s, recovered in 4.2 s)"),
            "{after}"
        );
        assert!(after.contains("cut DatabaseOutage 20–25 s (did not fire)"), "{after}");
        let names = |spec: &ReliabilityExperimentSpec| -> Vec<String> {
            experiment("lab", "drill", spec, &status)["annotations"]["list"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["name"].as_str().unwrap().to_string())
                .collect()
        };
        assert!(names(&spec).contains(&"Disruptions".to_string()), "{:?}", names(&spec));
        spec.disruptions.clear();
        assert!(
            !names(&spec).contains(&"Disruptions".to_string()),
            "no annotation without disruptions"
        );
    }

    #[test]
    fn a_comparison_selects_its_series_per_variant() {
        let mut spec = spec();
        spec.variants = vec![relab_model::variants::VariantSpec {
            name: "no-breaker".into(),
            ..Default::default()
        }];
        let d = experiment("lab", "drill", &spec, &ReliabilityExperimentStatus::default());
        let vars: Vec<&str> = d["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v["name"].as_str())
            .collect();
        assert!(vars.contains(&"variant"), "{vars:?}");
        for (what, q) in queries(&d) {
            assert!(q.contains("variant=~\"$variant\""), "{what}: {q}");
        }
        let plain = experiment("lab", "drill", &self::spec(), &ReliabilityExperimentStatus::default());
        assert!(queries(&plain).iter().all(|(_, q)| !q.contains("$variant")));
    }

    #[test]
    fn an_experiment_dashboard_selects_only_its_experiment_and_covers_the_run() {
        let status = ReliabilityExperimentStatus {
            start_time: Some("2026-11-23T10:00:00Z".into()),
            finish_time: Some("2026-11-23T10:02:30Z".into()),
            observed_generation: Some(3),
            ..Default::default()
        };
        let d = experiment("team-a", "outage-drill", &spec(), &status);
        assert_eq!(d["time"]["from"], "2026-11-23T09:59:00Z");
        assert_eq!(d["time"]["to"], "2026-11-23T10:03:30Z");
        assert_eq!(d["refresh"], "", "a finished run is not refreshed");
        let queries = queries(&d);
        assert!(queries.len() >= 15, "{queries:?}");
        for (what, q) in &queries {
            assert!(
                q.contains("namespace=\"team-a\", experiment=\"outage-drill\""),
                "{what} does not select the experiment: {q}"
            );
        }
        let ids: BTreeSet<u64> = d["panels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_u64().unwrap())
            .collect();
        assert_eq!(ids.len(), d["panels"].as_array().unwrap().len(), "panel ids are unique");
        let api = d["panels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["title"].as_str().unwrap().starts_with("API latency"))
            .unwrap();
        assert_eq!(api["fieldConfig"]["defaults"]["thresholds"]["steps"][1]["value"], 100.0);
        assert!(d["description"].as_str().unwrap().contains("outage 10–20 s"));
        assert!(d["uid"].as_str().unwrap().len() <= 40);
    }

    #[test]
    fn a_stopped_or_scheduled_run_says_so() {
        let mut spec = spec();
        spec.schedule = Some(relab_model::ops::ScheduleSpec {
            cron: "0 3 * * *".into(),
            time_zone: "Europe/Berlin".into(),
            suspend: false,
            starting_deadline_seconds: 600,
        });
        let status = ReliabilityExperimentStatus {
            observed_generation: Some(3),
            scheduled_run: Some(2),
            next_run_time: Some("2026-12-05T02:00:00Z".into()),
            results: Some(relab_model::results::RunResults {
                stopped: Some(relab_model::ops::Stopped {
                    condition: "stopWhen[1] doubleCharges".into(),
                    observed: "1 orders charged more than once".into(),
                    at_seconds: 7.0,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let d = experiment("lab", "drill", &spec, &status);
        let text = d["description"].as_str().unwrap();
        assert!(text.contains("run 3s2"), "{text}");
        assert!(
            text.contains("stopped early by stopWhen[1] doubleCharges at 7.0 s"),
            "{text}"
        );
        assert!(text.contains("next run 2026-12-05T02:00:00Z"), "{text}");
    }

    #[test]
    fn a_running_experiment_refreshes_and_ends_now() {
        let status = ReliabilityExperimentStatus {
            start_time: Some("2026-11-23T10:00:00Z".into()),
            ..Default::default()
        };
        let d = experiment("ns", "x", &spec(), &status);
        assert_eq!(d["time"]["to"], "now");
        assert_eq!(d["refresh"], "5s");
    }

    /// What Grafana's dashboard JSON model requires of these dashboards
    /// (Grafana itself cannot run here): every problem found.
    fn model_problems(d: &Value) -> Vec<String> {
        let mut problems = Vec::new();
        let mut need = |ok: bool, what: String| {
            if !ok {
                problems.push(what)
            }
        };
        need(d["schemaVersion"] == SCHEMA_VERSION, "schemaVersion".into());
        need(
            d["uid"].as_str().is_some_and(|u| !u.is_empty() && u.len() <= 40),
            "uid".into(),
        );
        need(d["title"].as_str().is_some_and(|t| !t.is_empty()), "title".into());
        for key in ["from", "to"] {
            need(d["time"][key].is_string(), format!("time.{key}"));
        }
        let vars = d["templating"]["list"].as_array().cloned().unwrap_or_default();
        need(
            vars.iter()
                .any(|v| v["name"] == "datasource" && v["type"] == "datasource" && v["query"] == "prometheus"),
            "a prometheus datasource variable".into(),
        );
        let panels = d["panels"].as_array().cloned().unwrap_or_default();
        need(!panels.is_empty(), "panels".into());
        let mut ids = BTreeSet::new();
        let mut cells = BTreeSet::new();
        for p in &panels {
            let title = p["title"].as_str().unwrap_or("?").to_string();
            need(ids.insert(p["id"].as_u64().unwrap_or(0)), format!("{title}: unique id"));
            need(
                ["timeseries", "stat", "state-timeline", "table"].contains(&p["type"].as_str().unwrap_or("")),
                format!("{title}: panel type"),
            );
            let g = &p["gridPos"];
            let (x, y, w, h) = (g["x"].as_u64(), g["y"].as_u64(), g["w"].as_u64(), g["h"].as_u64());
            need(
                matches!((x, w), (Some(x), Some(w)) if x + w <= 24) && h.is_some_and(|h| h > 0),
                format!("{title}: gridPos within 24 columns"),
            );
            need(cells.insert((x, y)), format!("{title}: overlaps another panel"));
            need(p["datasource"]["uid"] == DATASOURCE, format!("{title}: datasource"));
            let targets = p["targets"].as_array().cloned().unwrap_or_default();
            need(!targets.is_empty(), format!("{title}: targets"));
            let refs: BTreeSet<_> = targets.iter().map(|t| t["refId"].to_string()).collect();
            need(refs.len() == targets.len(), format!("{title}: unique refIds"));
            for t in &targets {
                need(
                    t["expr"].as_str().is_some_and(|e| !e.is_empty()),
                    format!("{title}: expr"),
                );
            }
        }
        for a in d["annotations"]["list"].as_array().cloned().unwrap_or_default() {
            need(
                a["name"].is_string() && a["datasource"].is_object(),
                format!("annotation {}", a["name"]),
            );
        }
        problems
    }

    #[test]
    fn both_dashboards_follow_grafanas_json_model() {
        let status = ReliabilityExperimentStatus {
            start_time: Some("2026-11-23T10:00:00Z".into()),
            ..Default::default()
        };
        for d in [experiment("ns", "x", &spec(), &status), overview()] {
            assert_eq!(model_problems(&d), Vec::<String>::new(), "{}", d["title"]);
        }
        let mut broken = overview();
        broken["panels"][1]["id"] = broken["panels"][0]["id"].clone();
        broken["panels"][2]["targets"] = json!([]);
        assert_eq!(model_problems(&broken).len(), 2, "the check can fail");
    }

    #[test]
    fn uids_are_stable_short_and_distinct() {
        assert_eq!(uid("a", "b"), uid("a", "b"));
        assert_ne!(uid("a", "bc"), uid("ab", "c"));
        assert_eq!(uid("a", "b").len(), "relab-".len() + 16);
    }
}
