//! The operator's watch caches of the lab pods and Jobs it reads on every
//! reconcile: the load generator's pod and Job (observe), the order-service
//! and worker pods (metrics targets). A label-selected `list` is a
//! consistent read that makes the API server read every pod of the
//! namespace from etcd, on every reconcile of every run: at 1,000
//! experiments that was what kept new experiments waiting
//! (docs/benchmarks.md, operator). The caches are fed by watches the
//! controller runs anyway (they also wake an experiment when its load
//! generator's pod or Job changes); each object is kept slim (no
//! managedFields, annotations, environment or volumes).
//!
//! Until a cache has synced (the operator just started), and where there is
//! none (unit tests), the same question goes to the API server.

use super::build::{order_service, Names, LABEL_COMPONENT, LOADGEN, MANAGED_BY};
use futures::FutureExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use kube::api::{Api, ListParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};

/// The components whose pods the cache holds: the load generator's and
/// the ones that serve `/metrics`.
pub fn pod_components() -> Vec<&'static str> {
    std::iter::once(LOADGEN)
        .chain(order_service::METRICS_COMPONENTS)
        .collect()
}

/// The label selector of the cached pods (managed, of [`pod_components`]).
pub fn pod_selector() -> String {
    format!(
        "app.kubernetes.io/managed-by={MANAGED_BY},{LABEL_COMPONENT} in ({})",
        pod_components().join(",")
    )
}

/// Keep of a pod what the operator reads: its metadata but managedFields
/// and annotations, its containers' names and ports, its status.
pub fn slim_pod(pod: &mut Pod) {
    pod.metadata.managed_fields = None;
    pod.metadata.annotations = None;
    if let Some(spec) = pod.spec.take() {
        let containers = spec
            .containers
            .into_iter()
            .map(|c| Container {
                name: c.name,
                ports: c.ports,
                ..Container::default()
            })
            .collect();
        pod.spec = Some(PodSpec {
            containers,
            ..PodSpec::default()
        });
    }
}

/// Keep of a Job what the operator reads: its metadata but managedFields
/// and annotations, and its status (not its pod template).
pub fn slim_job(job: &mut Job) {
    job.metadata.managed_fields = None;
    job.metadata.annotations = None;
    job.spec = None;
}

/// The watch caches (none in unit tests).
#[derive(Clone, Default)]
pub struct Caches {
    pub pods: Option<Store<Pod>>,
    pub jobs: Option<Store<Job>>,
}

/// `store` once it has synced.
fn synced<K>(store: &Option<Store<K>>) -> Option<&Store<K>>
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    let store = store.as_ref()?;
    matches!(store.wait_until_ready().now_or_never(), Some(Ok(()))).then_some(store)
}

impl Caches {
    /// The run's pods of `components` in `namespace` (each of them one of
    /// [`pod_components`]).
    pub async fn run_pods(
        &self,
        client: &Client,
        namespace: &str,
        names: &Names,
        components: &[&str],
    ) -> Result<Vec<Pod>, kube::Error> {
        debug_assert!(components.iter().all(|c| pod_components().contains(c)));
        if let Some(pods) = synced(&self.pods) {
            return Ok(pods
                .state_filter(|pod| {
                    pod.namespace().as_deref() == Some(namespace)
                        && names.is_ours(&pod.metadata)
                        && names.labels_this_run(&pod.metadata)
                        && pod
                            .labels()
                            .get(LABEL_COMPONENT)
                            .is_some_and(|c| components.contains(&c.as_str()))
                })
                .into_iter()
                .map(|pod| (*pod).clone())
                .collect());
        }
        let selector = format!(
            "{},{LABEL_COMPONENT} in ({})",
            names.run_selector(),
            components.join(",")
        );
        let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
        let mut pods = api.list(&ListParams::default().labels(&selector)).await?.items;
        pods.retain(|pod| names.is_ours(&pod.metadata));
        Ok(pods)
    }

    /// Whether an earlier experiment of the same name still has a pod or a
    /// Job under this run's labels in `namespace` (deleted and applied
    /// again: the garbage collector has not removed them yet, or they were
    /// orphaned), as the synced caches show them (none: false).
    pub fn earlier_experiments_children(&self, namespace: &str, names: &Names) -> bool {
        let earlier = |meta: &kube::api::ObjectMeta| {
            meta.namespace.as_deref() == Some(namespace) && !names.is_ours(meta) && names.labels_this_run(meta)
        };
        synced(&self.pods).is_some_and(|pods| pods.find(|p| earlier(&p.metadata)).is_some())
            || synced(&self.jobs).is_some_and(|jobs| jobs.find(|j| earlier(&j.metadata)).is_some())
    }

