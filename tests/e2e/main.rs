//! probe
#[test]
fn probe() {
    assert!(std::path::Path::new(env!("CARGO_BIN_EXE_muster")).exists());
}
