//! Checking values against the schemas the Rust types generate, so that a
//! bound is stated once (a schema attribute on the type) and every checker
//! reads it from there.
//!
//! - A manifest's `spec` is checked against the CRD that `relab crd` writes
//!   (`crds/reliabilityexperiments.relab.dev.yaml`, embedded here): the very
//!   schema the API server enforces. A test fails when the committed file is
//!   stale, and `operator/tests/bounds.rs` sends every bound of it, and the
//!   value just past it, to both the real API server and [`check_spec`].
//! - A payment-mock fault plan is checked against the schema schemars
//!   generates for [`crate::faults::FaultPlan`], built of the same
//!   [`crate::faults::FaultSettings`] attributes.

use crate::error::FieldError;
use serde_json::Value;
use std::sync::OnceLock;

/// The generated CRD, as committed (`relab crd --write .` regenerates it).
pub const CRD_YAML: &str = include_str!("../../crds/reliabilityexperiments.relab.dev.yaml");

/// The OpenAPI v3 schema of `spec` inside the committed CRD.
pub fn crd_spec_schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let crd: Value = serde_yaml::from_str(CRD_YAML).expect("the committed CRD is YAML");
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"].clone()
    })
}

/// OpenAPI's `nullable: true` as JSON Schema understands it: `null` is one
/// more allowed type (the API server accepts `null` for such fields).
fn openapi_to_json_schema(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => {
            let mut out: serde_json::Map<String, Value> = map
                .iter()
                .filter(|(k, _)| !k.starts_with("x-kubernetes-") && k.as_str() != "nullable")
                .map(|(k, v)| (k.clone(), openapi_to_json_schema(v)))
                .collect();
            if map.get("nullable") == Some(&Value::Bool(true)) {
                if let Some(Value::String(t)) = out.get("type").cloned() {
                    out.insert("type".into(), serde_json::json!([t, "null"]));
                }
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(openapi_to_json_schema).collect()),
        other => other.clone(),
    }
}

fn compile(schema: &Value, draft: jsonschema::Draft) -> jsonschema::Validator {
    jsonschema::options()
        .with_draft(draft)
        .build(schema)
        .expect("a schema generated from the Rust types compiles")
}

fn spec_validator() -> &'static jsonschema::Validator {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| compile(&openapi_to_json_schema(crd_spec_schema()), jsonschema::Draft::Draft4))
}

/// Every schema violation of a manifest's `spec` (as written, before
/// defaults), each with its path under `spec.`.
pub fn check_spec(spec: &Value) -> Vec<FieldError> {
    collect(spec_validator(), spec, "spec")
}

/// Every schema violation of `value` against the schema schemars generates
/// for `T`, each with its path under `root` (empty: top level).
pub fn check_against<T: schemars::JsonSchema + 'static>(value: &Value, root: &str) -> Vec<FieldError> {
    use std::any::TypeId;
    use std::collections::HashMap;
    use std::sync::Mutex;
    static VALIDATORS: OnceLock<Mutex<HashMap<TypeId, &'static jsonschema::Validator>>> = OnceLock::new();
    let validator = {
        let mut cache = VALIDATORS
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *cache.entry(TypeId::of::<T>()).or_insert_with(|| {
            let schema = serde_json::to_value(schemars::schema_for!(T)).expect("schema serializes");
            Box::leak(Box::new(compile(&schema, jsonschema::Draft::Draft202012)))
        })
    };
    collect(validator, value, root)
}

fn collect(validator: &jsonschema::Validator, value: &Value, root: &str) -> Vec<FieldError> {
    let mut errors: Vec<FieldError> = validator
        .iter_errors(value)
        .map(|e| {
            let pointer = e.instance_path().as_str().to_string();
            // every choice of an enum, not the first two and "n other candidates"
            let message = match e.kind() {
                jsonschema::error::ValidationErrorKind::Enum { options } => {
                    let choices: Vec<String> = options
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|o| o.as_str().map_or_else(|| o.to_string(), str::to_string))
                        .collect();
                    format!("{} is not one of {}", e.instance(), choices.join(", "))
                }
                _ => e.to_string(),
            };
            FieldError::new(dotted(root, &pointer, value), message)
        })
        .collect();
    errors.sort_by(|a, b| a.path.cmp(&b.path));
    errors.dedup();
    errors
}

/// `/orderService/retry/maxAttempts` under `spec` -> `spec.orderService.retry.maxAttempts`;
/// array indices become `[i]`.
fn dotted(root: &str, pointer: &str, value: &Value) -> String {
    let mut path = root.to_string();
    let mut at = Some(value);
    for raw in pointer.split('/').skip(1) {
        let segment = raw.replace("~1", "/").replace("~0", "~");
        match at {
            Some(Value::Array(items)) => {
                path.push_str(&format!("[{segment}]"));
                at = segment.parse::<usize>().ok().and_then(|i| items.get(i));
            }
            _ => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&segment);
                at = at.and_then(|v| v.get(&segment));
            }
        }
    }
    if path.is_empty() {
        "(document)".into()
    } else {
        path
    }
}

