//! The run's Services (applied first: the other children are configured
//! with their ClusterIPs) and the IPs the API server assigned them.

use super::names::{Names, ORDER_SERVICE, WORKERS};
use super::{
    Child, Owner, API_PORT, DB_PROXY_ADMIN_PORT, LOADGEN_PROGRESS_PORT, MOCK_PORT, POSTGRES_PORT, WORKER_ADMIN_PORT,
};
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::DynamicObject;
use kube::ResourceExt;
use relab_model::ValidatedExperiment;

/// A named TCP port to the container port of the same name (SSA on
/// Kubernetes 1.20 needs `protocol`).
fn port(name: &str, port: i32) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::String(name.into())),
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    }
}

/// The ClusterIP Service of this run's `component` pods.
fn service(owner: &Owner, name: String, component: &str, ports: Vec<ServicePort>) -> Service {
    Service {
        metadata: owner.metadata(name, component),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(owner.names.selector(component)),
            ports: Some(ports),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// Postgres' (managed database only), the database fault proxy's (database
/// disruptions only), the payment mock's, the order service's (API and
/// worker metrics) and, with `workerReplicas`, the workers' (their metrics).
pub fn services(owner: &Owner, experiment: &ValidatedExperiment) -> Vec<Child> {
    let names = &owner.names;
    let mut out = Vec::new();
    if experiment.spec().database.external.is_none() {
        out.push(service(
            owner,
            names.postgres(),
            "postgres",
            vec![port("postgres", POSTGRES_PORT)],
        ));
    }
    if super::db_proxy::needed(experiment) {
        out.push(service(
            owner,
            names.db_proxy(),
            "db-proxy",
            vec![port("postgres", POSTGRES_PORT), port("admin", DB_PROXY_ADMIN_PORT)],
        ));
    }
    out.push(service(
        owner,
        names.payment_mock(),
        "payment-mock",
        vec![port("http", MOCK_PORT)],
    ));
    // the same ports with or without the workers in these pods: the
    // Service's shape does not change with workerReplicas
    out.push(service(
        owner,
        names.order_service(),
        ORDER_SERVICE,
        vec![port("http", API_PORT), port("worker-metrics", WORKER_ADMIN_PORT)],
    ));
    if experiment.spec().load.generators() > 1 {
        // the first load generator's progress server, which the others join
        out.push(service(
            owner,
            names.loadgen(),
            "loadgen",
            vec![port("progress", LOADGEN_PROGRESS_PORT)],
        ));
    }
    if experiment.spec().order_service.separate_workers() {
        out.push(service(
            owner,
            names.workers(),
            WORKERS,
            vec![port("worker-metrics", WORKER_ADMIN_PORT)],
        ));
    }
    out.iter().map(Child::new).collect()
}

/// Cluster IPs the API server assigned to this run's Services.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceIps {
    /// None with an external database.
    pub postgres: Option<String>,
    /// The database fault proxy's (None: no database disruption).
    pub db_proxy: Option<String>,
    pub payment_mock: String,
    pub order_service: String,
    /// The first load generator's (None: `load.parallelism` 1).
    pub loadgen: Option<String>,
    /// The workers' (None: they share the order-service pods).
    pub workers: Option<String>,
}

impl ServiceIps {
    /// The IP of the Service in front of the workers' admin servers
    /// (`worker-metrics`): the workers' own, else the order service's.
    pub fn worker_metrics(&self) -> &str {
        self.workers.as_deref().unwrap_or(&self.order_service)
    }
}

impl ServiceIps {
    /// From this run's Services as the API server returned them; the error
    /// names a Service that has no ClusterIP.
    pub fn from_applied(names: &Names, applied: &[DynamicObject]) -> Result<Self, String> {
        let mut ips = ServiceIps {
            postgres: None,
            db_proxy: None,
            payment_mock: String::new(),
            order_service: String::new(),
            loadgen: None,
            workers: None,
        };
        for service in applied {
            let name = service.name_any();
            let ip = service.data["spec"]["clusterIP"]
                .as_str()
                .filter(|ip| !ip.is_empty() && *ip != "None")
                .ok_or_else(|| format!("Service {name} has no ClusterIP assigned"))?
                .to_string();
            if name == names.postgres() {
                ips.postgres = Some(ip);
            } else if name == names.db_proxy() {
                ips.db_proxy = Some(ip);
            } else if name == names.loadgen() {
                ips.loadgen = Some(ip);
            } else if name == names.workers() {
                ips.workers = Some(ip);
            } else if name == names.payment_mock() {
                ips.payment_mock = ip;
            } else {
                ips.order_service = ip;
            }
        }
        Ok(ips)
    }
}
