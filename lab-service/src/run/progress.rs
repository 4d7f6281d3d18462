//! The live progress of one run: which stage is going, the load driver's
//! request counts, and what the sampler sees of orders, breaker and queue.

use crate::loadgen::LoadProgress;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// Which stage of a run is going.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RunStage {
    #[default]
    Starting,
    Load,
    Drain,
    Audit,
    Done,
}

impl fmt::Display for RunStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RunStage::Starting => "starting",
            RunStage::Load => "load",
            RunStage::Drain => "drain",
            RunStage::Audit => "audit",
            RunStage::Done => "done",
        })
    }
}

/// Live counts of a run, for a progress bar. The load driver's counts are
/// copied in; the sampler fills the order outcomes, breaker and queue.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunProgress {
    /// Which lab run of the experiment this is (`variant 2/4, run 3/5`);
    /// empty for an experiment of one run.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub label: String,
    /// Since the load started.
    #[serde(rename = "elapsedSeconds", with = "secs_f64")]
    pub elapsed: Duration,
    /// Planned length of the load phase (the progress bar's 100%).
    #[serde(rename = "plannedSeconds", with = "secs_f64")]
    pub planned: Duration,
    pub stage: RunStage,
    pub sent: u64,
    pub accepted: u64,
    pub shed: u64,
    pub errors: u64,
    pub paid: u64,
    pub failed: u64,
    pub dead_lettered: u64,
    /// Orders the database holds since the load began: every load
    /// generator's (`accepted` counts this generator's share only).
    #[serde(default)]
    pub orders: u64,
    /// 0 closed, 1 open, 2 half-open.
    pub breaker_state: i64,
    pub queue_depth: i64,
    /// Each disruption as recorded so far (`GET /progress`; the operator
    /// reads which it has fired).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disruptions: Vec<relab_model::disruptions::DisruptionResult>,
    /// The `/metrics` endpoints posted last (`POST /metrics-targets`; the
    /// operator posts again when its list of the run's pods differs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_targets: Option<Vec<String>>,
}

mod secs_f64 {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}

impl RunProgress {
    /// Copy the load driver's latest counts in (the stage becomes `Load`
    /// once the load has started).
    pub fn take_load(&mut self, load: &LoadProgress) {
        if load.started && self.stage == RunStage::Starting {
            self.stage = RunStage::Load;
        }
        if self.stage == RunStage::Load {
            self.elapsed = load.elapsed;
        }
        self.planned = load.planned;
        self.sent = load.sent;
        self.accepted = load.accepted;
        self.shed = load.shed;
        self.errors = load.errors;
    }
}
