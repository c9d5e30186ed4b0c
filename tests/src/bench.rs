//! What the benchmark programs (`src/bin/linnet-bench*`) share: their command line and
//! their statistics.

/// The value after `name` on the command line.
pub fn arg(name: &str) -> Option<String> {
    std::env::args().skip_while(|a| a != name).nth(1)
}

/// Whether `name` is on the command line.
pub fn flag(name: &str) -> bool {
    std::env::args().any(|a| a == name)
}

/// The median (the upper one of an even count); sorts `v`.
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The Python with slixmpp that the bench scripts set up (`LINNET_PEER_PYTHON`, else
/// `.run/venv`).
pub fn peer_python() -> String {
    std::env::var("LINNET_PEER_PYTHON").unwrap_or_else(|_| {
        crate::repo_root()
            .join(".run/venv/bin/python")
            .to_string_lossy()
            .into_owned()
    })
}
