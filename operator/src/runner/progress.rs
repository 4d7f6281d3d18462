//! The live progress line of `relab run`: a bar on a terminal, a plain line
//! every few seconds otherwise (CI logs).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use lab_service::loadgen::Progress;
use std::time::Duration;
use tokio::sync::watch;

pub struct ProgressHandle {
    task: tokio::task::JoinHandle<()>,
    done: tokio_util::sync::CancellationToken,
}

impl ProgressHandle {
    pub async fn finish(self) {
        self.done.cancel();
        let _ = self.task.await;
    }
}

fn breaker(state: i64) -> &'static str {
    match state {
        1 => "OPEN",
        2 => "half-open",
        _ => "closed",
    }
}

fn line(p: &Progress) -> String {
    format!(
        "{:<6} sent {:>6} | accepted {:>6} | paid {:>6} | failed {:>4} | dead {:>4} | shed {:>5} | errors {:>4} | breaker {:<9} | queue {:>5}",
        p.phase.to_string(),
        p.sent,
        p.accepted,
        p.paid,
        p.failed,
        p.dead_lettered,
        p.shed,
        p.errors,
        breaker(p.breaker_state),
        p.queue_depth
    )
}

/// Draw `progress` until [`ProgressHandle::finish`].
pub fn spawn(mut progress: watch::Receiver<Progress>, load_seconds: u64, terminal: bool) -> ProgressHandle {
    let done = tokio_util::sync::CancellationToken::new();
    let stop = done.clone();
    let task = tokio::spawn(async move {
        if terminal {
            let bar = ProgressBar::with_draw_target(Some(load_seconds.max(1)), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("[{elapsed_precise}] {bar:30.cyan/blue} {pos:>4}/{len}s {msg}")
                    .expect("static template"),
            );
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    changed = progress.changed() => if changed.is_err() { break },
                }
                let p = progress.borrow().clone();
                bar.set_position(p.elapsed.as_secs().min(load_seconds.max(1)));
                bar.set_message(line(&p));
            }
            bar.finish();
        } else {
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let p = progress.borrow().clone();
                eprintln!("[{:>5.1}s/{load_seconds}s] {}", p.elapsed.as_secs_f64(), line(&p));
            }
        }
    });
    ProgressHandle { task, done }
}
