//! What Grafana and Prometheus get: per-experiment and overview dashboards,
//! SLO burn-rate rules, and the operator's objective metrics they join on.
//!
//! `relab monitoring --write <root>` writes the chart's copies
//! (`charts/relab/dashboards/overview.json`, `charts/relab/rules/relab.rules.yaml`);
//! a test keeps them identical to what this module generates.

pub mod dashboard;
pub mod rules;

use crate::crd::LatencyObjective;
use std::path::{Path, PathBuf};

/// Where the chart keeps the generated overview dashboard.
pub const OVERVIEW_PATH: &str = "charts/relab/dashboards/overview.json";
/// Where the chart keeps the generated rules.
pub const RULES_PATH: &str = "charts/relab/rules/relab.rules.yaml";

/// The overview dashboard as the chart ships it.
pub fn overview_json() -> String {
    serde_json::to_string_pretty(&dashboard::overview()).expect("dashboard serializes") + "\n"
}

/// Write the chart's generated files under `root`; returns their paths.
pub fn write(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    let files = [(OVERVIEW_PATH, overview_json()), (RULES_PATH, rules::rules_yaml())];
    let mut written = Vec::new();
    for (path, text) in files {
        let path = root.join(path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&path, text)?;
        written.push(path);
    }
    Ok(written)
}

/// The histogram bucket bound (seconds) that stands for a latency objective
/// in the burn-rate rules: the largest bucket at or below `maxMs`, so the
/// alert is never laxer than the objective (the smallest bucket below that).
pub fn bucket_bound(objective: &LatencyObjective) -> f64 {
    let seconds = objective.max_ms / 1000.0;
    let buckets = lab_service::metrics::LATENCY_BUCKETS;
    buckets
        .iter()
        .copied()
        .rfind(|b| *b <= seconds + 1e-12)
        .unwrap_or(buckets[0])
}

/// The `le` label value of a bucket bound, written as the lab's exposition
/// writes it (Rust's shortest float formatting: `0.1`, `1`, `2.5`).
pub fn le_label(bound: f64) -> String {
    format!("{bound}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::Percentile;

    fn objective(max_ms: f64) -> LatencyObjective {
        LatencyObjective {
            percentile: Percentile::P95,
            max_ms,
            requests: Default::default(),
        }
    }

    #[test]
    fn objectives_snap_down_to_a_bucket_bound() {
        assert_eq!(bucket_bound(&objective(100.0)), 0.1);
        assert_eq!(bucket_bound(&objective(180.0)), 0.1);
        assert_eq!(bucket_bound(&objective(1000.0)), 1.0);
        assert_eq!(bucket_bound(&objective(0.2)), 0.001, "below the smallest bucket");
        assert_eq!(le_label(1.0), "1");
        assert_eq!(le_label(0.025), "0.025");
    }

    #[test]
    fn the_lab_writes_le_labels_as_le_label_does() {
        let registry = prometheus::Registry::new();
        let m = lab_service::metrics::PipelineMetrics::register(&registry).unwrap();
        m.order_e2e.observe(0.2);
        let mut text = Vec::new();
        prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &registry.gather(), &mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        for bound in lab_service::metrics::LATENCY_BUCKETS {
            let line = format!("relab_order_e2e_seconds_bucket{{le=\"{}\"}}", le_label(*bound));
            assert!(text.contains(&line), "{line} not in:\n{text}");
        }
    }

    #[test]
    fn the_charts_copies_are_current() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        for (path, want) in [(OVERVIEW_PATH, overview_json()), (RULES_PATH, rules::rules_yaml())] {
            let have = std::fs::read_to_string(root.join(path)).unwrap_or_default();
            assert!(
                have == want,
                "{path} is stale: run `cargo run -p relab-operator --bin relab -- monitoring --write .`"
            );
        }
    }
}
