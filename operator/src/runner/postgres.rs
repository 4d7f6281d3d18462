//! An ephemeral PostgreSQL server from the system's binaries, in a temporary
//! directory, on a free loopback port; stopped and removed on drop.
//!
//! As root, initdb and the server run as the `postgres` user (PostgreSQL
//! refuses to run as root); otherwise as the current user.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl) not found in $RELAB_PG_BIN, /usr/lib/postgresql/*/bin or PATH: \
         install them with `bash scripts/setup.sh` (Debian: apt-get install postgresql) or pass --database-url"
    )]
    NotInstalled,
    #[error("{step} failed: {detail}")]
    Step { step: &'static str, detail: String },
}

pub struct EphemeralPostgres {
    bin: PathBuf,
    dir: PathBuf,
    as_postgres_user: bool,
    port: u16,
}

/// `RELAB_PG_BIN` names the directory of initdb/pg_ctl explicitly.
fn find_bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("RELAB_PG_BIN") {
        let dir = PathBuf::from(dir);
        return (dir.join("initdb").exists() && dir.join("pg_ctl").exists()).then_some(dir);
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists() && p.join("pg_ctl").exists())
        .collect();
    dirs.sort();
    if let Some(d) = dirs.pop() {
        return Some(d);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).find(|p| p.join("initdb").exists() && p.join("pg_ctl").exists())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn free_port() -> Result<u16, PostgresError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| PostgresError::Step {
            step: "finding a free port",
            detail: e.to_string(),
        })
}

impl EphemeralPostgres {
    /// initdb + start; blocks until the server accepts connections.
    pub fn start() -> Result<Self, PostgresError> {
        let bin = find_bin_dir().ok_or(PostgresError::NotInstalled)?;
        let as_postgres_user = is_root();
        let dir = std::env::temp_dir().join(format!("relab-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).map_err(|e| PostgresError::Step {
            step: "creating the data directory",
            detail: e.to_string(),
        })?;
        let pg = Self {
            bin,
            dir,
            as_postgres_user,
            port: free_port()?,
        };
        if as_postgres_user {
            pg.run(
                "chown",
                Command::new("chown").args(["-R", "postgres:postgres"]).arg(&pg.dir),
            )?;
        }
        let data = pg.dir.join("data");
        pg.run(
            "initdb",
            pg.pg_command("initdb").arg("-D").arg(&data).args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ]),
        )?;
        // fsync and full-page writes guard against the machine crashing,
        // not against the server's process dying: off, for speed. Commits
        // stay synchronous (each commit's WAL written to the kernel before
        // it is acknowledged), so an immediate-mode restart (a
        // `RestartDatabase` disruption) loses nothing acknowledged, as on a
        // production server.
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c synchronous_commit=on -c full_page_writes=off -c max_connections=200",
            pg.port,
            pg.dir.display()
        );
        pg.run(
            "pg_ctl start",
            pg.pg_command("pg_ctl")
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(pg.dir.join("server.log"))
                .args(["-w", "-o", &options, "start"]),
        )?;
        Ok(pg)
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn data_dir(&self) -> &Path {
        &self.dir
    }

    fn pg_command(&self, tool: &str) -> Command {
        let path = self.bin.join(tool);
        if self.as_postgres_user {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn run(&self, step: &'static str, cmd: &mut Command) -> Result<(), PostgresError> {
        let out = cmd.stdin(Stdio::null()).output().map_err(|e| PostgresError::Step {
            step,
            detail: e.to_string(),
        })?;
        if out.status.success() {
            Ok(())
        } else {
            let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
            Err(PostgresError::Step {
                step,
                detail: format!(
                    "{}{}{}",
                    String::from_utf8_lossy(&out.stderr),
                    String::from_utf8_lossy(&out.stdout),
                    log
                ),
            })
        }
    }
}

/// Restarts an [`EphemeralPostgres`] in place (a `RestartDatabase`
/// disruption): immediate shutdown (no checkpoint, connections cut, crash
/// recovery at start), same data directory, same options and port.
#[derive(Debug, Clone)]
pub struct PgRestarter {
    bin: PathBuf,
    dir: PathBuf,
    as_postgres_user: bool,
}

impl PgRestarter {
    /// `pg_ctl restart -m immediate -w`: returns once the server accepts
    /// connections again, with the new postmaster's pid.
    pub fn restart(&self) -> Result<u32, PostgresError> {
        let pg_ctl = self.bin.join("pg_ctl");
        let mut cmd = if self.as_postgres_user {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(pg_ctl);
            c
        } else {
            Command::new(pg_ctl)
        };
        let out = cmd
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("server.log"))
            .args(["-m", "immediate", "-w", "restart"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| PostgresError::Step {
                step: "pg_ctl restart",
                detail: e.to_string(),
            })?;
        if !out.status.success() {
            return Err(PostgresError::Step {
                step: "pg_ctl restart",
                detail: format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stderr),
                    String::from_utf8_lossy(&out.stdout)
                ),
            });
        }
        postmaster_pid(&self.dir.join("data")).ok_or(PostgresError::Step {
            step: "pg_ctl restart",
            detail: "no postmaster.pid after the restart".into(),
        })
    }
}

fn postmaster_pid(data: &Path) -> Option<u32> {
    std::fs::read_to_string(data.join("postmaster.pid"))
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

impl EphemeralPostgres {
    /// What restarts this server in place ([`PgRestarter::restart`]).
    pub fn restarter(&self) -> PgRestarter {
        PgRestarter {
            bin: self.bin.clone(),
            dir: self.dir.clone(),
            as_postgres_user: self.as_postgres_user,
        }
    }

    /// The postmaster's process id.
    pub fn pid(&self) -> Option<u32> {
        postmaster_pid(&self.dir.join("data"))
    }
}

impl Drop for EphemeralPostgres {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = self
            .pg_command("pg_ctl")
            .arg("-D")
            .arg(&data)
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
