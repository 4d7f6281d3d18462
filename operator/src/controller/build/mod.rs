//! The build step (pure): a run's desired children as typed Kubernetes
//! objects, from the validated experiment and the resource's identity only
//! (never the stored resource's raw spec). One module per child.
//!
//! Each run of an experiment (one `metadata.generation`) gets children of its
//! own, named `<experiment>-r<generation>-<component>` and labelled
//! `relab.dev/run=<generation>`: a new run never talks to the previous run's
//! database or mock, and the previous run's objects are deleted by label.
//!
//! Built in two steps because the lab finds its parts by Service ClusterIP
//! (the test cluster has no DNS): first the Services ([`services()`]), then,
//! with their assigned IPs, everything else ([`workloads`]). Every setting
//! reaches the lab's processes through the lab-service types that own them
//! ([`config_map::lab_environment`]).

pub mod config_map;
pub mod dashboard;
pub mod db_proxy;
pub mod loadgen;
pub mod names;
pub mod order_service;
pub mod payment_mock;
pub mod pod;
pub mod postgres;
pub mod services;
pub mod workers;

use crate::crd::ReliabilityExperiment;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::ApiResource;
use kube::{Resource, ResourceExt};
use relab_model::ValidatedExperiment;
use serde::Serialize;
use serde_json::Value;

pub use config_map::{lab_environment, managed_database_url};
pub use dashboard::{dashboard, DashboardOptions, DASHBOARD};
pub use names::{
    Names, LABEL_COMPONENT, LABEL_EXPERIMENT, LABEL_RUN, LABEL_VARIANT, LOADGEN, MANAGED_BY, ORDER_SERVICE, WORKERS,
};
pub use pod::LAB_GRACE_SECONDS;
pub use services::{services, ServiceIps};

pub const API_PORT: i32 = 8080;
pub const WORKER_ADMIN_PORT: i32 = 9090;
pub const MOCK_PORT: i32 = 8081;
pub const POSTGRES_PORT: i32 = 5432;
/// The load generator's `GET /progress` (its stage: load, drain, audit).
pub const LOADGEN_PROGRESS_PORT: i32 = 9091;
/// The database fault proxy's admin server (`PUT /faults`, `GET /stats`);
/// its clients connect on [`POSTGRES_PORT`].
pub const DB_PROXY_ADMIN_PORT: i32 = 9093;

/// Operator-wide defaults for the lab's pods (flags of `relab operator`);
/// `spec.images` overrides them per experiment.
#[derive(Debug, Clone, PartialEq)]
pub struct LabDefaults {
    pub lab_image: String,
    pub postgres_image: String,
    pub pull_policy: String,
    /// How long the load generator waits for the database, API and mock.
    pub wait_ready_secs: u64,
    /// Where the payment mock journals its ledger.
    pub ledger_volume: LedgerVolume,
}

/// The payment mock's ledger volume (`relab operator --ledger-volume`).
#[derive(Debug, Clone, PartialEq)]
pub enum LedgerVolume {
    /// A PersistentVolumeClaim per run: the ledger survives the pod's
    /// deletion (the default).
    Claim {
        /// None: the cluster's default StorageClass.
        storage_class: Option<String>,
        /// The claim's request, e.g. `64Mi`.
        size: String,
    },
    /// An `emptyDir`: the ledger survives container restarts, not the pod's
    /// deletion (clusters without storage).
    EmptyDir,
}

impl Default for LedgerVolume {
    fn default() -> Self {
        LedgerVolume::Claim {
            storage_class: None,
            size: "64Mi".into(),
        }
    }
}

impl Default for LabDefaults {
    fn default() -> Self {
        Self {
            lab_image: format!("ghcr.io/relab-dev/lab-service:{}", env!("CARGO_PKG_VERSION")),
            postgres_image: "docker.io/library/postgres:16-alpine".into(),
            pull_policy: "IfNotPresent".into(),
            wait_ready_secs: 300,
            ledger_volume: LedgerVolume::default(),
        }
    }
}

/// Who the children belong to: the stored resource's identity (name,
/// namespace, run) and the owner reference that ties them to it for garbage
/// collection. Nothing of its spec: that comes validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Owner {
    pub namespace: Option<String>,
    pub names: Names,
    pub reference: OwnerReference,
}

impl Owner {
    /// The identity of a stored experiment (it has a name and a uid).
    pub fn of(rx: &ReliabilityExperiment) -> Self {
        Self {
            namespace: rx.namespace(),
            names: Names::new(rx),
            reference: rx
                .controller_owner_ref(&())
                .expect("a stored experiment has a name and uid"),
        }
    }

