//! Fakes shared by core's unit tests (other crates' tests get theirs from testkit).

use crate::backup_codes::HashCost;

/// Cheap backup-code hashing; the real cost is measured by the benchmark.
pub(crate) const CHEAP: HashCost = HashCost {
    m_kib: 64,
    t: 1,
    p: 1,
};

/// The uid tests run as: the owner their stores and files must have.
pub(crate) fn me() -> u32 {
    nix::unistd::geteuid().as_raw()
}