    /// The Job `name` in `namespace`, if there is one.
    pub async fn job(&self, client: &Client, namespace: &str, name: &str) -> Result<Option<Job>, kube::Error> {
        if let Some(jobs) = synced(&self.jobs) {
            return Ok(jobs
                .get(&ObjectRef::new(name).within(namespace))
                .map(|job| (*job).clone()));
        }
        let api: Api<Job> = Api::namespaced(client.clone(), namespace);
        api.get_opt(name).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::watcher;

    fn pod(name: &str, experiment: &str, run: &str, component: &str) -> Pod {
        let mut pod = Pod::default();
        pod.metadata.name = Some(name.into());
        pod.metadata.namespace = Some("lab".into());
        pod.metadata.labels = Some(
            [
                ("relab.dev/experiment", experiment),
                ("relab.dev/run", run),
                (LABEL_COMPONENT, component),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        );
        pod
    }

    fn created(mut pod: Pod, at: &str) -> Pod {
        pod.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            at.parse().unwrap(),
        ));
        pod
    }

    #[tokio::test]
    async fn a_synced_cache_answers_with_the_runs_pods_of_the_components_asked_not_an_earlier_experiments_and_no_request(
    ) {
        let (reader, mut writer) = kube::runtime::reflector::store::<Pod>();
        writer.apply_watcher_event(&watcher::Event::Init);
        for p in [
            pod("a", "drill", "3", "loadgen"),
            pod("b", "drill", "3", "order-service"),
            pod("c", "drill", "2", "loadgen"),
            pod("d", "other", "3", "loadgen"),
            pod("e", "drill", "3", "workers"),
            // an earlier experiment's named "drill" (deleted, applied again),
            // its pods still going: same names and labels, created before
            created(pod("f", "drill", "3", "order-service"), "2026-12-07T12:00:00Z"),
            created(pod("g", "drill", "3", "loadgen"), "2026-12-07T12:00:09Z"),
            // this one's, one created in the experiment's own second
            created(pod("h", "drill", "3", "workers"), "2026-12-07T12:00:10Z"),
        ] {
            writer.apply_watcher_event(&watcher::Event::InitApply(p));
        }
        writer.apply_watcher_event(&watcher::Event::InitDone);
        let caches = Caches {
            pods: Some(reader),
            jobs: None,
        };
        // a client that answers nothing: a request would fail the test
        let (service, _handle) =
            tower_test::mock::pair::<http::Request<kube::client::Body>, http::Response<kube::client::Body>>();
        let client = Client::new(service, "default");
        let mut names = Names::for_run("drill".into(), 3);
        names.not_before = Some("2026-12-07T12:00:10Z".parse().unwrap());
        let names_of = |pods: Vec<Pod>| {
            let mut names: Vec<String> = pods.iter().map(|p| p.name_any()).collect();
            names.sort();
            names
        };
        let loadgen = caches.run_pods(&client, "lab", &names, &[LOADGEN]).await.unwrap();
        assert_eq!(names_of(loadgen), ["a"]);
        let metrics = caches
            .run_pods(&client, "lab", &names, &order_service::METRICS_COMPONENTS)
            .await
            .unwrap();
        assert_eq!(names_of(metrics), ["b", "e", "h"]);
    }

    #[test]
    fn a_slim_pod_keeps_its_ports_and_status_and_drops_the_rest() {
        let mut p = pod("a", "drill", "3", "order-service");
        p.metadata.annotations = Some([("big".to_string(), "x".repeat(1000))].into());
        p.spec = Some(PodSpec {
            containers: vec![Container {
                name: "order-service".into(),
                ports: Some(vec![Default::default()]),
                env: Some(vec![Default::default(); 20]),
                ..Container::default()
            }],
            volumes: Some(vec![Default::default()]),
            ..PodSpec::default()
        });
        p.status = Some(Default::default());
        slim_pod(&mut p);
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.containers[0].name, "order-service");
        assert!(spec.containers[0].ports.is_some() && spec.containers[0].env.is_none());
        assert!(spec.volumes.is_none() && p.metadata.annotations.is_none() && p.status.is_some());
    }
}
