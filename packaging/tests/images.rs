//! The container images (deploy/docker/*.Dockerfile, scripts/images.sh):
//! built with buildah from this test build's own binaries, each archive
//! unpacked with umoci, its config checked (non-root user, entrypoint), and
//! its entrypoint run from the unpacked root filesystem with `chroot`: the
//! image's own libraries are enough. Postgres is started the way the
//! operator's pod runs it (uid 70, read-only root, writable data, socket and
//! /tmp directories, the operator's env and args) and queried with the
//! image's psql.
//!
//! Needs root (chroot, mounts in a private namespace, files owned by uid 70)
//! and buildah, umoci (`bash scripts/tools.sh`), postgresql-15 and
//! busybox-static (apt). A missing tool fails the test, naming how to
//! install it; it is never skipped. lab-service's binary must be built next
//! to relab's (`cargo test --workspace --all-targets` builds both; this
//! test's own `cargo test -p relab-operator` does not).

#[path = "../../operator/tests/common/mod.rs"]
mod common;

use common::free_port;
use relab_operator::controller::children::{managed_database_url, workloads, Kind, LabDefaults, Names, ServiceIps};
use relab_operator::crd::{parse, validated};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const INSTALL_HINT: &str = "run `bash scripts/tools.sh` (as root) before the tests";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// How to install a missing program.
fn install_hint(name: &str) -> String {
    match name {
        "busybox" => "apt-get install busybox-static (the Postgres image's shell)".into(),
        "objcopy" => "apt-get install binutils".into(),
        "postgres" => "apt-get install postgresql-15 (scripts/setup.sh installs it)".into(),
        _ => INSTALL_HINT.into(),
    }
}

/// A program on PATH, or a failure that says how to install it.
fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("`{name}` is missing: {}", install_hint(name)))
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

fn text(out: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The archives scripts/images.sh wrote, or why there are none.
struct Built {
    dir: PathBuf,
}

fn built() -> &'static Built {
    static BUILT: OnceLock<Result<Built, String>> = OnceLock::new();
    match BUILT.get_or_init(build) {
        Ok(b) => b,
        Err(e) => panic!("{e}"),
    }
}

fn build() -> Result<Built, String> {
    if !is_root() {
        return Err(format!(
            "the image test needs root (chroot, mounts, files owned by uid 70): run it as root; {INSTALL_HINT}"
        ));
    }
    for t in [
        "buildah", "umoci", "chroot", "unshare", "mount", "tar", "objcopy", "busybox",
    ] {
        tool(t);
    }
    if !Path::new("/usr/lib/postgresql/15/bin/postgres").is_file() {
        return Err(format!("Postgres 15's server is missing: {}", install_hint("postgres")));
    }
    let relab = relab_packaging::workspace_bin("relab");
    let bin_dir = relab.parent().expect("a binary has a directory").to_path_buf();
    let profile = match bin_dir.file_name().and_then(|n| n.to_str()) {
        Some("release") => "release",
        _ => "debug",
    };
    let lab_service = bin_dir.join("lab-service");
    if !lab_service.is_file() {
        return Err(format!(
            "{} is missing: build it with this test's profile and target dir first, \
             e.g. `cargo build -p lab-service` (`cargo test --workspace --all-targets` builds it too)",
            lab_service.display()
        ));
    }
    warn_if_stale(&lab_service);
    let started = Instant::now();
    let out = Command::new("bash")
        .arg(repo_root().join("scripts/images.sh"))
        .args(["--profile", profile, "--bin-dir"])
        .arg(&bin_dir)
        .output()
        .map_err(|e| format!("bash scripts/images.sh: {e}"))?;
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        return Err(format!("scripts/images.sh failed: {}", text(&out)));
    }
    eprintln!("scripts/images.sh took {:.1} s", started.elapsed().as_secs_f64());
    let cache = std::env::var("RELAB_CACHE").unwrap_or_else(|_| "/var/cache/relab".into());
    Ok(Built {
        dir: Path::new(&cache).join("images"),
    })
}

