//! Comparing configurations: `spec.variants` (each a full lab run of the
//! same load and faults with some settings overridden), `spec.sweep` (the
//! cross product of values becomes the variants), `spec.repeat` (every
//! variant run `runs` times, run i with payment seed + i) and
//! `spec.baseline` (the figures a run may not regress past).
//!
//! Overrides are deep-merged over `spec.orderService` / `spec.payment` and
//! the merged spec goes through every rule the base spec does (the CRD
//! schema, the types, the cross-field rules), each problem named at the
//! variant's path.

use crate::error::{FieldError, Problems};
use crate::status::VerdictResult;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Variants x runs at most in one experiment.
pub const MAX_LAB_RUNS: usize = 64;

/// What a variant is meant to show.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Expectation {
    /// Its objectives are met (the default).
    #[default]
    Passed,
    /// Its objectives are missed (e.g. the drill without the breaker).
    Failed,
}

impl Expectation {
    pub fn as_verdict(self) -> VerdictResult {
        match self {
            Expectation::Passed => VerdictResult::Passed,
            Expectation::Failed => VerdictResult::Failed,
        }
    }
}

/// `{"type": "object"}` whose content the API server keeps as written: an
/// override is partial by nature, and the merged spec is checked instead.
fn override_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// One configuration to compare: overrides deep-merged over the spec.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VariantSpec {
    /// A DNS label, unique among the variants (`with-breaker`).
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: String,
    /// `Passed` (default) or `Failed`: what this variant is meant to show.
    #[serde(default)]
    pub expect: Expectation,
    /// Deep-merged over `spec.orderService` (e.g. `{circuitBreaker: {enabled: false}}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "override_object")]
    pub order_service: Option<Map<String, Value>>,
    /// Deep-merged over `spec.payment`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "override_object")]
    pub payment: Option<Map<String, Value>>,
}

/// Repeated runs per variant, judged on confidence intervals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RepeatSpec {
    /// Runs per variant; run i uses payment seed + i.
    #[serde(default = "one_run")]
    #[schemars(range(min = 1, max = 50))]
    pub runs: u32,
    /// Confidence level of the intervals, within (0.5, 0.999).
    #[serde(default = "default_confidence")]
    #[schemars(range(min = 0.5, max = 0.999), extend("exclusiveMinimum" = true, "exclusiveMaximum" = true))]
    pub confidence: f64,
}

fn one_run() -> u32 {
    1
}
fn default_confidence() -> f64 {
    0.95
}

impl Default for RepeatSpec {
    fn default() -> Self {
        Self {
            runs: 1,
            confidence: default_confidence(),
        }
    }
}

/// A sweep: dotted paths under `orderService` or `payment` to the values
/// each takes; the cross product becomes the variants.
pub type SweepSpec = BTreeMap<String, Vec<Value>>;

fn sweep_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "maxProperties": 8,
        "additionalProperties": {
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_LAB_RUNS,
            "items": { "x-kubernetes-preserve-unknown-fields": true },
        },
    })
}

/// The fields of the sweep, in the spec (kept apart for the schema).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct Sweep(#[schemars(schema_with = "sweep_schema")] pub SweepSpec);

/// The regressions a run may show against a baseline run before it fails.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MaxRegression {
    /// Success ratio lost at most, in absolute terms (0.01 = one point).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub success_ratio: Option<f64>,
    /// API p95 growth at most, as a share of the baseline's (0.2 = 20%).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub api_latency_p95: Option<f64>,
    /// API p99 growth at most, as a share of the baseline's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub api_latency_p99: Option<f64>,
    /// End-to-end p95 growth at most, as a share of the baseline's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub end_to_end_latency_p95: Option<f64>,
    /// Growth of payment calls per paid order at most, as a share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub payment_calls_per_paid_order: Option<f64>,
}

/// Compare each run with a baseline (on a cluster: the last Passed run in
/// `status.history`; locally: `relab run --baseline status.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BaselineSpec {
    #[serde(default)]
    pub max_regression: MaxRegression,
}

