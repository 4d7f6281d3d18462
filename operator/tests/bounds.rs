//! Every bound of the generated CRD schema, enforced alike by the real API
//! server and by `relab validate`: for each `minimum`, `maximum`,
//! `minLength`, `maxLength`, `minItems` and `maxItems` found in the schema
//! (`relab_model::schema::bounds`), the value at the bound is accepted by
//! both and the value just past it is refused by both, relab naming the
//! field. One source of truth: the bound is a schema attribute on the model
//! types; neither checker has a copy of it.
//!
//! Needs a Kubernetes API server (`RELAB_KUBECONFIG`); the creates are dry runs.

use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use relab_model::schema::{bounds, Bound, Step};
use relab_model::validate::parse_manifest;
use relab_operator::crd::ReliabilityExperiment;
use serde_json::{json, Value};

mod common;

/// A valid spec every bound is tried on (stages, so that the single-rate
/// fields are free to take any value the schema allows).
fn base_spec() -> Value {
    json!({ "load": { "stages": [{ "ratePerSecond": 1, "durationSeconds": 1 }] } })
}

/// A valid element for a list at `path` (the path of the list itself).
fn element_for(path: &[Step]) -> Value {
    if matches!(path.last(), Some(Step::Key)) {
        return json!(1); // a sweep value
    }
    let last = path.iter().rev().find_map(|s| match s {
        Step::Field(f) => Some(f.as_str()),
        Step::Item | Step::Key => None,
    });
    match last {
        Some("stages") => json!({ "ratePerSecond": 1, "durationSeconds": 1 }),
        Some("faultsSchedule") => json!({ "name": "phase", "startSeconds": 0 }),
        Some("apiLatency" | "endToEndLatency") => json!({ "percentile": "p95", "maxMs": 1 }),
        Some("failureStatuses") => json!(500),
        Some("variants") => json!({ "name": "v" }),
        Some("stopWhen") => json!({ "doubleCharges": true }),
        Some("disruptions") => json!({ "name": "d", "atSeconds": 0, "action": "KillOrderService" }),
        other => panic!("no valid element known for the list {other:?}: add one here"),
    }
}

/// A valid object for the field `name` on the way to a bound (its required
/// fields filled in).
fn object_for(name: &str) -> Value {
    match name {
        "external" => json!({ "secretName": "db" }),
        "schedule" => json!({ "cron": "0 3 * * *" }),
        "webhook" => json!({ "urlSecretRef": { "name": "hook", "key": "url" } }),
        "urlSecretRef" => json!({ "name": "hook", "key": "url" }),
        _ => json!({}),
    }
}

/// The value at the bound and the one just past it.
fn values(b: &Bound) -> (Value, Value) {
    let integer = b.type_ == "integer";
    let step = if integer { 1.0 } else { (b.value.abs() * 1e-6).max(1e-6) };
    let num = |v: f64| if integer { json!(v as i64) } else { json!(v) };
    match (b.keyword, b.exclusive) {
        ("minimum", true) => (num(b.value + step), num(b.value)),
        ("maximum", true) => (num(b.value - step), num(b.value)),
        _ => values_inclusive(b, step, num),
    }
}

fn values_inclusive(b: &Bound, step: f64, num: impl Fn(f64) -> Value) -> (Value, Value) {
    match b.keyword {
        "minimum" => (num(b.value), num(b.value - step)),
        "maximum" => (num(b.value), num(b.value + step)),
        "maxProperties" => {
            let map = |n: usize| Value::Object((0..n).map(|i| (format!("k{i}"), json!([1]))).collect());
            (map(b.value as usize), map(b.value as usize + 1))
        }
        "minLength" => (
            json!("a".repeat(b.value as usize)),
            json!("a".repeat(b.value as usize - 1)),
        ),
        "maxLength" => (
            json!("a".repeat(b.value as usize)),
            json!("a".repeat(b.value as usize + 1)),
        ),
        "minItems" | "maxItems" => {
            let n = b.value as usize;
            let element = element_for(&b.path);
            let past = if b.keyword == "maxItems" { n + 1 } else { n - 1 };
            (json!(vec![element.clone(); n]), json!(vec![element; past]))
        }
        other => panic!("unknown keyword {other}"),
    }
}

