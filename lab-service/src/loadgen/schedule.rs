//! The open-loop schedule: when each request is meant to leave, computed
//! from the stages alone (never from how fast earlier requests came back),
//! and the `rate:seconds,...` form of stages used on the command line.

use super::{LoadStage, Share};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Number of sends a stage makes: every `i >= 0` with `i / rate < duration`.
pub fn sends_in(stage: &LoadStage) -> u64 {
    if !stage.rate_per_sec.is_finite() || stage.rate_per_sec <= 0.0 {
        return 0;
    }
    let exact = stage.rate_per_sec * stage.duration.as_secs_f64();
    // 100/s for 3 s is 300 sends even when the product is 300.00000000000006
    (exact - 1e-9).ceil().max(0.0) as u64
}

/// Total sends of a schedule.
pub fn total_sends(stages: &[LoadStage]) -> u64 {
    stages.iter().map(sends_in).sum()
}

/// Total length of a schedule.
pub fn total_duration(stages: &[LoadStage]) -> Duration {
    stages.iter().map(|s| s.duration).sum()
}

/// The intended send offsets (since the load started) of an open-loop run,
/// stage after stage, in order.
#[derive(Debug, Clone)]
pub struct Schedule {
    stages: Vec<LoadStage>,
    stage: usize,
    index: u64,
    stage_start: Duration,
}

impl Schedule {
    pub fn new(stages: &[LoadStage]) -> Self {
        Self {
            stages: stages.to_vec(),
            stage: 0,
            index: 0,
            stage_start: Duration::ZERO,
        }
    }
}

impl Iterator for Schedule {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        loop {
            let stage = self.stages.get(self.stage)?;
            if self.index < sends_in(stage) {
                let offset = self.stage_start + Duration::from_secs_f64(self.index as f64 / stage.rate_per_sec);
                self.index += 1;
                return Some(offset);
            }
            self.stage_start += stage.duration;
            self.stage += 1;
            self.index = 0;
        }
    }
}

/// One share of a schedule handed out to any number of senders: each call
/// of [`Cursor::claim`] gives the next send of the share (its sequence
/// number in the whole schedule and its intended offset), in schedule
/// order, each send exactly once, without a lock (one atomic add).
#[derive(Debug)]
pub struct Cursor {
    /// Per stage: first sequence number, number of sends, start offset, rate.
    stages: Vec<(u64, u64, Duration, f64)>,
    total: u64,
    share: Share,
    /// The next send of this share, counted within the share.
    next: AtomicU64,
}

impl Cursor {
    pub fn new(stages: &[LoadStage], share: Share) -> Self {
        let mut first = 0;
        let mut start = Duration::ZERO;
        let mut table = Vec::with_capacity(stages.len());
        for stage in stages {
            let sends = sends_in(stage);
            table.push((first, sends, start, stage.rate_per_sec));
            first += sends;
            start += stage.duration;
        }
        Self {
            stages: table,
            total: first,
            share,
            next: AtomicU64::new(0),
        }
    }

    /// How many sends this share has in all.
    pub fn sends(&self) -> u64 {
        self.share.of_total(self.total)
    }

    /// The next unclaimed send of the share: `(seq, intended offset)`, or
    /// None when every send has been handed out (or the cursor was closed).
    pub fn claim(&self) -> Option<(u64, Duration)> {
        let k = self.next.fetch_add(1, Ordering::Relaxed);
        let of = u64::from(self.share.of.max(1));
        let seq = k.checked_mul(of)?.checked_add(u64::from(self.share.index))?;
        Some((seq, self.offset(seq)?))
    }

    /// Hand out nothing more (the load was stopped).
    pub fn close(&self) {
        self.next.store(u64::MAX / 2, Ordering::Relaxed);
    }

