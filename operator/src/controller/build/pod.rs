//! What the lab's pods share: images, the hardened security context,
//! resources, probes, the lab container's environment (the ConfigMap, and
//! the external database's Secret) and the Deployment around a pod.

use super::{LabDefaults, Owner};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapEnvSource, Container, ContainerPort, EnvFromSource, EnvVar, EnvVarSource, HTTPGetAction,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, SecretKeySelector,
    SecurityContext,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use lab_service::config::DATABASE_URL_ENV;
use relab_model::ValidatedExperiment;
use std::collections::BTreeMap;

/// Seconds a lab pod gets between SIGTERM and SIGKILL: enough for the order
/// service to drain (readiness off, in-flight jobs finished), short enough
/// that deleting an experiment frees its node within seconds rather than
/// Kubernetes' default 30 s per pod.
pub const LAB_GRACE_SECONDS: i64 = 10;

/// The user of the lab image (distroless nonroot).
pub const LAB_USER: i64 = 65532;
/// The user of the Postgres image.
pub const POSTGRES_USER: i64 = 70;

/// The images of one run: `spec.images`, else the operator's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Images {
    pub lab: String,
    pub postgres: String,
    pub pull_policy: String,
}

impl Images {
    pub fn of(experiment: &ValidatedExperiment, defaults: &LabDefaults) -> Self {
        let i = &experiment.spec().images;
        Self {
            lab: i.lab_service.clone().unwrap_or_else(|| defaults.lab_image.clone()),
            postgres: i.postgres.clone().unwrap_or_else(|| defaults.postgres_image.clone()),
            pull_policy: i.pull_policy.clone().unwrap_or_else(|| defaults.pull_policy.clone()),
        }
    }
}

/// Non-root, read-only root filesystem, no privilege escalation, no capabilities.
pub fn security_context(user: i64) -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(user),
        run_as_group: Some(user),
        read_only_root_filesystem: Some(true),
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        seccomp_profile: Some(runtime_default()),
        ..SecurityContext::default()
    }
}

fn runtime_default() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".into(),
        ..SeccompProfile::default()
    }
}

/// The pod-level security context: non-root, the runtime's seccomp profile.
pub fn pod_security_context(fs_group: Option<i64>) -> PodSecurityContext {
    PodSecurityContext {
        fs_group,
        run_as_non_root: Some(true),
        seccomp_profile: Some(runtime_default()),
        ..PodSecurityContext::default()
    }
}

/// Requests and limits of CPU and memory.
pub fn resources(cpu_request: &str, memory_request: &str, cpu_limit: &str, memory_limit: &str) -> ResourceRequirements {
    let pair = |cpu: &str, memory: &str| {
        BTreeMap::from([
            ("cpu".to_string(), Quantity(cpu.into())),
            ("memory".to_string(), Quantity(memory.into())),
        ])
    };
    ResourceRequirements {
        requests: Some(pair(cpu_request, memory_request)),
        limits: Some(pair(cpu_limit, memory_limit)),
        ..ResourceRequirements::default()
    }
}

/// `GET path` on the named port every `period` seconds (2 s timeout, 3 failures).
pub fn http_probe(path: &str, port: &str, period: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String(port.into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(3),
        ..Probe::default()
    }
}

/// A named TCP port of a container (SSA on Kubernetes 1.20 needs `protocol`).
pub fn tcp_port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: port,
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    }
}

/// Environment every lab container that uses the database gets besides the
/// ConfigMap: the external database's URL from its Secret (an explicit
/// `env` wins over `envFrom`). None with the managed database, whose URL is
/// in the ConfigMap.
pub fn database_env(experiment: &ValidatedExperiment) -> Option<Vec<EnvVar>> {
    let external = experiment.spec().database.external.as_ref()?;
    Some(vec![EnvVar {
        name: DATABASE_URL_ENV.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: external.secret_name.clone(),
                key: external.secret_key.clone(),
                ..SecretKeySelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }])
}

/// A container of the lab image running `lab-service <args>` with the run's
/// ConfigMap as its environment, hardened; the caller adds ports, probes,
/// resources and any `env`.
pub fn lab_container(owner: &Owner, images: &Images, name: &str, args: &[&str]) -> Container {
    Container {
        name: name.into(),
        image: Some(images.lab.clone()),
        image_pull_policy: Some(images.pull_policy.clone()),
        args: Some(args.iter().map(|a| a.to_string()).collect()),
        env_from: Some(vec![EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource {
                name: owner.names.config(),
                ..ConfigMapEnvSource::default()
            }),
            ..EnvFromSource::default()
        }]),
        security_context: Some(security_context(LAB_USER)),
        ..Container::default()
    }
}

/// The pod of lab containers: no service-account token, no service links,
/// the short grace period.
pub fn lab_pod(containers: Vec<Container>, restart_policy: &str) -> PodSpec {
    PodSpec {
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        restart_policy: Some(restart_policy.into()),
        termination_grace_period_seconds: Some(LAB_GRACE_SECONDS),
        security_context: Some(pod_security_context(None)),
        containers,
        ..PodSpec::default()
    }
}

/// One replica of `pod` (the caller may change the count), recreated rather
/// than rolled: one lab per run, never two databases or mocks side by side.
pub fn deployment(owner: &Owner, name: String, component: &str, pod: PodSpec) -> Deployment {
    let names = &owner.names;
    Deployment {
        metadata: owner.metadata(name, component),
        spec: Some(DeploymentSpec {
            replicas: Some(1),
            strategy: Some(DeploymentStrategy {
                type_: Some("Recreate".into()),
                ..DeploymentStrategy::default()
            }),
            selector: LabelSelector {
                match_labels: Some(names.selector(component)),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(names.labels(component)),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}
