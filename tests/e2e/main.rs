#[test]
fn bin_path_is_known() {
    assert!(std::path::Path::new(env!("CARGO_BIN_EXE_verdigris")).exists());
}
