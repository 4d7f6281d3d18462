//! The live progress line of `relab run`: a bar on a terminal, a plain line
//! every few seconds otherwise (CI logs).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use lab_service::run::cli::progress_line;
use lab_service::run::RunProgress;
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

/// Draw `progress` until [`ProgressHandle::finish`].
pub fn spawn(mut progress: watch::Receiver<RunProgress>, planned: Duration, terminal: bool) -> ProgressHandle {
    let load_seconds = planned.as_secs_f64().ceil() as u64;
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
                bar.set_message(progress_line(&p));
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
                eprintln!("{}", progress_line(&p));
            }
        }
    });
    ProgressHandle { task, done }
}