    /// The intended offset of send `seq` of the whole schedule: the same
    /// value the [`Schedule`] iterator yields for it.
    pub fn offset(&self, seq: u64) -> Option<Duration> {
        if seq >= self.total {
            return None;
        }
        let i = self.stages.partition_point(|&(first, ..)| first <= seq) - 1;
        let (first, _, start, rate) = self.stages[i];
        Some(start + Duration::from_secs_f64((seq - first) as f64 / rate))
    }

    /// The highest rate of any stage, per second, of this share.
    pub fn peak_rate(&self) -> f64 {
        let peak = self
            .stages
            .iter()
            .filter(|&&(_, sends, ..)| sends > 0)
            .map(|&(.., rate)| rate)
            .fold(0.0, f64::max);
        peak / f64::from(self.share.of.max(1))
    }
}

/// Parse `rate:seconds` pairs separated by commas (`50:10,100:20`). The
/// error says which pair is wrong and why; callers prefix the flag name.
pub fn parse_stages(raw: &str) -> Result<Vec<LoadStage>, String> {
    let mut stages = Vec::new();
    for (i, pair) in raw.split(',').enumerate() {
        let pair = pair.trim();
        let n = i + 1;
        let (rate, secs) = pair
            .split_once(':')
            .ok_or_else(|| format!("stage {n} ({pair:?}) must be rate:seconds, e.g. 50:10"))?;
        let rate: f64 = rate
            .trim()
            .parse()
            .map_err(|_| format!("stage {n} ({pair:?}): rate {rate:?} is not a number"))?;
        let secs: f64 = secs
            .trim()
            .parse()
            .map_err(|_| format!("stage {n} ({pair:?}): seconds {secs:?} is not a number"))?;
        let stage = stage(rate, secs).map_err(|m| format!("stage {n} ({pair:?}): {m}"))?;
        stages.push(stage);
    }
    if total_sends(&stages) == 0 {
        return Err("the stages send nothing: at least one needs a rate above 0".into());
    }
    Ok(stages)
}

/// One checked stage from a rate (per second) and a length (seconds).
/// The `rate:seconds,…` form [`parse_stages`] reads (`--stages`, `RELAB_LOAD_STAGES`).
pub fn format_stages(stages: &[LoadStage]) -> String {
    stages
        .iter()
        .map(|s| format!("{}:{}", s.rate_per_sec, s.duration.as_secs_f64()))
        .collect::<Vec<_>>()
        .join(",")
}