    /// The same owner, naming the children of lab run `lab_run` (of `variant`).
    pub fn for_lab_run(mut self, lab_run: u32, variant: Option<String>) -> Self {
        self.names = self.names.for_lab_run(lab_run, variant);
        self
    }

    /// The same owner, naming the children of scheduled run `n` (None: not scheduled).
    pub fn for_scheduled_run(mut self, n: Option<u32>) -> Self {
        self.names = self.names.for_scheduled_run(n);
        self
    }

    /// Metadata of the child `name` of this run, as `component`.
    pub fn metadata(&self, name: String, component: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: self.namespace.clone(),
            labels: Some(self.names.labels(component)),
            owner_references: Some(vec![self.reference.clone()]),
            ..ObjectMeta::default()
        }
    }
}

/// The kinds of children, in the order they are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Service,
    ConfigMap,
    PersistentVolumeClaim,
    Deployment,
    Job,
}

impl Kind {
    /// The API resource of this kind, for applying a [`Child`] as a `DynamicObject`.
    pub fn api_resource(self) -> ApiResource {
        match self {
            Kind::Service => ApiResource::erase::<Service>(&()),
            Kind::ConfigMap => ApiResource::erase::<ConfigMap>(&()),
            Kind::PersistentVolumeClaim => ApiResource::erase::<PersistentVolumeClaim>(&()),
            Kind::Deployment => ApiResource::erase::<Deployment>(&()),
            Kind::Job => ApiResource::erase::<Job>(&()),
        }
    }
}

/// A typed object the controller applies as a child.
pub trait ChildObject: Resource<DynamicType = ()> + Serialize {
    const KIND: Kind;
}

impl ChildObject for Service {
    const KIND: Kind = Kind::Service;
}
impl ChildObject for ConfigMap {
    const KIND: Kind = Kind::ConfigMap;
}
impl ChildObject for PersistentVolumeClaim {
    const KIND: Kind = Kind::PersistentVolumeClaim;
}
impl ChildObject for Deployment {
    const KIND: Kind = Kind::Deployment;
}
impl ChildObject for Job {
    const KIND: Kind = Kind::Job;
}

/// One desired object, serialised for server-side apply.
#[derive(Debug, Clone, PartialEq)]
pub struct Child {
    pub kind: Kind,
    pub name: String,
    pub body: Value,
}

impl Child {
    /// A typed object as the body of an apply (its `apiVersion` and `kind` included).
    pub fn new<K: ChildObject>(object: &K) -> Self {
        Self {
            kind: K::KIND,
            name: object.meta().name.clone().expect("a child has a name"),
            body: serde_json::to_value(object).expect("a Kubernetes object serializes"),
        }
    }
}

/// Everything but the Services: the lab's ConfigMap, the Deployments of
/// Postgres (managed only), the database fault proxy (database disruptions
/// only), the payment mock (and its ledger's claim), the order service and
/// the workers (`workerReplicas` only), and the load generator's Job.
pub fn workloads(
    owner: &Owner,
    experiment: &ValidatedExperiment,
    ips: &ServiceIps,
    defaults: &LabDefaults,
) -> Vec<Child> {
    let images = pod::Images::of(experiment, defaults);
    let environment = lab_environment(experiment, ips, defaults);
    let mut out = vec![Child::new(&config_map::config_map(owner, environment))];
    if let Some(postgres) = postgres::deployment(owner, experiment, &images) {
        out.push(Child::new(&postgres));
    }
    if ips.db_proxy.is_some() {
        out.push(Child::new(&db_proxy::deployment(owner, &images)));
    }
    if let Some(claim) = payment_mock::ledger_claim(owner, defaults) {
        out.push(Child::new(&claim));
    }
    out.push(Child::new(&payment_mock::deployment(
        owner, experiment, &images, defaults,
    )));
    out.push(Child::new(&order_service::deployment(owner, experiment, &images, ips)));
    if let Some(workers) = workers::deployment(owner, experiment, &images, ips) {
        out.push(Child::new(&workers));
    }
    out.push(Child::new(&loadgen::job(owner, experiment, &images, defaults)));
    if let Some(shares) = loadgen::shares_job(owner, experiment, &images, defaults, ips) {
        out.push(Child::new(&shares));
    }
    out
}

#[cfg(test)]
mod tests;
