//! Real-process cluster tests: several `verdigris agent` processes on loopback.

#[test]
fn binary_is_built() {
    assert!(std::path::Path::new(env!("CARGO_BIN_EXE_verdigris")).exists());
}