pub fn stage(rate_per_sec: f64, seconds: f64) -> Result<LoadStage, String> {
    if !rate_per_sec.is_finite() || rate_per_sec < 0.0 {
        return Err(format!(
            "rate must be a number of requests per second >= 0, got {rate_per_sec}"
        ));
    }
    if !seconds.is_finite() || seconds <= 0.0 || seconds > 7.0 * 24.0 * 3600.0 {
        return Err(format!("seconds must be above 0 and at most a week, got {seconds}"));
    }
    Ok(LoadStage {
        rate_per_sec,
        duration: Duration::from_secs_f64(seconds),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatted_stages_parse_back_to_the_same_stages() {
        let stages = vec![st(5.0, 10.0), st(0.5, 2.5), st(120.0, 30.0)];
        assert_eq!(format_stages(&stages), "5:10,0.5:2.5,120:30");
        assert_eq!(parse_stages(&format_stages(&stages)).unwrap(), stages);
    }

    fn st(rate: f64, secs: f64) -> LoadStage {
        stage(rate, secs).unwrap()
    }

    #[test]
    fn a_constant_rate_sends_evenly_from_time_zero() {
        let offsets: Vec<Duration> = Schedule::new(&[st(100.0, 3.0)]).collect();
        assert_eq!(offsets.len(), 300);
        assert_eq!(offsets[0], Duration::ZERO);
        assert_eq!(offsets[1], Duration::from_millis(10));
        assert_eq!(offsets[299], Duration::from_millis(2990));
    }

    #[test]
    fn stages_follow_each_other_at_their_own_rate() {
        let offsets: Vec<Duration> = Schedule::new(&[st(2.0, 1.0), st(0.0, 1.0), st(4.0, 1.0)]).collect();
        let ms: Vec<u128> = offsets.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [0, 500, 2000, 2250, 2500, 2750]);
        assert_eq!(total_sends(&[st(2.0, 1.0), st(0.0, 1.0), st(4.0, 1.0)]), 6);
    }

    #[test]
    fn fractional_products_round_up_to_the_sends_that_fit() {
        assert_eq!(sends_in(&st(0.5, 3.0)), 2); // at 0 s and 2 s
        assert_eq!(sends_in(&st(3.0, 0.1)), 1);
        assert_eq!(sends_in(&st(0.1, 30.0)), 3);
    }

    #[test]
    fn the_cursor_gives_the_schedules_offsets_by_sequence_number() {
        let stages = [st(2.0, 1.0), st(0.0, 1.0), st(4.0, 1.0), st(3.0, 0.1)];
        let cursor = Cursor::new(&stages, Share::WHOLE);
        let claimed: Vec<(u64, Duration)> = std::iter::from_fn(|| cursor.claim()).collect();
        let expected: Vec<(u64, Duration)> = (0..).zip(Schedule::new(&stages)).collect();
        assert_eq!(claimed, expected);
        assert_eq!(cursor.sends(), 7);
        assert_eq!(cursor.claim(), None, "exhausted stays exhausted");
        assert_eq!(cursor.peak_rate(), 4.0);
    }

    #[test]
    fn threads_claiming_at_once_get_every_send_of_their_share_exactly_once() {
        let stages = [st(5_000.0, 2.0), st(1_000.0, 1.0)];
        let total = total_sends(&stages);
        let mut all = Vec::new();
        for index in 0..3 {
            let share = Share { index, of: 3 };
            let cursor = Cursor::new(&stages, share);
            let claimed: Vec<(u64, Duration)> = std::thread::scope(|scope| {
                let takers: Vec<_> = (0..4)
                    .map(|_| scope.spawn(|| std::iter::from_fn(|| cursor.claim()).collect::<Vec<_>>()))
                    .collect();
                takers.into_iter().flat_map(|t| t.join().unwrap()).collect()
            });
            assert_eq!(claimed.len() as u64, cursor.sends(), "share {index}");
            assert!(claimed.iter().all(|&(seq, _)| share.takes(seq)), "share {index}");
            for &(seq, offset) in &claimed {
                assert_eq!(Some(offset), cursor.offset(seq));
            }
            all.extend(claimed.into_iter().map(|(seq, _)| seq));
        }
        all.sort_unstable();
        assert_eq!(all, (0..total).collect::<Vec<_>>(), "the shares partition the schedule");
    }

    #[test]
    fn a_closed_cursor_hands_out_nothing_more() {
        let cursor = Cursor::new(&[st(100.0, 1.0)], Share::WHOLE);
        assert_eq!(cursor.claim(), Some((0, Duration::ZERO)));
        cursor.close();
        assert_eq!(cursor.claim(), None);
    }

    #[test]
    fn stages_parse_from_rate_seconds_pairs() {
        let stages = parse_stages("50:10, 100:20").unwrap();
        assert_eq!(stages, vec![st(50.0, 10.0), st(100.0, 20.0)]);
        assert_eq!(total_duration(&stages), Duration::from_secs(30));
    }

    #[test]
    fn bad_stages_say_which_pair_is_wrong() {
        assert!(parse_stages("50").unwrap_err().contains("stage 1"));
        assert!(parse_stages("50:10,x:5").unwrap_err().contains("stage 2"));
        assert!(parse_stages("50:10,5:0").unwrap_err().contains("seconds"));
        assert!(parse_stages("-1:10").unwrap_err().contains("rate"));
        assert!(parse_stages("0:10").unwrap_err().contains("send nothing"));
        assert!(parse_stages("").is_err());
    }
}
