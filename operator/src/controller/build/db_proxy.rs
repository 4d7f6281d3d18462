//! The database fault proxy (`lab-service db-proxy`), only when the
//! experiment has a `DatabaseLatency` or `DatabaseOutage` disruption: a
//! Deployment and its Service between the order service and Postgres. The
//! order service's database URL names the proxy's Service
//! ([`order_service_database_url`]); the load generator (its sampler, the
//! audit, `RestartDatabase`) keeps the direct URL and sets the proxy's
//! faults at its admin URL ([`admin_url`]). Its settings are
//! `DbProxyConfig::to_env`, in the run's ConfigMap.

use super::config_map::managed_database_url;
use super::pod::{self, http_probe, lab_container, lab_pod, resources, tcp_port, Images};
use super::{Owner, ServiceIps, DB_PROXY_ADMIN_PORT, POSTGRES_PORT};
use k8s_openapi::api::apps::v1::Deployment;
use lab_service::db_proxy::DbProxyConfig;
use relab_model::ValidatedExperiment;
use std::net::{Ipv4Addr, SocketAddr};

/// Whether the experiment puts the fault proxy in the order service's path.
pub fn needed(experiment: &ValidatedExperiment) -> bool {
    experiment.disruptions().iter().any(|d| d.action.through_db_proxy())
}

/// The proxy's settings: clients on [`POSTGRES_PORT`], Postgres' Service
/// upstream, its admin server on [`DB_PROXY_ADMIN_PORT`]. None without a
/// proxy, or without the managed database's Service (an external
/// database's address is in its Secret, which the operator never reads:
/// the model refuses that combination, `relab_model::disruptions`).
pub fn config(ips: &ServiceIps) -> Option<DbProxyConfig> {
    ips.db_proxy.as_ref()?;
    let postgres = ips.postgres.as_ref()?;
    let port = |p: i32| u16::try_from(p).expect("a port number");
    Some(DbProxyConfig {
        listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, port(POSTGRES_PORT))),
        upstream: format!("{postgres}:{POSTGRES_PORT}"),
        admin_listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, port(DB_PROXY_ADMIN_PORT))),
    })
}

/// The order service's database URL through the proxy (None: direct).
pub fn order_service_database_url(ips: &ServiceIps) -> Option<String> {
    ips.postgres.as_ref()?;
    ips.db_proxy.as_deref().map(managed_database_url)
}

/// The proxy's admin URL, for the load generator (`RELAB_DB_PROXY_URL`).
pub fn admin_url(ips: &ServiceIps) -> Option<String> {
    ips.db_proxy
        .as_ref()
        .map(|ip| format!("http://{ip}:{DB_PROXY_ADMIN_PORT}"))
}

/// The proxy's Deployment (one pod: `lab-service db-proxy`).
pub fn deployment(owner: &Owner, images: &Images) -> Deployment {
    let container = k8s_openapi::api::core::v1::Container {
        ports: Some(vec![
            tcp_port("postgres", POSTGRES_PORT),
            tcp_port("admin", DB_PROXY_ADMIN_PORT),
        ]),
        readiness_probe: Some(http_probe("/healthz", "admin", 2)),
        liveness_probe: Some(http_probe("/healthz", "admin", 10)),
        resources: Some(resources("50m", "32Mi", "1", "128Mi")),
        ..lab_container(owner, images, "db-proxy", &["db-proxy"])
    };
    pod::deployment(
        owner,
        owner.names.db_proxy(),
        "db-proxy",
        lab_pod(vec![container], "Always"),
    )
}