/// `b` deep-merged over `a`: objects merge key by key, anything else replaces.
pub fn deep_merge(a: &mut Value, b: &Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                deep_merge(a.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b.clone(),
    }
}

/// The object at a dotted path (`orderService.retry.maxAttempts`) of `value`.
pub fn at_path<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(value, |v, key| v.get(key))
}

/// An override object setting `value` at a dotted path.
pub fn override_at(path: &str, value: Value) -> Value {
    path.rsplit('.').fold(value, |inner, key| {
        let mut m = Map::new();
        m.insert(key.to_string(), inner);
        Value::Object(m)
    })
}

/// A DNS-label name for a sweep point: `maxattempts-3-failurethreshold-10`,
/// or `sweep-<i>` when that does not fit in 63 characters.
fn sweep_name(point: &[(String, Value)], index: usize) -> String {
    let mut name = String::new();
    for (path, value) in point {
        let key = path.rsplit('.').next().unwrap_or(path).to_ascii_lowercase();
        let raw = match value {
            Value::String(s) => s.to_ascii_lowercase(),
            other => other.to_string().to_ascii_lowercase(),
        };
        let value: String = raw
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        if !name.is_empty() {
            name.push('-');
        }
        name.push_str(&key);
        name.push('-');
        name.push_str(value.trim_matches('-'));
    }
    let clean = name.trim_matches('-').to_string();
    let dns = !clean.is_empty() && !clean.contains("--") && clean.len() <= 63;
    if dns {
        clean
    } else {
        format!("sweep-{}", index + 1)
    }
}

/// The variants a sweep stands for: the cross product of its values, in
/// path order, each with its overrides and a name.
pub fn expand_sweep(sweep: &SweepSpec) -> Vec<VariantSpec> {
    let mut points: Vec<Vec<(String, Value)>> = vec![Vec::new()];
    for (path, values) in sweep {
        points = points
            .into_iter()
            .flat_map(|p| {
                values.iter().map(move |v| {
                    let mut next = p.clone();
                    next.push((path.clone(), v.clone()));
                    next
                })
            })
            .collect();
    }
    points
        .iter()
        .enumerate()
        .map(|(i, point)| {
            let mut order_service = Value::Object(Map::new());
            let mut payment = Value::Object(Map::new());
            for (path, value) in point {
                let (root, rest) = path.split_once('.').unwrap_or((path, ""));
                let target = if root == "payment" {
                    &mut payment
                } else {
                    &mut order_service
                };
                deep_merge(target, &override_at(rest, value.clone()));
            }
            let object = |v: Value| match v {
                Value::Object(m) if !m.is_empty() => Some(m),
                _ => None,
            };
            VariantSpec {
                name: sweep_name(point, i),
                expect: Expectation::Passed,
                order_service: object(order_service),
                payment: object(payment),
            }
        })
        .collect()
}

/// The rules of `variants`, `sweep` and `repeat` that span fields (each
/// variant's merged spec is checked by the caller). `defaults` is the base
/// spec as JSON with every default filled in, to check sweep paths against.
pub fn check(variants: &[VariantSpec], sweep: &SweepSpec, repeat: &RepeatSpec, defaults: &Value, p: &mut Problems) {
    if !variants.is_empty() && !sweep.is_empty() {
        p.add("spec.sweep", "give either spec.variants or spec.sweep, not both");
    }
    let mut seen = BTreeMap::new();
    for (i, v) in variants.iter().enumerate() {
        if let Some(j) = seen.insert(v.name.as_str(), i) {
            p.add(
                format!("spec.variants[{i}].name"),
                format!("{:?} is already the name of spec.variants[{j}]", v.name),
            );
        }
    }
    for path in sweep.keys() {
        let field = format!("spec.sweep[{path:?}]");
        let root = path.split('.').next().unwrap_or_default();
        if root != "orderService" && root != "payment" {
            p.add(
                field,
                "must be a dotted path under orderService or payment (e.g. orderService.retry.maxAttempts)",
            );
        } else if at_path(defaults, path).is_none_or(Value::is_object) {
            p.add(
                field,
                "names no setting of the spec (a dotted path to a value, e.g. orderService.retry.maxAttempts)",
            );
        }
    }
    let count = if sweep.is_empty() {
        variants.len().max(1)
    } else {
        sweep.values().map(Vec::len).product()
    };
    let runs = count * repeat.runs as usize;
    if runs > MAX_LAB_RUNS {
        let field = if sweep.is_empty() {
            "spec.variants"
        } else {
            "spec.sweep"
        };
        p.add(
            field,
            format!(
                "{count} variants x {} runs = {runs} lab runs, at most {MAX_LAB_RUNS} are allowed",
                repeat.runs
            ),
        );
    }
}