/// What the cross-field rules need around a bound (its siblings), so that
/// the value at the bound is valid as a whole: a stop condition has exactly
/// one kind, and `afterSeconds` belongs to an objective, which needs its
/// target; the workers' pool is at least their job loops + 2.
fn cross_field_fixups(spec: &mut Value, field: &str) {
    if field == "spec.orderService.databasePool.workers" {
        // the workers' pool holds at least one connection per job loop + 2
        spec["orderService"]["workers"] = json!(1);
        return;
    }
    if !field.starts_with("spec.stopWhen[0].") {
        return;
    }
    let condition = &mut spec["stopWhen"][0];
    if field == "spec.stopWhen[0].afterSeconds" {
        condition.as_object_mut().unwrap().remove("doubleCharges");
        condition["objective"] = json!("successRatio");
        spec["objectives"]["successRatio"] = json!(0.9);
    } else if field == "spec.stopWhen[0].maxDurationSeconds" {
        condition.as_object_mut().unwrap().remove("doubleCharges");
    }
}

/// `base` with `value` at `path`, lists on the way holding one valid element;
/// and the concrete field path (`spec.load.stages[0].ratePerSecond`).
fn with_value(mut spec: Value, path: &[Step], value: Value) -> (Value, String) {
    let mut at = &mut spec;
    let mut shown = String::from("spec");
    for (i, step) in path.iter().enumerate() {
        let last = i + 1 == path.len();
        match step {
            Step::Field(f) => {
                shown.push('.');
                shown.push_str(f);
                let obj = at.as_object_mut().expect("an object on the way");
                if last {
                    obj.insert(f.clone(), value);
                    return (spec, shown);
                }
                let next_is_item = matches!(path[i + 1], Step::Item);
                let fresh = if next_is_item {
                    json!([element_for(&path[..=i])])
                } else {
                    object_for(f)
                };
                at = obj.entry(f.clone()).or_insert(fresh);
            }
            Step::Key => {
                shown.push_str(".k");
                let map = at.as_object_mut().expect("a map on the way");
                if last {
                    map.insert("k".into(), value);
                    return (spec, shown);
                }
                at = map.entry("k".to_string()).or_insert(json!([1]));
            }
            Step::Item => {
                shown.push_str("[0]");
                let list = at.as_array_mut().expect("a list on the way");
                if last {
                    list[0] = value;
                    return (spec, shown);
                }
                at = &mut list[0];
            }
        }
    }
    unreachable!("a bound has a path")
}

fn manifest(spec: &Value) -> Value {
    json!({
        "apiVersion": "relab.dev/v1alpha1",
        "kind": "ReliabilityExperiment",
        "metadata": { "name": "bounds" },
        "spec": spec,
    })
}

/// relab's verdict on `spec` at `field`: the problems naming it.
fn relab_problems(spec: &Value, field: &str) -> Vec<String> {
    let text = serde_json::to_string(&manifest(spec)).unwrap();
    match parse_manifest(&text) {
        Ok(_) => Vec::new(),
        Err(problems) => problems
            .into_iter()
            .filter(|p| p.path == field)
            .map(|p| p.to_string())
            .collect(),
    }
}

#[tokio::test]
async fn every_schema_bound_is_refused_just_past_it_and_accepted_at_it_by_both_checkers() {
    let all = bounds();
    assert!(all.len() > 60, "the schema states its bounds ({} found)", all.len());
    common::in_namespace(|client, ns| async move {
        let resource = ApiResource::erase::<ReliabilityExperiment>(&());
        let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, &resource);
        let dry = PostParams {
            dry_run: true,
            ..PostParams::default()
        };
        let mut checked = 0;
        for b in bounds() {
            let (at, past) = values(&b);
            for (value, should_pass) in [(at, true), (past, false)] {
                let (mut spec, field) = with_value(base_spec(), &b.path, value.clone());
                cross_field_fixups(&mut spec, &field);
                let what = format!("{} {} {} = {}", b.display_path(), b.keyword, b.value, value);
                let object: DynamicObject = serde_json::from_value(manifest(&spec)).unwrap();
                let server = api.create(&dry, &object).await;
                let mine = relab_problems(&spec, &field);
                if should_pass {
                    assert!(
                        server.is_ok(),
                        "{what}: the API server refused the bound: {:?}",
                        server.err()
                    );
                    assert!(mine.is_empty(), "{what}: relab refused the bound: {mine:?}");
                } else {
                    match server {
                        Err(kube::Error::Api(s)) => assert_eq!(s.code, 422, "{what}: {s:?}"),
                        other => panic!("{what}: the API server did not refuse it: {other:?}"),
                    }
                    assert!(!mine.is_empty(), "{what}: relab accepted the value past the bound");
                }
            }
            checked += 1;
        }
        eprintln!("{checked} bounds checked against the API server and relab");
    })
    .await;
}

