//! What a person sees: the HTML report of a comparison, rendered by headless
//! Chromium (Debian's `chromium`, installed by `scripts/setup.sh`). The
//! screenshot must not be blank and the DOM must hold the comparison: every
//! variant's name, the interval bars, the recommendation.

use lab_service::run::RunOutput;
use relab_model::compare;
use relab_model::results::{OrderCounts, PaymentResults, Percentiles, RunResults, TimelinePoint};
use relab_model::status::ReliabilityExperimentStatus;
use relab_operator::runner::{report, LabRunOutput};
use std::process::Command;

fn results(paid: u64, calls: u64, p95: f64) -> RunResults {
    RunResults {
        orders: OrderCounts {
            sent: 600,
            accepted: 600,
            paid,
            dead_lettered: 600 - paid,
            ..Default::default()
        },
        success_ratio: paid as f64 / 600.0,
        api_latency_ms: Percentiles {
            count: 600,
            p50: p95 / 3.0,
            p95,
            p99: p95 * 1.4,
            ..Default::default()
        },
        end_to_end_latency_ms: Percentiles {
            count: paid,
            p95: p95 * 20.0,
            ..Default::default()
        },
        payment: PaymentResults {
            calls,
            ..Default::default()
        },
        ..Default::default()
    }
}

fn timeline(calls_in_outage: u64) -> Vec<TimelinePoint> {
    (0..15)
        .map(|s| TimelinePoint {
            second: s,
            sent: 40,
            accepted: 40,
            api_p50_ms: 5.0,
            api_p99_ms: 12.0 + f64::from(s),
            payment_calls: if (5..10).contains(&s) { calls_in_outage } else { 40 },
            breaker_state: if (5..10).contains(&s) && calls_in_outage < 20 {
                1
            } else {
                0
            },
            ..Default::default()
        })
        .collect()
}

/// Chromium, headless, as this machine runs it (no network, fresh profile).
fn chromium(profile: &std::path::Path, args: &[&str]) -> std::process::Output {
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run chromium ({e}): `bash scripts/setup.sh` installs it"));
    assert!(
        out.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn the_comparison_report_renders_with_every_variant_in_it() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/examples/outage-drill.yaml"
    ))
    .unwrap();
    let (experiment, _) = relab_operator::runner::load_manifest(&text, 0.5).unwrap();
    let mut variants = compare::planned_variants(&experiment);
    let figures = [(600, 640, 15.0, 3), (419, 1_450, 11.0, 60)];
    let mut runs = Vec::new();
    for (i, v) in variants.iter_mut().enumerate() {
        let (paid, calls, p95, outage_calls) = figures[i];
        let r = results(paid, calls, p95);
        v.runs.push(compare::run_record(
            0,
            42,
            i as u32 + 1,
            "t0".into(),
            "t1".into(),
            &r,
            Default::default(),
        ));
        runs.push(LabRunOutput {
            variant: Some(v.name.clone()),
            repeat: 0,
            seed: 42,
            output: RunOutput {
                results: r,
                timeline: timeline(outage_calls),
            },
        });
    }
    for (i, v) in variants.iter_mut().enumerate() {
        compare::judge_variant(&experiment, i, v);
    }
    let status = ReliabilityExperimentStatus {
        comparison: compare::comparison(&variants),
        verdict: Some(compare::experiment_verdict(&variants)),
        variants,
        ..Default::default()
    };
    let html = report::render_status(&experiment, &status, &runs);
    assert!(!html.contains("<script"), "offline: no scripts");
    let dir = std::env::temp_dir().join(format!("relab-report-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let page = dir.join("report.html");
    std::fs::write(&page, &html).unwrap();
    let url = format!("file://{}", page.display());

    let dom = String::from_utf8(chromium(&dir.join("profile-dom"), &["--dump-dom", &url]).stdout).unwrap();
    for needle in [
        "with-breaker",
        "no-breaker",
        "id=\"comparison\"",
        "successRatio (target &gt;= 0.99)",
        "no-breaker / with-breaker",
    ] {
        assert!(dom.contains(needle), "the rendered DOM has no {needle:?}");
    }

    let shot = dir.join("report.png");
    chromium(
        &dir.join("profile-shot"),
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=900,2400",
            &url,
        ],
    );
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(&shot).expect("a screenshot"),
    ));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut pixels = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut pixels).expect("a frame");
    let pixels = &pixels[..info.buffer_size()];
    let channels = info.color_type.samples();
    let distinct: std::collections::BTreeSet<&[u8]> = pixels.chunks(channels).collect();
    let non_white = pixels
        .chunks(channels)
        .filter(|p| p.iter().take(3).any(|c| *c < 200))
        .count();
    assert!(distinct.len() > 20, "a blank page: {} colours", distinct.len());
    assert!(non_white > 5_000, "hardly anything drawn: {non_white} dark pixels");
    eprintln!(
        "report screenshot {}x{}: {} colours, {non_white} dark pixels",
        info.width,
        info.height,
        distinct.len()
    );
    if std::env::var_os("RELAB_KEEP_REPORT").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        eprintln!("kept {}", dir.display());
    }
}