/// One step of a path through the schema: a property, or any item of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Field(String),
    Item,
    /// Any key of a map (`additionalProperties`).
    Key,
}

/// One bound of the spec's schema: where, which keyword, and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Bound {
    pub path: Vec<Step>,
    /// `minimum`, `maximum`, `minLength`, `maxLength`, `minItems`,
    /// `maxItems` or `maxProperties`.
    pub keyword: &'static str,
    pub value: f64,
    /// The bound itself is outside (`exclusiveMinimum`/`exclusiveMaximum`).
    pub exclusive: bool,
    /// `integer`, `number`, `string` or `array`.
    pub type_: String,
}

impl Bound {
    /// `spec.load.stages[].ratePerSecond`
    pub fn display_path(&self) -> String {
        let mut s = String::from("spec");
        for step in &self.path {
            match step {
                Step::Field(f) => {
                    s.push('.');
                    s.push_str(f);
                }
                Step::Item => s.push_str("[]"),
                Step::Key => s.push_str("[*]"),
            }
        }
        s
    }
}

/// Every bound stated in the CRD's spec schema, in schema order.
pub fn bounds() -> Vec<Bound> {
    const KEYWORDS: [&str; 7] = [
        "minimum",
        "maximum",
        "minLength",
        "maxLength",
        "minItems",
        "maxItems",
        "maxProperties",
    ];
    fn walk(schema: &Value, path: &mut Vec<Step>, out: &mut Vec<Bound>) {
        let type_ = schema
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        for keyword in KEYWORDS {
            if let Some(value) = schema.get(keyword).and_then(Value::as_f64) {
                let exclusive = match keyword {
                    "minimum" => schema.get("exclusiveMinimum") == Some(&Value::Bool(true)),
                    "maximum" => schema.get("exclusiveMaximum") == Some(&Value::Bool(true)),
                    _ => false,
                };
                out.push(Bound {
                    path: path.clone(),
                    keyword,
                    value,
                    exclusive,
                    type_: type_.clone(),
                });
            }
        }
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (name, sub) in props {
                path.push(Step::Field(name.clone()));
                walk(sub, path, out);
                path.pop();
            }
        }
        if let Some(items) = schema.get("items") {
            path.push(Step::Item);
            walk(items, path, out);
            path.pop();
        }
        if let Some(values) = schema.get("additionalProperties").filter(|v| v.is_object()) {
            path.push(Step::Key);
            walk(values, path, out);
            path.pop();
        }
    }
    let mut out = Vec::new();
    walk(crd_spec_schema(), &mut Vec::new(), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_are_dotted_with_indices() {
        let v = json!({"load": {"stages": [{"a": 1}, {"ratePerSecond": -1}]}});
        assert_eq!(
            dotted("spec", "/load/stages/1/ratePerSecond", &v),
            "spec.load.stages[1].ratePerSecond"
        );
        assert_eq!(
            dotted("", "/schedule/0/faults", &json!({"schedule": [{}]})),
            "schedule[0].faults"
        );
        assert_eq!(dotted("", "", &v), "(document)");
    }

    #[test]
    fn the_crd_bounds_are_found_and_refused() {
        let all = bounds();
        let workers = all
            .iter()
            .find(|b| b.display_path() == "spec.orderService.workers" && b.keyword == "maximum")
            .expect("workers has a maximum");
        assert_eq!(workers.value, 512.0);
        assert!(all
            .iter()
            .any(|b| b.display_path() == "spec.payment.faultsSchedule" && b.keyword == "maxItems"));
        let errors = check_spec(
            &json!({"load": {"ratePerSecond": 1, "durationSeconds": 1}, "orderService": {"workers": 1000000}}),
        );
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].path, "spec.orderService.workers");
        assert!(errors[0].message.contains("512"), "{}", errors[0].message);
    }

    #[test]
    fn an_enum_names_every_choice() {
        let errors = check_spec(&json!({
            "load": {"ratePerSecond": 1, "durationSeconds": 9},
            "disruptions": [{"name": "x", "atSeconds": 1, "action": "Reboot"}]
        }));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].path, "spec.disruptions[0].action");
        assert_eq!(
            errors[0].message,
            "\"Reboot\" is not one of KillWorkers, KillOrderService, RestartDatabase, DatabaseLatency, DatabaseOutage"
        );
    }

    #[test]
    fn nullable_fields_accept_null() {
        assert_eq!(
            check_spec(
                &json!({"load": {"ratePerSecond": null, "stages": [{"ratePerSecond": 1, "durationSeconds": 1}]}})
            ),
            vec![]
        );
    }
}
