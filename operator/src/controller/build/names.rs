//! Names, labels and selectors of one run's children.

use super::DASHBOARD;
use crate::crd::ReliabilityExperiment;
use kube::ResourceExt;
use std::collections::BTreeMap;

pub const LABEL_EXPERIMENT: &str = "relab.dev/experiment";
pub const LABEL_RUN: &str = "relab.dev/run";
pub const LABEL_COMPONENT: &str = "relab.dev/component";
/// The variant a lab run's pods run (comparisons only).
pub const LABEL_VARIANT: &str = "relab.dev/variant";
pub const MANAGED_BY: &str = "relab-operator";
/// The component of the order-service pods (the API, and the workers
/// without `workerReplicas`).
pub const ORDER_SERVICE: &str = "order-service";
/// The component of the worker pods of their own (`workerReplicas`).
pub const WORKERS: &str = "workers";
/// The component of the (first) load generator's Job and pod.
pub const LOADGEN: &str = "loadgen";

/// Names of one run's children. An experiment of several lab runs
/// (variants, repeats) gives each its own children, one lab at a time:
/// `<experiment>-r<generation>-<lab run>-<component>`, labelled
/// `relab.dev/run=<generation>-<lab run>`. A scheduled run `n`
/// (`spec.schedule`) adds `s<n>` to the run: `<experiment>-r3s2-...`,
/// `relab.dev/run=3s2`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub experiment: String,
    pub generation: i64,
    /// Which scheduled run of the generation (None: not scheduled).
    pub scheduled_run: Option<u32>,
    /// Which lab run of a comparison (None: an experiment of one lab run).
    pub lab_run: Option<u32>,
    /// The variant the lab run runs (its pods carry it as `relab.dev/variant`).
    pub variant: Option<String>,
    /// When the experiment was created: a pod or Job with this run's names
    /// and labels created before is an earlier experiment's of the same name
    /// (deleted and applied again; its children are still going), never
    /// this one's ([`Names::is_ours`]).
    pub not_before: Option<k8s_openapi::jiff::Timestamp>,
    base: String,
    run_label: String,
}

impl Names {
    /// The names of the stored experiment's current run (its generation).
    pub fn new(rx: &ReliabilityExperiment) -> Self {
        Self {
            not_before: rx.metadata.creation_timestamp.as_ref().map(|t| t.0),
            ..Self::for_run(rx.name_any(), rx.metadata.generation.unwrap_or(0))
        }
    }

    /// Whether a child with metadata `meta` can be this experiment's, by
    /// when it was created (timestamps have whole seconds: one created in
    /// the experiment's own second is taken as ours).
    pub fn is_ours(&self, meta: &kube::api::ObjectMeta) -> bool {
        match (self.not_before, &meta.creation_timestamp) {
            (Some(not_before), Some(created)) => created.0 >= not_before,
            _ => true,
        }
    }

    /// Whether `meta` carries this run's labels ([`Self::run_labels`]).
    pub fn labels_this_run(&self, meta: &kube::api::ObjectMeta) -> bool {
        let labels = meta.labels.as_ref();
        self.run_labels()
            .iter()
            .all(|(k, v)| labels.and_then(|l| l.get(*k)).map(String::as_str) == Some(*v))
    }

    /// The names of run `generation` of the experiment `experiment`.
    pub fn for_run(experiment: String, generation: i64) -> Self {
        Self {
            base: String::new(),
            run_label: String::new(),
            experiment,
            generation,
            scheduled_run: None,
            lab_run: None,
            variant: None,
            not_before: None,
        }
        .named()
    }

    /// The names of lab run `lab_run` (of `variant`) of a comparison.
    pub fn for_lab_run(mut self, lab_run: u32, variant: Option<String>) -> Self {
        self.lab_run = Some(lab_run);
        self.variant = variant;
        self.named()
    }

    /// The names of scheduled run `n` of the generation (None: not scheduled).
    pub fn for_scheduled_run(mut self, n: Option<u32>) -> Self {
        self.scheduled_run = n;
        self.named()
    }

    fn named(mut self) -> Self {
        let mut run = self.generation.to_string();
        if let Some(n) = self.scheduled_run {
            run.push_str(&format!("s{n}"));
        }
        if let Some(k) = self.lab_run {
            run.push_str(&format!("-{k}"));
        }
        self.base = format!("{}-r{run}", self.experiment);
        self.run_label = run;
        self
    }

