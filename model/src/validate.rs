//! From a manifest's text to a [`ValidatedExperiment`], the only value the
//! local runner, the operator's build step and the lab's configurations
//! take. Every problem is reported with its field path:
//!
//! 1. the document: at most [`MAX_MANIFEST_BYTES`], YAML or JSON, with
//!    `apiVersion`, `kind` and `spec`;
//! 2. `spec` against the generated CRD schema ([`crate::schema`]): every
//!    single-field bound, stated once as an attribute on the spec types;
//! 3. the typed spec (unknown fields are errors that name them);
//! 4. the rules that span fields ([`cross_field`]);
//! 5. for `relab run --time-scale`, the scaled durations ([`ValidatedExperiment::with_time_scale`]).

use crate::error::{FieldError, Problems};
use crate::faults::{check_windows, FaultPhase, FaultPlan, Window};
use crate::spec::{ReliabilityExperimentSpec, PULL_POLICIES};
use crate::variants::{Expectation, RepeatSpec};
use serde::{Deserialize, Serialize};
use std::time::Duration;

pub const API_VERSION: &str = "relab.dev/v1alpha1";
pub const KIND: &str = "ReliabilityExperiment";

/// Largest manifest read, in bytes (1 MiB, as the API server's request limit
/// for one object is in the same range). Readers stop at one byte more.
pub const MAX_MANIFEST_BYTES: usize = 1024 * 1024;

/// Longest experiment name: the operator names its children
/// `<name>-r<generation>-order-service`, which must stay DNS labels.
pub const MAX_NAME_LEN: usize = 40;

/// Longest name of an experiment of several lab runs (`-<lab run>` more).
pub const MAX_COMPARISON_NAME_LEN: usize = 37;

/// What `metadata` says in a manifest (the parts relab reads).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestMeta {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub generation: Option<i64>,
}

/// A manifest read from a file: metadata and the typed spec.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub metadata: ManifestMeta,
    pub spec: ReliabilityExperimentSpec,
}

/// Read at most [`MAX_MANIFEST_BYTES`] from `reader` (`/dev/zero` answers at
/// once); the error names the limit.
pub fn read_bounded(reader: impl std::io::Read) -> Result<String, Vec<FieldError>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    reader
        .take(MAX_MANIFEST_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| vec![FieldError::new("(document)", format!("cannot read: {e}"))])?;
    if bytes.len() > MAX_MANIFEST_BYTES {
        return Err(vec![FieldError::new(
            "(document)",
            format!("is larger than {MAX_MANIFEST_BYTES} bytes (1 MiB), the largest manifest relab reads"),
        )]);
    }
    String::from_utf8(bytes).map_err(|e| vec![FieldError::new("(document)", format!("is not UTF-8: {e}"))])
}

/// Parse a manifest (YAML or JSON): the document, the schema, the types.
/// Cross-field rules are [`ValidatedExperiment::new`]'s.
pub fn parse_manifest(text: &str) -> Result<Manifest, Vec<FieldError>> {
    if text.len() > MAX_MANIFEST_BYTES {
        return Err(vec![FieldError::new(
            "(document)",
            format!("is larger than {MAX_MANIFEST_BYTES} bytes (1 MiB), the largest manifest relab reads"),
        )]);
    }
    let doc: serde_json::Value =
        serde_yaml::from_str(text).map_err(|e| vec![FieldError::new("(document)", e.to_string())])?;
    let field = |name: &str| doc.get(name).and_then(|v| v.as_str()).unwrap_or_default().to_string();
    let mut p = Problems::default();
    if !doc.is_object() {
        p.add(
            "(document)",
            "must be a mapping with apiVersion, kind, metadata and spec",
        );
        return Err(p.0);
    }
    let (api_version, kind) = (field("apiVersion"), field("kind"));
    if api_version != API_VERSION {
        p.add("apiVersion", format!("must be {API_VERSION}, got {api_version:?}"));
    }
    if kind != KIND {
        p.add("kind", format!("must be {KIND}, got {kind:?}"));
    }
    match doc.get("spec") {
        None => p.add("spec", "is required"),
        Some(spec) => p.0.extend(crate::schema::check_spec(spec)),
    }
    if !p.is_empty() {
        return Err(p.0);
    }
    let metadata: ManifestMeta = match doc.get("metadata") {
        None => ManifestMeta::default(),
        Some(m) => typed(m, "metadata")?,
    };
    let spec = typed(&doc["spec"], "spec")?;
    Ok(Manifest { metadata, spec })
}

