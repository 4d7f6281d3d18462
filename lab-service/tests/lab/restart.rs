//! `RestartDatabase` as the cluster's load generator does it
//! (`run::disrupt::SqlRestart`): over SQL, an immediate shutdown of the
//! postmaster; the kubelet starting the container again is played here by a
//! watcher that starts the server again on the same data directory as soon
//! as it is down. A server of its own (the shared test server is never
//! restarted).

use lab_service::run::disrupt::{Disruptor, SqlRestart};
use relab_model::disruptions::{DisruptionAction, DisruptionSpec, PlannedDisruption};
use sqlx::Connection;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn pg_bin() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL's server binaries (scripts/setup.sh installs them)")
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("pg_ctl").exists())
        .collect();
    dirs.sort();
    dirs.pop().expect("a PostgreSQL bin directory")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// `bin/<tool> args`, as the postgres user when root (the server refuses root).
fn pg(tool: &str, args: &[&str]) -> std::process::Output {
    let program = pg_bin().join(tool);
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&program);
        c
    } else {
        Command::new(&program)
    };
    cmd.args(args).output().unwrap_or_else(|e| panic!("{tool}: {e}"))
}

struct Server {
    dir: PathBuf,
    port: u16,
}

impl Server {
    fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("relab-restart-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        if is_root() {
            assert!(Command::new("chown")
                .args(["postgres:postgres", dir.to_str().unwrap()])
                .status()
                .unwrap()
                .success());
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let data = dir.join("data");
        let out = pg(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
            ],
        );
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        let server = Self { dir, port };
        server.pg_start();
        server
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn pg_start(&self) -> bool {
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("server.log");
        pg(
            "pg_ctl",
            &[
                "-D",
                self.data().to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-o",
                &opts,
                "-w",
                "start",
            ],
        )
        .status
        .success()
    }

    fn running(&self) -> bool {
        pg("pg_ctl", &["-D", self.data().to_str().unwrap(), "status"])
            .status
            .success()
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        pg(
            "pg_ctl",
            &["-D", self.data().to_str().unwrap(), "-m", "immediate", "stop"],
        );
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn restart_plan() -> PlannedDisruption {
    PlannedDisruption::of(
        &DisruptionSpec {
            name: "db-restart".into(),
            at_seconds: 1,
            action: DisruptionAction::RestartDatabase,
            fraction: None,
            added_ms: None,
            duration_seconds: None,
        },
        1.0,
    )
}

async fn rows(url: &str) -> i64 {
    let mut c = sqlx::PgConnection::connect(url).await.unwrap();
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM kept")
        .fetch_one(&mut c)
        .await
        .unwrap();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sql_restart_stops_the_postmaster_at_once_and_waits_for_it_back_with_its_data() {
    let server = Server::start();
    let url = server.url();
    let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql("CREATE TABLE kept (n int); INSERT INTO kept SELECT generate_series(1, 100)")
        .execute(&mut c)
        .await
        .unwrap();
    let (started_before,): (String,) = sqlx::query_as("SELECT pg_postmaster_start_time()::text")
        .fetch_one(&mut c)
        .await
        .unwrap();
    // a connection open across the restart: the server drops it
    let mut held = sqlx::PgConnection::connect(&url).await.unwrap();

    // the kubelet, played: the server is started again once it is down
    let (dir, port) = (server.dir.clone(), server.port);
    let kubelet = std::thread::spawn(move || {
        let s = Server { dir, port };
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let mut saw_down = false;
        while std::time::Instant::now() < deadline {
            if !s.running() {
                saw_down = true;
                assert!(s.pg_start(), "starting the server again");
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        std::mem::forget(s); // the test's own Server stops it
        saw_down
    });

    let carrier = SqlRestart {
        database_url: url.clone(),
        back_within: Duration::from_secs(60),
    };
    let hit = carrier.fire(&restart_plan()).expect("its action").await;
    let saw_down = tokio::task::spawn_blocking(move || kubelet.join().unwrap())
        .await
        .unwrap();
    let hit = hit.expect("restarted");
    assert!(saw_down, "the postmaster was stopped");
    assert!(hit[0].starts_with("postgres (postmaster pid "), "{hit:?}");
    assert!(hit[0].contains(&started_before), "{hit:?}");

    // same data, a new server, the old connection gone
    assert_eq!(rows(&url).await, 100);
    let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
    let (started_after,): (String,) = sqlx::query_as("SELECT pg_postmaster_start_time()::text")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_ne!(started_after, started_before);
    assert!(
        sqlx::query("SELECT 1").execute(&mut held).await.is_err(),
        "held across the restart"
    );
    let log = std::fs::read_to_string(Path::new(&server.dir).join("server.log")).unwrap_or_default();
    assert!(
        log.contains("immediate shutdown request"),
        "an immediate shutdown:\n{log}"
    );

    // kills are not this carrier's: the operator's
    let mut kill = restart_plan();
    kill.action = DisruptionAction::KillWorkers;
    assert!(carrier.fire(&kill).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_does_not_come_back_is_an_error_naming_the_wait() {
    let server = Server::start();
    let carrier = SqlRestart {
        database_url: server.url(),
        back_within: Duration::from_secs(2),
    };
    let err = carrier.fire(&restart_plan()).unwrap().await.unwrap_err();
    assert!(err.contains("was not back within 2s"), "{err}");
    // and what the last attempt saw: the refused connection
    assert!(err.contains("(last attempt: connecting: "), "{err}");
    assert!(!server.running(), "nobody started it again");
}
