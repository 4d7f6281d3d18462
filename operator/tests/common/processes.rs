//! The processes a local run's hits name (`worker pid 1234`).

/// The process id at the end of a hit (`worker pid 1234`, `api pid 99`).
pub fn pid_in(hit: &str) -> u32 {
    hit.rsplit(' ').next().unwrap().trim_end_matches(')').parse().unwrap()
}

/// Whether `pid` runs (a zombie does not).
pub fn is_running(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}
