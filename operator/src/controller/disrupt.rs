//! The disrupt step (acts; the decision is [`machine::disruptions`], pure):
//! a kill that is due deletes its victims among the run's order-service
//! and worker pods (`kill_components`) with grace 0 (ungraceful: no shutdown hook, no lease released; the
//! Deployment brings new pods) and reports them to the load generator,
//! `POST /disruptions/{name}` on its progress server through the API
//! server's pod proxy, which stamps the time and measures the recovery. A
//! kill that cannot be carried out is reported as an error (the verdict is
//! then Inconclusive).

use super::build::{Names, LABEL_COMPONENT, LOADGEN_PROGRESS_PORT};
use super::machine::disruptions::{kill_components, victims};
use super::Context;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams};
use kube::ResourceExt;
use relab_model::disruptions::PlannedDisruption;
use std::time::Duration;

/// Carry out the kill `plan` on this run's order-service pods (and worker
/// pods, `separate_workers`: `workerReplicas`) and report it to the load
/// generator's pod `loadgen`. Failures are reported (and logged), never
/// returned: the run goes on.
pub async fn kill(
    ctx: &Context,
    namespace: &str,
    names: &Names,
    separate_workers: bool,
    loadgen: &str,
    plan: &PlannedDisruption,
) {
    let report = match delete_victims(ctx, namespace, names, separate_workers, plan).await {
        Ok(hit) => {
            tracing::warn!(disruption = %plan.name, action = plan.action.as_str(), ?hit, "pods deleted (grace 0)");
            serde_json::json!({ "hit": hit })
        }
        Err(error) => {
            tracing::warn!(disruption = %plan.name, %error, "the kill could not be carried out");
            serde_json::json!({ "error": error })
        }
    };
    if let Err(error) = report_to_loadgen(ctx, namespace, loadgen, &plan.name, &report).await {
        // the record stays unfired: the next reconcile sees it due again
        // (a report that arrived answers 409 then, and nothing is re-killed
        // once the record shows it fired)
        tracing::warn!(disruption = %plan.name, %error, "could not report the kill to the load generator");
    }
}

/// Delete the kill's victims (grace 0): their names, or why none could be deleted.
async fn delete_victims(
    ctx: &Context,
    namespace: &str,
    names: &Names,
    separate_workers: bool,
    plan: &PlannedDisruption,
) -> Result<Vec<String>, String> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let components = kill_components(plan.action, separate_workers).join(",");
    let selector = format!("{},{LABEL_COMPONENT} in ({components})", names.run_selector());
    let live: Vec<String> = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| format!("listing the {components} pods: {e}"))?
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| p.name_any())
        .collect();
    let chosen = victims(plan, live);
    if chosen.is_empty() {
        return Err(format!("no {components} pod to kill"));
    }
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    let mut hit = Vec::new();
    let mut errors = Vec::new();
    for pod in chosen {
        match pods.delete(&pod, &params).await {
            Ok(_) => hit.push(pod),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => errors.push(format!("deleting pod {pod}: {e}")),
        }
    }
    match (hit.is_empty(), errors.is_empty()) {
        (true, false) => Err(errors.join("; ")),
        (true, true) => Err("every victim was already gone".into()),
        _ => Ok(hit),
    }
}

/// `POST /disruptions/{name}` on the load generator's progress server
/// (through the API server's pod proxy) within 2 s. 409 (already reported)
/// counts as done.
async fn report_to_loadgen(
    ctx: &Context,
    namespace: &str,
    loadgen: &str,
    name: &str,
    report: &serde_json::Value,
) -> Result<(), String> {
    let path =
        format!("/api/v1/namespaces/{namespace}/pods/{loadgen}:{LOADGEN_PROGRESS_PORT}/proxy/disruptions/{name}");
    let request = http::Request::post(path)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(report).expect("a report serializes"))
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(Duration::from_secs(2), ctx.client.request_text(request)).await {
        Err(_) => Err("no answer within 2 s".into()),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(kube::Error::Api(s))) if s.code == 409 => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
    }
}