/// `value` as `T`, or the error with its path (`spec.load.stagez`).
fn typed<T: serde::de::DeserializeOwned>(value: &serde_json::Value, root: &str) -> Result<T, Vec<FieldError>> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().to_string();
        // name the unknown or missing field itself
        let field = ["unknown field `", "missing field `"].iter().find_map(|pat| {
            let rest = &message[message.find(pat)? + pat.len()..];
            Some(rest[..rest.find('`')?].to_string())
        });
        let mut full = if path == "." {
            root.to_string()
        } else {
            format!("{root}.{path}")
        };
        if let Some(f) = field {
            if !full.ends_with(&f) {
                full = format!("{full}.{f}");
            }
        }
        vec![FieldError::new(full, message)]
    })
}

/// The rules that span fields (single-field bounds are the schema's), each
/// problem with its path. Empty when the spec is valid.
pub fn cross_field(spec: &ReliabilityExperimentSpec) -> Vec<FieldError> {
    let mut p = Problems::default();
    let load = &spec.load;
    if load.stages.is_empty() {
        match load.rate_per_second {
            None => p.add("spec.load.ratePerSecond", "is required (or give spec.load.stages)"),
            Some(r) if r <= 0.0 => p.add("spec.load.ratePerSecond", format!("must be above 0, got {r}")),
            _ => {}
        }
        if load.duration_seconds.is_none() {
            p.add("spec.load.durationSeconds", "is required (or give spec.load.stages)");
        }
    } else if load.stages.iter().all(|s| s.rate_per_second == 0.0) {
        p.add("spec.load.stages", "at least one stage must have a rate above 0");
    }

    let total = load.total_seconds();
    spec.payment.faults.check("spec.payment", &mut p);
    let windows = spec.payment.faults_schedule.iter().enumerate().map(|(i, ph)| Window {
        path: format!("spec.payment.faultsSchedule[{i}]"),
        name: &ph.name,
        start: u64::from(ph.start_seconds),
        end: ph.end_seconds.map(u64::from),
    });
    check_windows(
        windows,
        ("startSeconds", "endSeconds"),
        "s",
        (total > 0).then_some(total),
        &mut p,
    );
    for (i, ph) in spec.payment.faults_schedule.iter().enumerate() {
        ph.faults.check(&format!("spec.payment.faultsSchedule[{i}]"), &mut p);
    }

    let os = &spec.order_service;
    let settings = std::iter::once(("spec.payment".to_string(), &spec.payment.faults)).chain(
        spec.payment
            .faults_schedule
            .iter()
            .enumerate()
            .map(|(i, ph)| (format!("spec.payment.faultsSchedule[{i}]"), &ph.faults)),
    );
    for (path, f) in settings {
        if f.hangs() && f.hang_ms <= os.payment_timeout_ms {
            p.add(
                format!("{path}.hangMs"),
                format!(
                    "must exceed spec.orderService.paymentTimeoutMs ({} ms) so hung calls time out, got {}",
                    os.payment_timeout_ms, f.hang_ms
                ),
            );
        }
    }
    let r = &os.retry;
    if r.max_backoff_ms < r.initial_backoff_ms {
        p.add(
            "spec.orderService.retry.maxBackoffMs",
            format!(
                "must be at least initialBackoffMs ({} ms), got {} ms",
                r.initial_backoff_ms, r.max_backoff_ms
            ),
        );
    }
    if let Some(pool) = os.database_pool.workers {
        let least = os.workers + crate::spec::WORKER_POOL_MIN_HEADROOM;
        if pool < least {
            p.add(
                "spec.orderService.databasePool.workers",
                format!(
                    "must be at least workers + {} ({least}): one connection per job loop, and room for the lease heartbeats and reaper; got {pool}",
                    crate::spec::WORKER_POOL_MIN_HEADROOM
                ),
            );
        }
    }
    if spec.order_service.circuit_breaker.failure_ratio <= 0.0 {
        p.add(
            "spec.orderService.circuitBreaker.failureRatio",
            "must be above 0 (a ratio of 0 would open the breaker on no failure)",
        );
    }
    if spec.baseline.is_some() && (!spec.variants.is_empty() || !spec.sweep.0.is_empty()) {
        p.add(
            "spec.baseline",
            "compares one configuration with its last passed run: not with spec.variants or spec.sweep",
        );
    }
    for (i, o) in spec.objectives.end_to_end_latency.iter().enumerate() {
        if !o.requests.is_all() {
            p.add(
                format!("spec.objectives.endToEndLatency[{i}].requests"),
                "only apiLatency objectives select requests: end-to-end latency exists only for accepted orders",
            );
        }
    }
    crate::ops::check_stop_when(&spec.stop_when, spec.objectives.success_ratio, &mut p);
    crate::disruptions::check_disruptions(&spec.disruptions, total, spec.database.external.is_some(), &mut p);
    if spec.objectives.max_recovery_seconds.is_some() && spec.disruptions.is_empty() {
        p.add(
            "spec.objectives.maxRecoverySeconds",
            "measures recovery from spec.disruptions: there are none",
        );
    }
    if let Some(Err(problems)) = spec.schedule.as_ref().map(|s| s.parsed()) {
        p.0.extend(problems);
    }
    if let Some(pp) = spec.images.pull_policy.as_deref() {
        if !PULL_POLICIES.contains(&pp) {
            p.add(
                "spec.images.pullPolicy",
                format!("must be Always, IfNotPresent or Never, got {pp:?}"),
            );
        }
    }
    p.0
}