/// A status as large as a comparison can make it: 64 lab runs, each
/// recorded with full results.
fn largest_status() -> relab_operator::crd::ReliabilityExperimentStatus {
    use relab_model::results::{Percentiles, RunResults};
    use relab_model::status::{IntervalObjective, RunRecord, VariantStatus};
    let mut results = RunResults::default();
    let p = Percentiles {
        count: 123_456,
        p50: 12.345678,
        p90: 123.456789,
        p95: 234.567891,
        p99: 345.678912,
        max: 456.789123,
    };
    results.api_latency_ms = p.clone();
    results.accepted_api_latency_ms = p.clone();
    results.shed_api_latency_ms = p.clone();
    results.end_to_end_latency_ms = p;
    for reason in lab_service::resilience::retry::FAILURE_REASONS {
        results
            .payment
            .failures_by_reason
            .insert(reason.into(), i64::MAX as u64);
    }
    for t in [
        "closed->open",
        "open->half_open",
        "half_open->open",
        "half_open->closed",
    ] {
        results.breaker.transitions.insert(t.into(), i64::MAX as u64);
    }
    let objective = |name: &str| IntervalObjective {
        name: name.into(),
        target: "<= 250 ms".into(),
        ..Default::default()
    };
    let variants = (0..64)
        .map(|i| VariantStatus {
            name: format!("failurethreshold-{i}-maxattempts-{i}"),
            overrides: json!({"orderService": {"retry": {"maxAttempts": i}, "circuitBreaker": {"failureThreshold": i}}}),
            runs: vec![RunRecord {
                seed: 42,
                order: i,
                start_time: Some("2026-12-03T10:00:00Z".into()),
                finish_time: Some("2026-12-03T10:01:00Z".into()),
                results: Some(results.clone()),
                ..Default::default()
            }],
            results: Some(results.clone()),
            objectives: ["successRatio", "apiLatency.p99", "endToEndLatency.p95", "maxDoubleCharges", "maxLostOrders"]
                .map(objective)
                .to_vec(),
            ..Default::default()
        })
        .collect();
    relab_operator::crd::ReliabilityExperimentStatus {
        variants,
        ..Default::default()
    }
}

#[tokio::test]
async fn the_status_of_64_lab_runs_stays_well_under_the_object_size_limit() {
    let status = largest_status();
    let bytes = serde_json::to_vec(&status).unwrap().len();
    // etcd's request limit is 1.5 MiB; the whole object must stay well under it
    assert!(bytes < 512 * 1024, "{bytes} bytes for 64 lab runs");
    eprintln!("status of 64 lab runs: {bytes} bytes");
    common::in_namespace(|client, ns| async move {
        let api: Api<ReliabilityExperiment> = Api::namespaced(client, &ns);
        let spec = relab_operator::crd::parse(&serde_json::to_string(&manifest(&base_spec())).unwrap())
            .unwrap()
            .spec;
        let created = api
            .create(&PostParams::default(), &ReliabilityExperiment::new("big", spec))
            .await
            .unwrap();
        let mut object = created.clone();
        object.status = Some(largest_status());
        object.metadata.managed_fields = None;
        let stored = api
            .replace_status("big", &PostParams::default(), &object)
            .await
            .expect("the API server stores it");
        assert_eq!(stored.status.unwrap().variants.len(), 64);
    })
    .await;
}