    /// The value of `relab.dev/run` on this run's children (`3`, `3-1` for
    /// lab run 1 of a comparison, `3s2` for scheduled run 2).
    pub fn run_label(&self) -> &str {
        &self.run_label
    }

    pub fn postgres(&self) -> String {
        format!("{}-postgres", self.base)
    }
    pub fn payment_mock(&self) -> String {
        format!("{}-payment-mock", self.base)
    }
    /// The claim of the payment mock's ledger.
    pub fn payment_ledger(&self) -> String {
        format!("{}-payment-ledger", self.base)
    }
    pub fn order_service(&self) -> String {
        format!("{}-order-service", self.base)
    }
    /// The payment workers apart from the API (`workerReplicas` only).
    pub fn workers(&self) -> String {
        format!("{}-workers", self.base)
    }
    /// The database fault proxy (database disruptions only).
    pub fn db_proxy(&self) -> String {
        format!("{}-db-proxy", self.base)
    }
    pub fn config(&self) -> String {
        format!("{}-config", self.base)
    }
    /// The load generator's Job, and (`load.parallelism` > 1) the Service
    /// its followers join it through.
    pub fn loadgen(&self) -> String {
        format!("{}-loadgen", self.base)
    }
    /// The Job of the load generators that follow the first (`load.parallelism` > 1).
    pub fn loadgen_shares(&self) -> String {
        format!("{}-loadgen-shares", self.base)
    }
    /// `relab.dev/experiment=<name>,relab.dev/run=<generation>`
    pub fn run_selector(&self) -> String {
        let [(e, experiment), (r, run)] = self.run_labels();
        format!("{e}={experiment},{r}={run}")
    }
    /// The labels every child of this run carries ([`Self::run_selector`]
    /// as pairs, for matching objects in the operator's caches).
    pub fn run_labels(&self) -> [(&'static str, &str); 2] {
        [(LABEL_EXPERIMENT, &self.experiment), (LABEL_RUN, &self.run_label)]
    }
    /// Every child of this experiment that belongs to another run (never
    /// the dashboard, which outlives runs).
    pub fn other_runs_selector(&self) -> String {
        format!(
            "{LABEL_EXPERIMENT}={},{LABEL_RUN}!={},{LABEL_COMPONENT}!={DASHBOARD}",
            self.experiment, self.run_label
        )
    }
    /// This run's children but the dashboard: what an earlier experiment
    /// of the same name left under this run's names (used before this run
    /// applied anything: [`Names::is_ours`]).
    pub fn earlier_experiments_selector(&self) -> String {
        format!("{},{LABEL_COMPONENT}!={DASHBOARD}", self.run_selector())
    }
    /// Every workload of this experiment (not the dashboard: like the
    /// results, it stays after the TTL).
    pub fn experiment_selector(&self) -> String {
        format!("{LABEL_EXPERIMENT}={},{LABEL_COMPONENT}!={DASHBOARD}", self.experiment)
    }
    /// The experiment's dashboard ConfigMap (one per experiment, updated per run).
    pub fn dashboard(&self) -> String {
        format!("{}-dashboard", self.experiment)
    }
    /// Every label of a child of this run that is `component`.
    pub fn labels(&self, component: &str) -> BTreeMap<String, String> {
        let mut labels = self.selector(component);
        if let Some(v) = &self.variant {
            labels.insert(LABEL_VARIANT.into(), v.clone());
        }
        labels.extend([
            ("app.kubernetes.io/name".into(), "relab-lab".into()),
            ("app.kubernetes.io/component".into(), component.into()),
            ("app.kubernetes.io/instance".into(), self.experiment.clone()),
            ("app.kubernetes.io/managed-by".into(), MANAGED_BY.into()),
        ]);
        labels
    }
    /// The labels that select this run's pods of `component`.
    pub fn selector(&self, component: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            (LABEL_EXPERIMENT.into(), self.experiment.clone()),
            (LABEL_RUN.into(), self.run_label.clone()),
            (LABEL_COMPONENT.into(), component.into()),
        ])
    }
}
