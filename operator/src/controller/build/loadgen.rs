//! The load generator's Job: one attempt of `lab-service loadgen` (wait for
//! the lab, load, drain, audit), whose results arrive as the container's
//! termination message (read back by [`crate::controller::observe`]).

use super::config_map::TERMINATION_LOG;
use super::pod::{database_env, lab_container, lab_pod, resources, tcp_port, Images};
use super::{LabDefaults, Owner, ServiceIps, LOADGEN_PROGRESS_PORT};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{Container, EnvVar, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use lab_service::run::cli::LOAD_LEADER_URL_ENV;
use relab_model::ValidatedExperiment;

/// Seconds the Job may run: the wait for the lab, the load, the drain, and
/// 300 s to spare for the audit.
pub fn deadline_seconds(experiment: &ValidatedExperiment, defaults: &LabDefaults) -> i64 {
    let load = &experiment.spec().load;
    let secs = defaults.wait_ready_secs + load.total_seconds() + u64::from(load.drain_timeout_seconds) + 300;
    i64::try_from(secs).expect("a deadline in seconds fits i64")
}

/// The `loadgen` container; it writes its results to [`TERMINATION_LOG`].
pub fn container(owner: &Owner, experiment: &ValidatedExperiment, images: &Images) -> Container {
    Container {
        env: database_env(experiment),
        // `GET /progress`: the controller reads the stage (through the pod proxy)
        ports: Some(vec![tcp_port("progress", LOADGEN_PROGRESS_PORT)]),
        termination_message_path: Some(TERMINATION_LOG.into()),
        termination_message_policy: Some("File".into()),
        resources: Some(resources("100m", "64Mi", "1", "256Mi")),
        ..lab_container(owner, images, "loadgen", &["loadgen"])
    }
}

/// The load generator's Job.
pub fn job(owner: &Owner, experiment: &ValidatedExperiment, images: &Images, defaults: &LabDefaults) -> Job {
    let deadline = deadline_seconds(experiment, defaults);
    let mut pod = lab_pod(vec![container(owner, experiment, images)], "Never");
    pod.active_deadline_seconds = Some(deadline);
    Job {
        metadata: owner.metadata(owner.names.loadgen(), "loadgen"),
        spec: Some(JobSpec {
            // a second attempt would load a database the first one already filled
            backoff_limit: Some(0),
            active_deadline_seconds: Some(deadline),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(owner.names.labels("loadgen")),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..JobSpec::default()
        }),
        ..Job::default()
    }
}

/// `load.parallelism` > 1: the Job of the N-1 load generators that follow
/// the first (`lab-service loadgen` with the leader's URL: each joins the
/// first's progress server through its Service, sends the share it is
/// handed and reports to it; `lab-service/src/run/shares.rs`). They finish
/// with exit 0 once reported; the results are the first's.
pub fn shares_job(
    owner: &Owner,
    experiment: &ValidatedExperiment,
    images: &Images,
    defaults: &LabDefaults,
    ips: &ServiceIps,
) -> Option<Job> {
    let followers = experiment.spec().load.generators().checked_sub(1).filter(|n| *n > 0)?;
    let leader = ips.loadgen.as_ref()?;
    let deadline = deadline_seconds(experiment, defaults);
    let mut env = database_env(experiment).unwrap_or_default();
    env.push(EnvVar {
        name: LOAD_LEADER_URL_ENV.into(),
        value: Some(format!("http://{leader}:{LOADGEN_PROGRESS_PORT}")),
        ..EnvVar::default()
    });
    let container = Container {
        env: Some(env),
        resources: Some(resources("100m", "64Mi", "1", "256Mi")),
        ..lab_container(owner, images, "loadgen", &["loadgen"])
    };
    let mut pod = lab_pod(vec![container], "Never");
    pod.active_deadline_seconds = Some(deadline);
    let followers = i32::try_from(followers).expect("parallelism within the schema's bound");
    Some(Job {
        metadata: owner.metadata(owner.names.loadgen_shares(), "loadgen-share"),
        spec: Some(JobSpec {
            // a share sent twice would be two loads
            backoff_limit: Some(0),
            parallelism: Some(followers),
            completions: Some(followers),
            active_deadline_seconds: Some(deadline),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(owner.names.labels("loadgen-share")),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..JobSpec::default()
        }),
        ..Job::default()
    })
}
