//! docs/configuration.md is generated (`cargo xtask codegen`): the checked-in file must
//! be what the schema renders today.

use std::path::Path;

#[test]
fn docs_configuration_md_is_up_to_date() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md");
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    let generated = laredo_config::configuration_reference();
    if on_disk == generated {
        return;
    }
    let old: Vec<&str> = on_disk.lines().collect();
    let new: Vec<&str> = generated.lines().collect();
    let difference = match (0..old.len().max(new.len())).find(|&i| old.get(i) != new.get(i)) {
        Some(idx) => format!(
            "first difference at line {}:\n  checked in: {}\n  generated:  {}",
            idx + 1,
            old.get(idx).unwrap_or(&"<end of file>"),
            new.get(idx).unwrap_or(&"<end of file>"),
        ),
        None => "the lines agree; line endings or the final newline differ".to_owned(),
    };
    panic!(
        "docs/configuration.md is stale: run `cargo xtask codegen` to regenerate it (it is \
         generated from crates/laredo-config/src/schema and src/reference/template.md; do \
         not edit it by hand).\n{difference}"
    );
}
