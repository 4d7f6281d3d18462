//! The run's ConfigMap: the lab's whole environment, shared by the order
//! service's containers, the payment mock and the load generator through
//! `envFrom`. Every variable comes from the lab-service type that owns it
//! (`to_env`, round-trip tested in lab-service); each process reads its own
//! names, so one map serves them all, listen addresses included.

use super::LabDefaults;
use super::{Owner, ServiceIps, API_PORT, LOADGEN_PROGRESS_PORT, MOCK_PORT, POSTGRES_PORT, WORKER_ADMIN_PORT};
use k8s_openapi::api::core::v1::ConfigMap;
use lab_service::cli::{admin_listen_env, MockConfig};
use lab_service::config::{ApiConfig, DatabaseArgs, DATABASE_URL_ENV};
use lab_service::lab;
use lab_service::run::cli::LoadgenConfig;
use lab_service::run::targets::MetricsTargets;
use lab_service::run::ExperimentRun;
use lab_service::telemetry::LogFormat;
use relab_model::ValidatedExperiment;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

/// Where the load generator writes its results for the kubelet (the
/// container's `terminationMessagePath`): the status reads them from there.
pub const TERMINATION_LOG: &str = "/dev/termination-log";

/// The managed database's URL (trust auth inside the lab, see docs/operator.md).
pub fn managed_database_url(postgres_ip: &str) -> String {
    format!("postgres://postgres@{postgres_ip}:{POSTGRES_PORT}/relab")
}

fn all_interfaces(port: i32) -> SocketAddr {
    let port = u16::try_from(port).expect("a port number");
    SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))
}

/// One environment from several processes' settings: a variable two of them
/// read must have one value.
#[derive(Debug, Default)]
struct Environment(BTreeMap<String, String>);

impl Environment {
    fn add(&mut self, vars: Vec<(&'static str, String)>) {
        for (name, value) in vars {
            if let Some(before) = self.0.insert(name.into(), value.clone()) {
                assert_eq!(
                    before, value,
                    "two of the lab's processes read {name} with different values"
                );
            }
        }
    }
}

/// What the load generator runs: the load, the fault plan, the drain and the
/// wait for the lab, against this run's Services; the results go to
/// [`TERMINATION_LOG`].
pub fn loadgen_config(
    experiment: &ValidatedExperiment,
    ips: &ServiceIps,
    database_url: String,
    defaults: &LabDefaults,
) -> LoadgenConfig {
    let api_url = format!("http://{}:{API_PORT}", ips.order_service);
    LoadgenConfig {
        run: ExperimentRun {
            load: lab::load_config(experiment),
            // each pod's, posted by the operator (controller/targets.rs);
            // the Service only if none ever arrives
            metrics: MetricsTargets::pushed(vec![
                format!("{api_url}/metrics"),
                format!("http://{}:{WORKER_ADMIN_PORT}/metrics", ips.worker_metrics()),
            ]),
            api_url,
            database_url,
            payment_url: format!("http://{}:{MOCK_PORT}", ips.payment_mock),
            faults: Some(experiment.fault_plan()),
            drain_timeout: experiment.drain_timeout(),
            wait_ready: Duration::from_secs(defaults.wait_ready_secs),
            stop_when: experiment.spec().stop_when.clone(),
            success_target: experiment.spec().objectives.success_ratio,
            disruptions: experiment.disruptions(),
            // the database fault proxy's admin URL (database disruptions
            // only); RestartDatabase is carried over SQL by the load
            // generator itself (lab-service run/disrupt.rs, SqlRestart)
            db_proxy_url: super::db_proxy::admin_url(ips),
            carrier: None,
            disruption_log: Default::default(),
            shares: lab_service::run::shares::ShareBoard::new(experiment.spec().load.generators()),
        },
        output: None,
        termination_log: Some(TERMINATION_LOG.into()),
        progress_listen: Some(std::net::SocketAddr::from(([0, 0, 0, 0], LOADGEN_PROGRESS_PORT as u16))),
        // the followers' own (their pods' env): build/loadgen.rs
        leader_url: None,
    }
}

/// The lab's `RELAB_*` environment: the API's, the workers', the payment
/// mock's, the load generator's, the database fault proxy's (database
/// disruptions only) and the database settings the processes share (the
/// URL only with the managed database; an external one comes from its
/// Secret; each container's pool size is its own `env`, see
/// `order_service.rs`).
pub fn lab_environment(
    experiment: &ValidatedExperiment,
    ips: &ServiceIps,
    defaults: &LabDefaults,
) -> BTreeMap<String, String> {
    let database = DatabaseArgs {
        database_url: ips.postgres.as_deref().map(managed_database_url).unwrap_or_default(),
        // not in the map: each container's pool is its own env (databasePool)
        database_max_connections: experiment.spec().order_service.api_pool(),
        // the order service may start before its database
        database_connect_timeout_secs: defaults.wait_ready_secs,
    };
    let loadgen = loadgen_config(experiment, ips, database.database_url.clone(), defaults);
    let mut env = Environment::default();
    env.add(LogFormat::Json.to_env());
    env.add(
        ApiConfig {
            listen: all_interfaces(API_PORT),
            ..lab::api_config(experiment)
        }
        .to_env(),
    );
    env.add(lab::worker_config(experiment, &loadgen.run.payment_url).to_env());
    env.add(admin_listen_env(all_interfaces(WORKER_ADMIN_PORT)));
    env.add(
        MockConfig {
            listen: all_interfaces(MOCK_PORT),
            plan: experiment.fault_plan(),
            ledger_file: Some(super::payment_mock::LEDGER_FILE.into()),
        }
        .to_env(),
    );
    env.add(loadgen.to_env());
    if let Some(proxy) = super::db_proxy::config(ips) {
        env.add(proxy.to_env());
    }
    if ips.postgres.is_some() {
        env.add(vec![(DATABASE_URL_ENV, database.database_url.clone())]);
    }
    env.add(database.to_env_without_url_and_pool());
    env.0
}

/// The ConfigMap holding `environment`.
pub fn config_map(owner: &Owner, environment: BTreeMap<String, String>) -> ConfigMap {
    ConfigMap {
        metadata: owner.metadata(owner.names.config(), "config"),
        data: Some(environment),
        ..ConfigMap::default()
    }
}

#[cfg(test)]
mod tests {
    use super::Environment;

    #[test]
    fn a_variable_two_processes_read_has_one_value() {
        let mut env = Environment::default();
        env.add(vec![("RELAB_PAYMENT_URL", "http://10.0.0.11:8081".into())]);
        env.add(vec![("RELAB_PAYMENT_URL", "http://10.0.0.11:8081".into())]);
        assert_eq!(env.0.len(), 1);
        let clash = std::panic::catch_unwind(move || {
            env.add(vec![("RELAB_PAYMENT_URL", "http://10.0.0.99:8081".into())]);
        });
        assert!(clash.is_err(), "two values for one variable must not pass");
    }
}
