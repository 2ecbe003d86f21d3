//! include/hearth.h must be what cbindgen makes of src/ now: a stale header
//! is a silent ABI mismatch for every C caller. `HEARTH_BLESS=1` rewrites it.

use std::path::Path;

#[test]
fn header_is_current() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_crate(dir)
        .with_config(config)
        .generate()
        .expect("cbindgen could not generate the header")
        .write(&mut generated);
    let generated = String::from_utf8(generated).expect("the header is UTF-8");
    let path = dir.join("include/hearth.h");
    if std::env::var_os("HEARTH_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("write include/hearth.h");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "capi/include/hearth.h is out of date with capi/src; regenerate it with\n  \
         HEARTH_BLESS=1 cargo test -p hearth-capi --test header\nand commit it"
    );
}