/// Re-home a problem of a variant's merged spec at the variant: a path in
/// the part the variant overrides becomes `spec.variants[i].<...>` (or the
/// sweep entry that set it); others stay (the base spec's own problem).
pub fn rehome(problem: FieldError, variant: &VariantSpec, index: usize, from_sweep: Option<&SweepSpec>) -> FieldError {
    let owned = |root: &str, overrides: &Option<Map<String, Value>>| {
        let prefix = format!("spec.{root}.");
        let rest = problem.path.strip_prefix(&prefix)?;
        let first = rest.split(['.', '[']).next()?;
        overrides.as_ref()?.get(first).map(|_| rest.to_string())
    };
    let found = owned("orderService", &variant.order_service)
        .map(|rest| ("orderService", rest))
        .or_else(|| owned("payment", &variant.payment).map(|rest| ("payment", rest)));
    match (found, from_sweep) {
        (Some((root, rest)), None) => FieldError::new(format!("spec.variants[{index}].{root}.{rest}"), problem.message),
        (Some((root, rest)), Some(sweep)) => {
            let full = format!("{root}.{rest}");
            let key = sweep.keys().find(|k| full == **k || full.starts_with(&format!("{k}.")));
            match key {
                Some(k) => FieldError::new(
                    format!("spec.sweep[{k:?}]"),
                    format!("in variant {}: {}", variant.name, problem.message),
                ),
                None => problem,
            }
        }
        (None, _) => problem,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn overrides_merge_deeply_and_replace_leaves() {
        let mut base = json!({"retry": {"maxAttempts": 4, "jitter": 0.5}, "workers": 8});
        deep_merge(&mut base, &json!({"retry": {"maxAttempts": 1}, "workers": 2}));
        assert_eq!(base, json!({"retry": {"maxAttempts": 1, "jitter": 0.5}, "workers": 2}));
        assert_eq!(override_at("a.b", json!(3)), json!({"a": {"b": 3}}));
    }

    #[test]
    fn a_sweep_is_the_cross_product_with_readable_names() {
        let sweep: SweepSpec = serde_json::from_value(json!({
            "orderService.retry.maxAttempts": [1, 3, 5],
            "orderService.circuitBreaker.failureThreshold": [3, 10],
        }))
        .unwrap();
        let variants = expand_sweep(&sweep);
        assert_eq!(variants.len(), 6);
        // keys in path order: circuitBreaker first
        assert_eq!(variants[0].name, "failurethreshold-3-maxattempts-1");
        assert_eq!(
            variants[5].order_service.clone().map(Value::Object),
            Some(json!({"circuitBreaker": {"failureThreshold": 10}, "retry": {"maxAttempts": 5}}))
        );
        let odd: SweepSpec = serde_json::from_value(json!({"payment.failureRate": [0.25]})).unwrap();
        assert_eq!(expand_sweep(&odd)[0].name, "failurerate-0-25");
        assert_eq!(
            expand_sweep(&odd)[0].payment.clone().map(Value::Object),
            Some(json!({"failureRate": 0.25}))
        );
    }
}