/// The experiment's name, when given: a DNS label of at most [`MAX_NAME_LEN`]
/// characters (the operator names the lab's objects after it).
pub fn check_name(name: Option<&str>) -> Vec<FieldError> {
    let Some(name) = name else { return Vec::new() };
    let mut p = Problems::default();
    let dns_label = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !dns_label {
        p.add(
            "metadata.name",
            format!("must be a DNS label (lowercase letters, digits and '-'), got {name:?}"),
        );
    } else if name.len() > MAX_NAME_LEN {
        p.add(
            "metadata.name",
            format!(
                "must be at most {MAX_NAME_LEN} characters (the lab's objects are named after it), got {}",
                name.len()
            ),
        );
    }
    p.0
}

/// Validate each variant as a spec of its own: the base spec (without
/// the comparison fields) with the variant's overrides deep-merged, through
/// the schema, the types and the cross-field rules; problems named at the
/// variant (or the sweep entry).
fn plan_variants(spec: &ReliabilityExperimentSpec, problems: &mut Vec<FieldError>) -> Vec<PlannedVariant> {
    use crate::variants::{check, deep_merge, expand_sweep, rehome};
    let mut base = spec.clone();
    base.variants.clear();
    base.sweep = Default::default();
    base.repeat = None;
    let defaults = serde_json::to_value(&base).expect("a spec serializes");
    let mut p = Problems::default();
    check(
        &spec.variants,
        &spec.sweep.0,
        &spec.repeat.clone().unwrap_or_default(),
        &defaults,
        &mut p,
    );
    if !p.is_empty() {
        // the variants cannot be made (or are too many): say so, not more
        problems.extend(p.0);
        return Vec::new();
    }
    let (variants, sweep) = if spec.sweep.0.is_empty() {
        (spec.variants.clone(), None)
    } else {
        (expand_sweep(&spec.sweep.0), Some(&spec.sweep.0))
    };
    let mut out = Vec::new();
    for (i, v) in variants.iter().enumerate() {
        let mut merged = defaults.clone();
        let mut overrides = serde_json::Map::new();
        for (root, value) in [("orderService", &v.order_service), ("payment", &v.payment)] {
            if let Some(value) = value {
                let value = serde_json::Value::Object(value.clone());
                deep_merge(&mut merged[root], &value);
                overrides.insert(root.to_string(), value);
            }
        }
        let mut found = crate::schema::check_spec(&merged);
        let typed: Option<ReliabilityExperimentSpec> = if found.is_empty() {
            match typed(&merged, "spec") {
                Ok(t) => Some(t),
                Err(e) => {
                    found.extend(e);
                    None
                }
            }
        } else {
            None
        };
        if let Some(t) = &typed {
            found.extend(cross_field(t));
        }
        let before = problems.len();
        for e in found.into_iter().map(|e| rehome(e, v, i, sweep)) {
            // a sweep entry that breaks every variant is reported once
            if !problems
                .iter()
                .any(|known| known.path == e.path && e.path.starts_with("spec.sweep"))
            {
                problems.push(e);
            }
        }
        if let (Some(t), true) = (typed, problems.len() == before) {
            out.push(PlannedVariant {
                name: v.name.clone(),
                expect: v.expect,
                overrides: serde_json::Value::Object(overrides),
                experiment: ValidatedExperiment {
                    name: v.name.clone(),
                    spec: t,
                    time_scale: 1.0,
                    variants: Vec::new(),
                },
            });
        }
    }
    out
}

