//! relab's packaging checks live in `tests/`: the Helm chart (`chart.rs`),
//! the container images (`images.rs`), the Tiltfile (`tilt.rs`, evaluated by
//! the `starlark` interpreter) and the Argo CD health check (`argocd.rs`).
//! This library is the one helper they share beyond the operator's test
//! helpers: where the workspace's binaries are.

use std::path::PathBuf;

/// A binary of the workspace (`relab`, `lab-service`) in the target directory
/// the running test was built in; panics, naming the build to run, when it
/// is missing (`cargo test --workspace --all-targets` builds them).
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    // target/<profile>/deps/<test>-<hash>: the binaries are in target/<profile>
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("a test binary lives in <target>/<profile>/deps");
    let bin = profile_dir.join(name);
    assert!(
        bin.is_file(),
        "{} is missing: build it first with this test's profile and target dir \
         (`cargo build -p relab-operator -p lab-service`; `cargo test --workspace --all-targets` builds it too)",
        bin.display()
    );
    bin
}
