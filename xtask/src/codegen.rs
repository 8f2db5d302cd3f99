//! `cargo xtask codegen`: the checked-in files generated from code.
//!
//! Each file is rendered in memory by the crate that owns its source of truth, so the
//! same function serves this command and that crate's staleness test (which fails
//! with "run `cargo xtask codegen`").

use std::path::Path;

use anyhow::{Context, Result, bail};

/// A generated file: its path from the workspace root and how to render it.
struct Generated {
    path: &'static str,
    render: fn() -> String,
}

const GENERATED: &[Generated] = &[Generated {
    path: "docs/configuration.md",
    render: laredo_config::configuration_reference,
}];

/// Writes every generated file that changed; with `--check`, writes nothing and fails
/// when one is stale.
pub(crate) fn codegen(root: &Path, args: &[String]) -> Result<()> {
    let check = match args {
        [] => false,
        [flag] if flag == "--check" => true,
        _ => bail!("usage: cargo xtask codegen [--check]"),
    };
    let mut stale = Vec::new();
    for generated in GENERATED {
        let path = root.join(generated.path);
        let text = (generated.render)();
        let current = match std::fs::read_to_string(&path) {
            Ok(current) => Some(current),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
            Err(error) => {
                return Err(error).with_context(|| format!("cannot read {}", path.display()));
            }
        };
        if current.as_deref() == Some(text.as_str()) {
            eprintln!("==> {} is up to date", generated.path);
            continue;
        }
        if check {
            stale.push(generated.path);
            continue;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("==> wrote {}", generated.path);
    }
    if !stale.is_empty() {
        bail!("stale: {}; run `cargo xtask codegen`", stale.join(", "));
    }
    Ok(())
}