/// One stage of the load: a constant arrival rate for a while.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadStage {
    /// Requests per second (0: a pause).
    pub rate_per_sec: f64,
    pub duration: Duration,
}

/// A spec that passed every check: what the local runner, the operator's
/// build step and the lab's configurations take. Its durations include
/// the time scale (1 unless `relab run --time-scale`).
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedExperiment {
    name: String,
    spec: ReliabilityExperimentSpec,
    time_scale: f64,
    /// The configurations compared (`spec.variants`, or `spec.sweep`
    /// expanded), each validated as a spec of its own; empty without.
    variants: Vec<PlannedVariant>,
}

/// One variant of an experiment: its name, what it is meant to show, the
/// overrides it was made of, and its own validated spec.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedVariant {
    pub name: String,
    pub expect: Expectation,
    /// `{"orderService": {...}, "payment": {...}}` as given (or as the sweep made it).
    pub overrides: serde_json::Value,
    pub experiment: ValidatedExperiment,
}

/// One lab run of an experiment: which variant (none without variants),
/// which repeat, and the spec it runs (payment seed + repeat).
#[derive(Debug, Clone, PartialEq)]
pub struct LabRun {
    pub variant: Option<usize>,
    pub repeat: u32,
    pub experiment: ValidatedExperiment,
}

/// The range `--time-scale` may take.
pub const TIME_SCALE_RANGE: (f64, f64) = (0.001, 100.0);

impl ValidatedExperiment {
    /// Check `spec` (and `name`, when given) with every cross-field rule.
    /// The spec is expected to have passed the schema (a parsed manifest,
    /// or an object the API server accepted).
    pub fn new(name: Option<&str>, spec: ReliabilityExperimentSpec) -> Result<Self, Vec<FieldError>> {
        let mut problems = check_name(name);
        problems.extend(cross_field(&spec));
        let variants = plan_variants(&spec, &mut problems);
        let lab_runs = variants.len().max(1) * spec.repeat.as_ref().map_or(1, |r| r.runs as usize);
        if let Some(name) = name.filter(|n| lab_runs > 1 && n.len() > MAX_COMPARISON_NAME_LEN) {
            problems.push(FieldError::new(
                "metadata.name",
                format!(
                    "must be at most {MAX_COMPARISON_NAME_LEN} characters for an experiment of several lab runs \
                     (each lab run's objects are named after it and its number), got {}",
                    name.len()
                ),
            ));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Self {
            name: name.unwrap_or("experiment").to_string(),
            spec,
            time_scale: 1.0,
            variants,
        })
    }

    /// The variants compared (empty when the spec has none).
    pub fn variants(&self) -> &[PlannedVariant] {
        &self.variants
    }

    /// `spec.repeat`, or one run.
    pub fn repeat(&self) -> RepeatSpec {
        self.spec.repeat.clone().unwrap_or_default()
    }

    /// Every lab run, in the order the local runner runs them: interleaved
    /// A1 B1 A2 B2 ..., so that drift of the machine hits every variant
    /// alike. Run i of a variant uses the payment seed + i.
    pub fn lab_runs(&self) -> Vec<LabRun> {
        let runs = self.repeat().runs;
        let mut out = Vec::new();
        for repeat in 0..runs {
            if self.variants.is_empty() {
                out.push(LabRun {
                    variant: None,
                    repeat,
                    experiment: self.seeded(repeat),
                });
            }
            for (i, v) in self.variants.iter().enumerate() {
                out.push(LabRun {
                    variant: Some(i),
                    repeat,
                    experiment: v.experiment.seeded(repeat),
                });
            }
        }
        out
    }

    /// This experiment with the payment seed moved on by `offset`.
    pub fn seeded(&self, offset: u32) -> Self {
        let mut next = self.clone();
        next.spec.payment.seed = next.spec.payment.seed.wrapping_add(u64::from(offset));
        next
    }

    /// Parse and validate a manifest's text.
    pub fn from_manifest(text: &str) -> Result<(Self, ManifestMeta), Vec<FieldError>> {
        let m = parse_manifest(text)?;
        let v = Self::new(m.metadata.name.as_deref(), m.spec)?;
        Ok((v, m.metadata))
    }

