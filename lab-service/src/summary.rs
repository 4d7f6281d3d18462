//! The results of one run (`status.results`): the experiment model's types,
//! which the run engine fills, the Job's termination message carries and
//! the operator stores.

pub use relab_model::results::*;
