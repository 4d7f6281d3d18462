//! The managed database: one Postgres pod on disposable storage (none with
//! an external database).

use super::pod::{self, pod_security_context, resources, security_context, tcp_port, Images, POSTGRES_USER};
use super::{Owner, LAB_GRACE_SECONDS, POSTGRES_PORT};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, EnvVar, ExecAction, PodSpec, Probe, TCPSocketAction, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use relab_model::spec::OrderServiceSpec;
use relab_model::ValidatedExperiment;

/// The volumes of the Postgres pod (all `emptyDir`) and where they are mounted.
const VOLUMES: [(&str, &str); 3] = [
    ("data", "/var/lib/postgresql/data"),
    ("run", "/var/run/postgresql"),
    ("tmp", "/tmp"),
];

/// Connections Postgres accepts: the pool of every API and every worker
/// process (`databasePool`), the load generator's and psql's headroom.
pub fn max_connections(os: &OrderServiceSpec) -> i64 {
    i64::from(os.api_pool()) * i64::from(os.replicas)
        + i64::from(os.worker_pool()) * i64::from(os.worker_processes())
        + 20
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

/// The Postgres Deployment, or None when the experiment brings its own database.
pub fn deployment(owner: &Owner, experiment: &ValidatedExperiment, images: &Images) -> Option<Deployment> {
    let spec = experiment.spec();
    if spec.database.external.is_some() {
        return None;
    }
    let container = container(images, max_connections(&spec.order_service));
    let pod = PodSpec {
        automount_service_account_token: Some(false),
        // the lab's data is disposable once the run is judged: Postgres'
        // SIGTERM (smart shutdown) would wait for every client
        termination_grace_period_seconds: Some(LAB_GRACE_SECONDS),
        security_context: Some(pod_security_context(Some(POSTGRES_USER))),
        containers: vec![container],
        volumes: Some(
            VOLUMES
                .iter()
                .map(|(name, _)| Volume {
                    name: name.to_string(),
                    empty_dir: Some(EmptyDirVolumeSource::default()),
                    ..Volume::default()
                })
                .collect(),
        ),
        ..PodSpec::default()
    };
    Some(pod::deployment(owner, owner.names.postgres(), "postgres", pod))
}

/// The `postgres` container: trust auth, database `relab`, `fsync=off`.
fn container(images: &Images, max_connections: i64) -> Container {
    Container {
        name: "postgres".into(),
        image: Some(images.postgres.clone()),
        image_pull_policy: Some(images.pull_policy.clone()),
        args: Some(vec![
            "-c".into(),
            format!("max_connections={max_connections}"),
            "-c".into(),
            "fsync=off".into(),
        ]),
        env: Some(vec![
            env("POSTGRES_HOST_AUTH_METHOD", "trust"),
            env("POSTGRES_DB", "relab"),
            env("PGDATA", "/var/lib/postgresql/data/pgdata"),
        ]),
        ports: Some(vec![tcp_port("postgres", POSTGRES_PORT)]),
        readiness_probe: Some(Probe {
            exec: Some(ExecAction {
                command: Some(
                    ["pg_isready", "-h", "127.0.0.1", "-U", "postgres", "-d", "relab"]
                        .map(String::from)
                        .to_vec(),
                ),
            }),
            period_seconds: Some(2),
            timeout_seconds: Some(2),
            ..Probe::default()
        }),
        liveness_probe: Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::String("postgres".into()),
                ..TCPSocketAction::default()
            }),
            initial_delay_seconds: Some(30),
            period_seconds: Some(10),
            ..Probe::default()
        }),
        resources: Some(resources("100m", "256Mi", "1", "1Gi")),
        security_context: Some(security_context(POSTGRES_USER)),
        volume_mounts: Some(
            VOLUMES
                .iter()
                .map(|(name, path)| VolumeMount {
                    name: name.to_string(),
                    mount_path: path.to_string(),
                    ..VolumeMount::default()
                })
                .collect(),
        ),
        ..Container::default()
    }
}