    /// Every duration of the load and the fault schedule multiplied by
    /// `factor`, rates kept. A valid manifest stays valid: the scale works
    /// in milliseconds, not in the manifest's whole seconds, and within
    /// [`TIME_SCALE_RANGE`] the shortest duration a manifest can state (1 s)
    /// stays at least 1 ms, which sends at least one order at any rate above 0.
    pub fn with_time_scale(mut self, factor: f64) -> Result<Self, Vec<FieldError>> {
        let (lo, hi) = TIME_SCALE_RANGE;
        if !(factor.is_finite() && (lo..=hi).contains(&factor)) {
            return Err(vec![FieldError::new(
                "--time-scale",
                format!("must be within {lo}..={hi}, got {factor}"),
            )]);
        }
        self.time_scale = factor;
        for v in &mut self.variants {
            v.experiment.time_scale = factor;
        }
        Ok(self)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The spec as written (unscaled; defaults filled in).
    pub fn spec(&self) -> &ReliabilityExperimentSpec {
        &self.spec
    }

    pub fn time_scale(&self) -> f64 {
        self.time_scale
    }

    fn scaled(&self, seconds: u64) -> Duration {
        Duration::from_secs_f64(seconds as f64 * self.time_scale)
    }

    fn scaled_ms(&self, seconds: u64) -> u64 {
        (seconds as f64 * 1000.0 * self.time_scale).round() as u64
    }

    /// `spec.disruptions` as the runners fire them (times scaled).
    pub fn disruptions(&self) -> Vec<crate::disruptions::PlannedDisruption> {
        self.spec
            .disruptions
            .iter()
            .map(|d| crate::disruptions::PlannedDisruption::of(d, self.time_scale))
            .collect()
    }

    /// The load's stages: `stages` when given, else one stage of
    /// `ratePerSecond` for `durationSeconds`; scaled.
    pub fn load_stages(&self) -> Vec<LoadStage> {
        let load = &self.spec.load;
        if load.stages.is_empty() {
            vec![LoadStage {
                rate_per_sec: load.rate_per_second.unwrap_or(0.0),
                duration: self.scaled(u64::from(load.duration_seconds.unwrap_or(0))),
            }]
        } else {
            load.stages
                .iter()
                .map(|s| LoadStage {
                    rate_per_sec: s.rate_per_second,
                    duration: self.scaled(u64::from(s.duration_seconds)),
                })
                .collect()
        }
    }

    /// How long the load lasts, scaled.
    pub fn load_duration(&self) -> Duration {
        self.load_stages().iter().map(|s| s.duration).sum()
    }

    /// The wait for accepted orders after the load (not scaled: it bounds
    /// the pipeline, not the drill).
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs(u64::from(self.spec.load.drain_timeout_seconds))
    }