/// `cargo test -p relab-operator` builds relab but not lab-service's binary:
/// say so when lab-service's sources are newer than it (the image test only
/// needs a binary that starts, so this does not fail).
fn warn_if_stale(binary: &Path) {
    fn newest(path: &Path) -> Option<std::time::SystemTime> {
        let meta = std::fs::metadata(path).ok()?;
        if !meta.is_dir() {
            return meta.modified().ok();
        }
        std::fs::read_dir(path)
            .ok()?
            .filter_map(|e| e.ok())
            .filter_map(|e| newest(&e.path()))
            .max()
    }
    let built = std::fs::metadata(binary).and_then(|m| m.modified()).ok();
    let crate_dir = repo_root().join("lab-service");
    let sources = ["src", "migrations", "Cargo.toml"]
        .iter()
        .filter_map(|p| newest(&crate_dir.join(p)))
        .max();
    if let (Some(built), Some(sources)) = (built, sources) {
        if sources > built {
            eprintln!(
                "warning: {} is older than lab-service's sources; `cargo build -p lab-service` refreshes it",
                binary.display()
            );
        }
    }
}

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("relab-images-{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One archive, unpacked: the image's config and its root filesystem.
struct Unpacked {
    config: Value,
    rootfs: PathBuf,
    dir: TempDir,
}

impl Unpacked {
    fn user(&self) -> &str {
        self.config["config"]["User"].as_str().unwrap_or("")
    }
    fn strings(&self, key: &str) -> Vec<String> {
        self.config["config"][key]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
            .unwrap_or_default()
    }
    fn env(&self) -> Vec<(String, String)> {
        self.strings("Env")
            .into_iter()
            .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
            .collect()
    }
    /// `chroot --userspec=USER rootfs ARGS...` with only the image's Env.
    fn run(&self, args: &[&str]) -> Output {
        Command::new(tool("chroot"))
            .env_clear()
            .envs(self.env())
            .arg(format!("--userspec={}", self.user()))
            .arg(&self.rootfs)
            .args(args)
            .output()
            .unwrap()
    }
}

fn read_json(path: &Path) -> Value {
    let raw = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&raw).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn blob(layout: &Path, digest: &str) -> PathBuf {
    let hex = digest
        .strip_prefix("sha256:")
        .unwrap_or_else(|| panic!("digest {digest}"));
    layout.join("blobs/sha256").join(hex)
}

/// `NAME.tar` (an oci-archive) -> its config (via index.json and the
/// manifest) and `umoci raw unpack`'s root filesystem (ownership kept: we
/// are root).
fn unpack(name: &str) -> Unpacked {
    let archive = built().dir.join(format!("{name}.tar"));
    assert!(archive.is_file(), "{} was not written", archive.display());
    let dir = TempDir::new(name);
    let layout = dir.0.join("layout");
    std::fs::create_dir_all(&layout).unwrap();
    let out = Command::new(tool("tar"))
        .arg("-C")
        .arg(&layout)
        .arg("-xf")
        .arg(&archive)
        .output()
        .unwrap();
    assert!(out.status.success(), "untar {}: {}", archive.display(), text(&out));

    let index = read_json(&layout.join("index.json"));
    let manifests = index["manifests"].as_array().expect("index.json has manifests");
    assert_eq!(manifests.len(), 1, "one image per archive: {index}");
    let reference = manifests[0]["annotations"]["org.opencontainers.image.ref.name"]
        .as_str()
        .expect("the archive names its image");
    assert_eq!(reference, format!("localhost/{name}:dev"));
    let manifest = read_json(&blob(&layout, manifests[0]["digest"].as_str().unwrap()));
    let config = read_json(&blob(&layout, manifest["config"]["digest"].as_str().unwrap()));
    assert_eq!(config["os"], "linux");
    assert_eq!(config["architecture"], "amd64");

    let rootfs = dir.0.join("rootfs");
    let out = Command::new(tool("umoci"))
        .args(["raw", "unpack", "--image"])
        .arg(format!("{}:{reference}", layout.display()))
        .arg(&rootfs)
        .output()
        .unwrap();
    assert!(out.status.success(), "umoci raw unpack {name}: {}", text(&out));
    Unpacked { config, rootfs, dir }
}

fn du(path: &Path) -> u64 {
    let out = Command::new("du").arg("-sb").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// What the lab and operator images share: the base (user nonroot 65532,
/// /tmp, CA certificates, no build leftovers), a small root filesystem.
fn check_base(image: &Unpacked, name: &str) {
    assert_eq!(image.user(), "65532:65532", "{name}: {}", image.config["config"]);
    let passwd = std::fs::read_to_string(image.rootfs.join("etc/passwd")).unwrap();
    assert!(
        passwd.contains("nonroot:x:65532:65532:"),
        "{name} /etc/passwd: {passwd}"
    );
    let tmp = std::fs::metadata(image.rootfs.join("tmp")).unwrap();
    assert!(tmp.is_dir());
    assert!(
        image.rootfs.join("etc/ssl/certs/ca-certificates.crt").is_file(),
        "{name}: no CA certificates"
    );
    assert!(
        !image.rootfs.join("out").exists(),
        "{name}: the binaries stage leaked /out"
    );
    assert!(
        !image.rootfs.join("usr/local/cargo").exists(),
        "{name}: a Rust toolchain in the final image"
    );
    let size = du(&image.rootfs);
    eprintln!("{name}: root filesystem {:.1} MB", size as f64 / 1e6);
    assert!(size < 200_000_000, "{name}: {size} bytes is not a small image");
}

fn assert_usage(out: &Output, what: &str, needle: &str) {
    let all = text(out);
    assert!(out.status.success(), "{what} in the image: {all}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(needle),
        "{what}: no {needle:?} in its output: {all}"
    );
}

#[test]
fn lab_service_image_runs_from_its_own_root_filesystem() {
    let image = unpack("relab-lab-service");
    check_base(&image, "relab-lab-service");
    assert_eq!(image.strings("Entrypoint"), ["/usr/local/bin/lab-service"]);
    let out = image.run(&["/usr/local/bin/lab-service", "--help"]);
    assert_usage(&out, "lab-service --help", "Usage: lab-service");
    for role in ["api", "worker", "payment-mock", "loadgen"] {
        let out = image.run(&["/usr/local/bin/lab-service", role, "--help"]);
        assert_usage(&out, &format!("lab-service {role} --help"), "Usage: lab-service");
    }
}

#[test]
fn operator_image_runs_from_its_own_root_filesystem() {
    let image = unpack("relab-operator");
    check_base(&image, "relab-operator");
    assert_eq!(image.strings("Entrypoint"), ["/usr/local/bin/relab"]);
    assert_eq!(image.strings("Cmd"), ["operator"]);
    let out = image.run(&["/usr/local/bin/relab", "--help"]);
    assert_usage(&out, "relab --help", "Usage: relab");
    let out = image.run(&["/usr/local/bin/relab", "operator", "--help"]);
    assert_usage(&out, "relab operator --help", "Usage: relab operator");
    assert!(String::from_utf8_lossy(&out.stdout).contains("--metrics-listen"));
}

/// The server, stopped (SIGINT: fast shutdown, then SIGKILL) on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = Command::new("kill").args(["-INT", &self.0.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.0.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The managed Postgres container exactly as the operator makes it
/// (children.rs), for an example experiment, and the database URL the lab
/// gets.
fn operator_postgres_container() -> (Value, String) {
    let manifest = std::fs::read_to_string(repo_root().join("deploy/examples/flaky-payments.yaml")).unwrap();
    let mut rx = parse(&manifest).expect("a valid example");
    assert!(
        rx.spec.database.external.is_none(),
        "the example uses the managed database"
    );
    rx.metadata.namespace = Some("lab".into());
    rx.metadata.uid = Some("3f0c6f7e-0000-4000-8000-000000000002".into());
    rx.metadata.generation = Some(1);
    let ips = ServiceIps {
        postgres: Some("127.0.0.1".into()),
        db_proxy: None,
        payment_mock: "127.0.0.2".into(),
        order_service: "127.0.0.3".into(),
        workers: None,
        loadgen: None,
    };
    let children = workloads(&rx, &validated(&rx).expect("valid"), &ips, &LabDefaults::default());
    let postgres = Names::new(&rx).postgres();
    let deployment = children
        .iter()
        .find(|c| c.kind == Kind::Deployment && c.name == postgres)
        .expect("a managed Postgres Deployment");
    let container = deployment.body["spec"]["template"]["spec"]["containers"][0].clone();
    (container, managed_database_url("127.0.0.1"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().map(|s| s.as_str().expect("a string").to_string()).collect())
        .unwrap_or_default()
}

#[test]
fn postgres_image_serves_the_managed_database_as_uid_70() {
    let image = unpack("relab-postgres");
    let (container, url) = operator_postgres_container();
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    let user = format!("{}:{}", security["runAsUser"], security["runAsGroup"]);
    assert_eq!(user, "70:70", "children.rs changed the Postgres user");
    assert_eq!(image.user(), user, "{}", image.config["config"]);
    assert_eq!(image.strings("Entrypoint"), ["/usr/local/bin/docker-entrypoint.sh"]);
    assert_eq!(image.strings("Cmd"), ["postgres"]);
    assert_eq!(image.config["config"]["StopSignal"], "SIGINT");
    assert!(
        image.config["config"]["ExposedPorts"]["5432/tcp"].is_object(),
        "{}",
        image.config["config"]
    );
    let passwd = std::fs::read_to_string(image.rootfs.join("etc/passwd")).unwrap();
    assert!(passwd.contains("postgres:x:70:70:"), "/etc/passwd: {passwd}");
    let out = image.run(&["postgres", "--version"]);
    assert_usage(&out, "postgres --version", "PostgreSQL) 15");
    let size = du(&image.rootfs);
    eprintln!("relab-postgres: root filesystem {:.1} MB", size as f64 / 1e6);

    // The pod as children.rs makes it: its user, a read-only root, a tmpfs
    // (an emptyDir with fsGroup 70) at each volume mount, its env and args;
    // here in a private mount namespace (gone with the server) over the
    // unpacked rootfs. Differences, for the test: listening on 127.0.0.1 and
    // a free port (later -c settings win), initdb --no-sync.
    let port = free_port();
    std::fs::create_dir_all(image.rootfs.join("dev")).unwrap();
    let log_path = image.dir.0.join("postgres.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut script = String::from(
        r#"set -e
R="$1"; shift
mount --bind "$R" "$R"
mount -o remount,bind,ro "$R" "$R"
mount --rbind /dev "$R/dev"
"#,
    );
    let mounts: Vec<String> = container["volumeMounts"]
        .as_array()
        .expect("volume mounts")
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap().to_string())
        .collect();
    for path in &mounts {
        assert!(
            image.rootfs.join(path.trim_start_matches('/')).is_dir(),
            "the image has no {path} to mount an emptyDir on"
        );
        script.push_str(&format!("mount -t tmpfs -o mode=2777,gid=70 tmpfs \"$R{path}\"\n"));
    }
    script.push_str("exec \"$@\"\n");
    let mut env: Vec<String> = image.env().into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    for e in container["env"].as_array().expect("env") {
        env.push(format!(
            "{}={}",
            e["name"].as_str().unwrap(),
            e["value"].as_str().unwrap()
        ));
    }
    env.push("POSTGRES_INITDB_ARGS=--no-sync".into());
    let mut args = strings(&container["args"]);
    args.extend([
        "-c".into(),
        "listen_addresses=127.0.0.1".into(),
        "-c".into(),
        format!("port={port}"),
    ]);
    let started = Instant::now();
    let child = Command::new(tool("unshare"))
        .args(["--mount", "--propagation", "private", "--", "sh", "-c", &script, "sh"])
        .arg(&image.rootfs)
        .arg(tool("env"))
        .arg("-i")
        .args(&env)
        .arg(tool("chroot"))
        .arg(format!("--userspec={user}"))
        .arg(&image.rootfs)
        .arg("/usr/local/bin/docker-entrypoint.sh")
        .args(&args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut server = Server(child);
    let port = port.to_string();
    let logs = || std::fs::read_to_string(&log_path).unwrap_or_default();

    // the operator's readiness probe, with the image's pg_isready
    let mut probe = strings(&container["readinessProbe"]["exec"]["command"]);
    assert_eq!(probe.first().map(String::as_str), Some("pg_isready"));
    probe.extend(["-p".into(), port.clone()]);
    let probe: Vec<&str> = probe.iter().map(String::as_str).collect();
    let deadline = started + Duration::from_secs(30);
    loop {
        if let Ok(Some(status)) = server.0.try_wait() {
            panic!("postgres exited ({status}) before it was ready:\n{}", logs());
        }
        if image.run(&probe).status.success() {
            break;
        }
        assert!(Instant::now() < deadline, "postgres not ready after 30 s:\n{}", logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "relab-postgres: initdb + ready in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // the lab's database URL (postgres://postgres@IP:5432/relab), on our port
    let url = url.replace(":5432/", &format!(":{port}/"));
    let max_connections = args
        .iter()
        .find_map(|a| a.strip_prefix("max_connections="))
        .expect("the operator sets max_connections");
    let sql = "CREATE TABLE t (x int); INSERT INTO t VALUES (41); \
               SELECT current_database(), current_user, current_setting('max_connections'), \
               current_setting('fsync'), (SELECT x + 1 FROM t), \
               (SELECT setting FROM pg_file_settings WHERE name = 'listen_addresses' \
                ORDER BY seqno DESC LIMIT 1)";
    let out = image.run(&["psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", &url, "-c", sql]);
    assert!(out.status.success(), "psql {url}: {}\n{}", text(&out), logs());
    let rows = String::from_utf8_lossy(&out.stdout);
    // the image's own postgresql.conf listens everywhere; the test overrides it
    assert_eq!(
        rows.lines().last().unwrap_or(""),
        format!("relab|postgres|{max_connections}|off|42|*"),
        "{}",
        logs()
    );
    drop(server);
    assert!(
        logs().contains("database system is shut down"),
        "no clean shutdown:\n{}",
        logs()
    );
}

/// The newcomer's path (README: `cargo xtask test`, then `cargo xtask e2e`,
/// with no `CARGO_TARGET_DIR`): images.sh takes the binaries from where
/// cargo put them, by cargo's own rules, not from a cache path of CI's.
/// It used to look in /var/cache/relab/target while cargo built ./target.
#[test]
fn images_take_the_binaries_from_cargos_own_target_dir() {
    let ask = |target: Option<&str>, profile: &str| {
        let mut cmd = Command::new("bash");
        cmd.arg(repo_root().join("scripts/images.sh"))
            .args(["--profile", profile, "--print-bin-dir"])
            .current_dir(repo_root())
            .env_remove("CARGO_TARGET_DIR");
        if let Some(t) = target {
            cmd.env("CARGO_TARGET_DIR", t);
        }
        let out = cmd.output().expect("bash runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let fresh = repo_root().join("target").join("debug");
    assert_eq!(
        ask(None, "debug"),
        fresh.display().to_string(),
        "a fresh clone builds ./target"
    );
    assert_eq!(ask(Some("/srv/elsewhere"), "release"), "/srv/elsewhere/release");
}
