//! The apply step: a run's children by server-side apply under the one
//! field manager, and the deletion of children by label. Only this step
//! and the status step ([`super::status`]) write to the API.

use super::build::{Child, Owner, ServiceIps};
use super::{err, Context, Error, ErrorKind, FIELD_MANAGER, REAPPLY_EVERY};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Service};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use std::time::Instant;

/// Apply one child (forced: the operator owns every field it sets) and
/// return it as the API server stored it.
pub async fn apply(ctx: &Context, namespace: &str, child: &Child) -> Result<DynamicObject, Error> {
    apply_with(&ctx.client, namespace, child).await
}

/// [`apply`] with `client` (the write queue's, off the reconcile path).
pub async fn apply_with(client: &kube::Client, namespace: &str, child: &Child) -> Result<DynamicObject, Error> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &child.kind.api_resource());
    api.patch(
        &child.name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&child.body),
    )
    .await
    .map_err(err(
        ErrorKind::Apply,
        format!("applying {:?} {}", child.kind, child.name),
    ))
}

/// Apply `children` concurrently.
pub async fn apply_all(ctx: &Context, namespace: &str, children: &[Child]) -> Result<Vec<DynamicObject>, Error> {
    futures::future::try_join_all(children.iter().map(|child| apply(ctx, namespace, child))).await
}

/// Apply the run's Services and read the ClusterIPs they were given.
pub async fn apply_services(ctx: &Context, owner: &Owner, services: &[Child]) -> Result<ServiceIps, Error> {
    let applied = apply_all(ctx, namespace(owner), services).await?;
    ServiceIps::from_applied(&owner.names, &applied).map_err(|message| Error {
        kind: ErrorKind::Service,
        what: "reading the Services' ClusterIPs".into(),
        source: message.into(),
    })
}

fn namespace(owner: &Owner) -> &str {
    owner.namespace.as_deref().unwrap_or_default()
}

fn key(owner: &Owner) -> (String, String) {
    (owner.reference.uid.clone(), owner.names.run_label().to_string())
}

/// Whether this process applied this run's children less than
/// [`REAPPLY_EVERY`] ago (a run's children never change: re-applying only
/// repairs drift).
pub fn applied_lately(ctx: &Context, owner: &Owner) -> bool {
    ctx.applied
        .lock()
        .expect("applied cache")
        .get(&key(owner))
        .is_some_and(|at| at.elapsed() < REAPPLY_EVERY)
}

/// Remember that this run's children were applied now (and forget other
/// runs of the experiment and stale entries).
pub fn mark_applied(ctx: &Context, owner: &Owner) {
    let key = key(owner);
    let mut applied = ctx.applied.lock().expect("applied cache");
    applied.retain(|(uid, _), at| *uid != key.0 && at.elapsed() < REAPPLY_EVERY * 10);
    applied.insert(key, Instant::now());
}

/// Delete the children in `namespace` matching `selector` (Pods go with
/// their Deployments and Jobs through garbage collection).
pub async fn delete_children(ctx: &Context, namespace: &str, selector: &str) -> Result<(), Error> {
    delete_kind::<Job>(ctx, namespace, selector).await?;
    delete_kind::<Deployment>(ctx, namespace, selector).await?;
    delete_kind::<Service>(ctx, namespace, selector).await?;
    delete_kind::<ConfigMap>(ctx, namespace, selector).await?;
    delete_kind::<PersistentVolumeClaim>(ctx, namespace, selector).await?;
    Ok(())
}

/// Delete what an earlier experiment of the same name left under this
/// run's names (`Names::earlier_experiments_selector`): its children, and
/// its pods too (orphaned ones have no owner for the garbage collector to
/// follow).
pub async fn delete_earlier_children(ctx: &Context, namespace: &str, selector: &str) -> Result<(), Error> {
    delete_children(ctx, namespace, selector).await?;
    delete_kind::<k8s_openapi::api::core::v1::Pod>(ctx, namespace, selector).await
}

async fn delete_kind<K>(ctx: &Context, namespace: &str, selector: &str) -> Result<(), Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope> + Clone + DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
    let found = api
        .list_metadata(&ListParams::default().labels(selector))
        .await
        .map_err(err(ErrorKind::Read, format!("listing children ({selector})")))?;
    for item in found.items {
        let name = item.name_any();
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => tracing::info!(kind = K::kind(&Default::default()).as_ref(), name, "deleted"),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(err(ErrorKind::Delete, format!("deleting {name}"))(e)),
        }
    }
    Ok(())
}