    /// The payment mock's plan; phase times (ms, scaled) are relative to the
    /// load's start (the run re-sends the plan at that moment, which restarts
    /// the mock's schedule clock).
    pub fn fault_plan(&self) -> FaultPlan {
        let payment = &self.spec.payment;
        FaultPlan {
            seed: payment.seed,
            base: payment.faults.clone(),
            schedule: payment
                .faults_schedule
                .iter()
                .map(|p| FaultPhase {
                    name: p.name.clone(),
                    start_ms: self.scaled_ms(u64::from(p.start_seconds)),
                    end_ms: p.end_seconds.map(|e| self.scaled_ms(u64::from(e))),
                    faults: p.faults.clone(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = r#"
apiVersion: relab.dev/v1alpha1
kind: ReliabilityExperiment
metadata: {name: t}
spec:
  load: {ratePerSecond: 20, durationSeconds: 30}
  payment:
    failureRate: 0.3
    faultsSchedule:
      - {name: outage, startSeconds: 10, endSeconds: 20, failureRate: 1.0}
  orderService:
    retry: {maxAttempts: 4, initialBackoffMs: 50, maxBackoffMs: 800}
  objectives:
    successRatio: 0.95
    apiLatency: [{percentile: p95, maxMs: 250}]
"#;

    fn paths(yaml: &str) -> Vec<String> {
        match ValidatedExperiment::from_manifest(yaml) {
            Err(e) => e.into_iter().map(|e| e.path).collect(),
            Ok(_) => Vec::new(),
        }
    }

    #[test]
    fn a_valid_manifest_has_no_problems() {
        assert_eq!(paths(VALID), Vec::<String>::new());
        let (v, meta) = ValidatedExperiment::from_manifest(VALID).unwrap();
        assert_eq!(meta.name.as_deref(), Some("t"));
        assert_eq!(v.spec().order_service.retry.max_attempts, 4);
        assert_eq!(v.spec().payment.faults_schedule[0].faults.failure_rate, 1.0);
        assert_eq!(v.spec().order_service.retry.jitter, 0.5, "defaults fill the rest");
    }

    #[test]
    fn each_problem_names_its_field() {
        let cases = [
            ("failureRate: 0.3", "failureRate: 1.3", "spec.payment.failureRate"),
            (
                "maxBackoffMs: 800",
                "maxBackoffMs: 10",
                "spec.orderService.retry.maxBackoffMs",
            ),
            (
                "endSeconds: 20",
                "endSeconds: 45",
                "spec.payment.faultsSchedule[0].endSeconds",
            ),
            (
                "endSeconds: 20",
                "endSeconds: 5",
                "spec.payment.faultsSchedule[0].endSeconds",
            ),
            (
                "{ratePerSecond: 20, durationSeconds: 30}",
                "{durationSeconds: 30}",
                "spec.load.ratePerSecond",
            ),
            ("successRatio: 0.95", "successRatio: 2", "spec.objectives.successRatio"),
            ("metadata: {name: t}", "metadata: {name: T_x}", "metadata.name"),
        ];
        for (from, to, want) in cases {
            let got = paths(&VALID.replace(from, to));
            assert!(got.contains(&want.to_string()), "{to}: got {got:?}");
        }
    }

    #[test]
    fn worker_replicas_and_pools_default_to_todays_layout_and_derive_from_workers() {
        let (v, _) = ValidatedExperiment::from_manifest(VALID).unwrap();
        let os = &v.spec().order_service;
        assert!(!os.separate_workers());
        assert_eq!((os.worker_processes(), os.api_pool(), os.worker_pool()), (1, 16, 16));
        let yaml = VALID.replace(
            "retry: {",
            "replicas: 2\n    workerReplicas: 3\n    workers: 40\n    retry: {",
        );
        let (v, _) = ValidatedExperiment::from_manifest(&yaml).unwrap();
        let os = &v.spec().order_service;
        assert!(os.separate_workers());
        assert_eq!(
            (os.worker_processes(), os.api_pool(), os.worker_pool()),
            (3, 16, 48),
            "workers + 8"
        );
        let yaml = VALID.replace(
            "retry: {",
            "workers: 10\n    databasePool: {api: 4, workers: 12}\n    retry: {",
        );
        let (v, _) = ValidatedExperiment::from_manifest(&yaml).unwrap();
        let os = &v.spec().order_service;
        assert_eq!((os.api_pool(), os.worker_pool()), (4, 12), "workers + 2 is enough");
    }

    #[test]
    fn a_worker_pool_below_its_job_loops_is_refused_naming_the_field() {
        let yaml = VALID.replace("retry: {", "workers: 10\n    databasePool: {workers: 11}\n    retry: {");
        let problems = ValidatedExperiment::from_manifest(&yaml).unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].path, "spec.orderService.databasePool.workers");
        assert!(
            problems[0].message.contains("at least workers + 2 (12)"),
            "{}",
            problems[0].message
        );
        // a variant's pool derives from its own workers
        let yaml = VALID.to_string() + "  variants:\n    - {name: a}\n    - {name: b, orderService: {workers: 100}}\n";
        let (v, _) = ValidatedExperiment::from_manifest(&yaml).unwrap();
        assert_eq!(v.variants()[1].experiment.spec().order_service.worker_pool(), 108);
        // a variant that raises workers past a pool the base states is refused
        let yaml = VALID.replace("retry: {", "databasePool: {workers: 10}\n    retry: {")
            + "  variants:\n    - {name: a}\n    - {name: b, orderService: {workers: 9}}\n";
        assert_eq!(paths(&yaml), ["spec.orderService.databasePool.workers"]);
    }

    #[test]
    fn unknown_fields_and_wrong_types_name_the_field() {
        let got = paths(&VALID.replace("maxAttempts: 4", "maxAttempts: 4, maxAttempt: 3"));
        assert_eq!(got, vec!["spec.orderService.retry.maxAttempt"], "{got:?}");
        let got = paths(&VALID.replace("durationSeconds: 30", "durationSeconds: -30"));
        assert_eq!(got, vec!["spec.load.durationSeconds"], "{got:?}");
        let got = paths(&VALID.replace("kind: ReliabilityExperiment", "kind: Experiment"));
        assert_eq!(got, vec!["kind"]);
    }

    #[test]
    fn rates_must_sum_to_at_most_one_and_hangs_must_outlast_the_timeout() {
        let got = paths(&VALID.replace(
            "failureRate: 0.3",
            "failureRate: 0.6\n    timeoutRate: 0.6\n    hangMs: 500",
        ));
        assert!(got.contains(&"spec.payment".to_string()), "{got:?}");
        assert!(got.contains(&"spec.payment.hangMs".to_string()), "{got:?}");
    }

    #[test]
    fn overlapping_phases_are_refused() {
        let yaml = VALID.replace(
            "- {name: outage, startSeconds: 10, endSeconds: 20, failureRate: 1.0}",
            "- {name: a, startSeconds: 10, endSeconds: 20}\n      - {name: b, startSeconds: 15, endSeconds: 25}",
        );
        assert_eq!(paths(&yaml), vec!["spec.payment.faultsSchedule[1].startSeconds"]);
    }

    #[test]
    fn the_schema_bounds_are_enforced_with_their_field() {
        for (from, to, want) in [
            (
                "retry: {",
                "workers: 1000000\n    retry: {",
                "spec.orderService.workers",
            ),
            ("retry: {", "replicas: 100\n    retry: {", "spec.orderService.replicas"),
            (
                "retry: {",
                "workerReplicas: 0\n    retry: {",
                "spec.orderService.workerReplicas",
            ),
            (
                "retry: {",
                "databasePool: {api: 1001}\n    retry: {",
                "spec.orderService.databasePool.api",
            ),
            (
                "maxAttempts: 4",
                "maxAttempts: 1000",
                "spec.orderService.retry.maxAttempts",
            ),
            (
                "durationSeconds: 30",
                "durationSeconds: 86401",
                "spec.load.durationSeconds",
            ),
            (
                "name: outage",
                &format!("name: {}", "x".repeat(100)),
                "spec.payment.faultsSchedule[0].name",
            ),
        ] {
            let got = paths(&VALID.replace(from, to));
            assert_eq!(got, vec![want.to_string()], "{to}");
        }
        let many = (0..65)
            .map(|i| format!("      - {{name: p{i}, startSeconds: {i}, endSeconds: {}}}", i + 1))
            .collect::<Vec<_>>()
            .join("\n");
        let yaml = VALID.replace("durationSeconds: 30", "durationSeconds: 300").replace(
            "      - {name: outage, startSeconds: 10, endSeconds: 20, failureRate: 1.0}",
            &many,
        );
        assert_eq!(paths(&yaml), vec!["spec.payment.faultsSchedule"]);
    }

    #[test]
    fn oversized_manifests_are_refused_before_parsing() {
        let huge = format!("{VALID}\n#{}", "x".repeat(MAX_MANIFEST_BYTES));
        assert_eq!(paths(&huge), vec!["(document)"]);
        let err = read_bounded(std::io::repeat(0)).unwrap_err();
        assert!(err[0].message.contains("1048576"), "{}", err[0].message);
    }

    #[test]
    fn time_scale_keeps_a_valid_manifest_valid_in_milliseconds() {
        let yaml = VALID.replace(
            "- {name: outage, startSeconds: 10, endSeconds: 20, failureRate: 1.0}",
            "- {name: a, startSeconds: 0, endSeconds: 1}\n      - {name: b, startSeconds: 1, endSeconds: 2}",
        );
        let (v, _) = ValidatedExperiment::from_manifest(&yaml).unwrap();
        let v = v.with_time_scale(0.25).expect("still valid when scaled");
        let plan = v.fault_plan();
        assert_eq!((plan.schedule[0].start_ms, plan.schedule[0].end_ms), (0, Some(250)));
        assert_eq!((plan.schedule[1].start_ms, plan.schedule[1].end_ms), (250, Some(500)));
        assert!(plan.validate().is_ok());
        assert_eq!(v.load_duration(), Duration::from_millis(7500));
        let (v, _) = ValidatedExperiment::from_manifest(VALID).unwrap();
        let shortest = v.clone().with_time_scale(TIME_SCALE_RANGE.0).unwrap();
        assert_eq!(shortest.load_duration(), Duration::from_millis(30));
        for bad in [0.0, 0.0005, -1.0, f64::NAN, 101.0] {
            assert_eq!(
                v.clone().with_time_scale(bad).unwrap_err()[0].path,
                "--time-scale",
                "{bad}"
            );
        }
    }

    const VARIANTS: &str = r#"
apiVersion: relab.dev/v1alpha1
kind: ReliabilityExperiment
metadata: {name: t}
spec:
  load: {ratePerSecond: 20, durationSeconds: 30}
  variants:
    - {name: with-breaker}
    - name: no-breaker
      expect: Failed
      orderService: {circuitBreaker: {enabled: false}}
  repeat: {runs: 2, confidence: 0.9}
"#;

    #[test]
    fn variants_are_validated_specs_of_their_own_run_interleaved_with_seeds() {
        let (v, _) = ValidatedExperiment::from_manifest(VARIANTS).unwrap();
        let names: Vec<_> = v.variants().iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["with-breaker", "no-breaker"]);
        assert!(v.variants()[0].experiment.spec().order_service.circuit_breaker.enabled);
        let off = &v.variants()[1];
        assert!(!off.experiment.spec().order_service.circuit_breaker.enabled);
        assert_eq!(off.expect, Expectation::Failed);
        assert_eq!(
            off.experiment.spec().order_service.retry.max_attempts,
            4,
            "the rest is the base's"
        );
        assert_eq!(
            off.overrides,
            serde_json::json!({"orderService": {"circuitBreaker": {"enabled": false}}})
        );
        let order: Vec<_> = v
            .lab_runs()
            .iter()
            .map(|r| (r.variant, r.repeat, r.experiment.spec().payment.seed))
            .collect();
        assert_eq!(
            order,
            [(Some(0), 0, 42), (Some(1), 0, 42), (Some(0), 1, 43), (Some(1), 1, 43)]
        );
        let scaled = v.with_time_scale(0.5).unwrap();
        assert_eq!(scaled.variants()[1].experiment.load_duration(), Duration::from_secs(15));
    }

    #[test]
    fn every_comparison_problem_names_its_field() {
        let cases = [
            (
                "circuitBreaker: {enabled: false}",
                "circuitBreaker: {enabld: false}",
                "spec.variants[1].orderService.circuitBreaker.enabld",
            ),
            (
                "circuitBreaker: {enabled: false}",
                "workers: 100000",
                "spec.variants[1].orderService.workers",
            ),
            (
                "circuitBreaker: {enabled: false}",
                "retry: {initialBackoffMs: 5000}",
                "spec.variants[1].orderService.retry.maxBackoffMs",
            ),
            ("name: no-breaker", "name: with-breaker", "spec.variants[1].name"),
            ("name: no-breaker", "name: No_Breaker", "spec.variants[1].name"),
            ("{runs: 2, confidence: 0.9}", "{runs: 0}", "spec.repeat.runs"),
            ("{runs: 2, confidence: 0.9}", "{runs: 51}", "spec.repeat.runs"),
            (
                "{runs: 2, confidence: 0.9}",
                "{runs: 2, confidence: 0.5}",
                "spec.repeat.confidence",
            ),
            (
                "{runs: 2, confidence: 0.9}",
                "{runs: 2, confidence: 0.999}",
                "spec.repeat.confidence",
            ),
            ("{runs: 2, confidence: 0.9}", "{runs: 33}", "spec.variants"),
            (
                "  repeat:",
                "  sweep: {orderService.retry.maxAttempts: [1, 2]}\n  repeat:",
                "spec.sweep",
            ),
        ];
        for (from, to, want) in cases {
            let yaml = VARIANTS.replace(from, to);
            assert_ne!(yaml, VARIANTS, "{to}");
            let got = paths(&yaml);
            assert!(got.contains(&want.to_string()), "{to}: got {got:?}");
        }
        let sweep = |entries: &str| {
            paths(&format!(
                "apiVersion: relab.dev/v1alpha1\nkind: ReliabilityExperiment\nmetadata: {{name: t}}\nspec:\n  load: {{ratePerSecond: 20, durationSeconds: 30}}\n  sweep: {{{entries}}}\n"
            ))
        };
        assert_eq!(sweep("orderService.retry.maxAttempts: [1, 3, 5]"), Vec::<String>::new());
        assert_eq!(
            sweep("orderService.retry.maxAtempts: [1, 3]"),
            [r#"spec.sweep["orderService.retry.maxAtempts"]"#]
        );
        assert_eq!(
            sweep("orderService.retry: [1, 3]"),
            [r#"spec.sweep["orderService.retry"]"#]
        );
        assert_eq!(
            sweep("load.ratePerSecond: [1, 3]"),
            [r#"spec.sweep["load.ratePerSecond"]"#]
        );
        let bad_value = sweep("orderService.retry.maxAttempts: [1, 1000]");
        assert_eq!(
            bad_value,
            [r#"spec.sweep["orderService.retry.maxAttempts"]"#],
            "the field's own bound"
        );
        let many = sweep("orderService.retry.maxAttempts: [1, 2, 3, 4, 5, 6, 7, 8], orderService.workers: [1, 2, 3, 4, 5, 6, 7, 8, 9]");
        assert_eq!(many, ["spec.sweep"], "72 lab runs");
    }
}
