//! `schema.graphql` is the public contract: it must be exactly what the binary prints.

use std::process::Command;

#[test]
fn the_checked_in_schema_is_what_skyglass_schema_prints() {
    let output = Command::new(env!("CARGO_BIN_EXE_skyglass")).arg("schema").output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let printed = String::from_utf8(output.stdout).unwrap();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../schema.graphql");
    let checked_in = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        printed == checked_in,
        "schema.graphql differs from the code's schema; if the change is intended, regenerate it with\n  \
         \"$CARGO_TARGET_DIR/release/skyglass\" schema > schema.graphql\nand review the diff"
    );
}
