//! Init hooks: every executable file of the init dir runs, in name order, before the
//! configuration is loaded (so a hook may write a `conf.d` fragment or wait for the
//! database). Its `*.conf` files are merged as config fragments by `laredo-config`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

/// Runs the hooks of `dir` (a missing directory has none).
///
/// # Errors
/// A hook that cannot be started or exits non-zero; startup stops there.
pub(crate) fn run_hooks(dir: &Path) -> Result<usize, String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(0);
    };
    let mut hooks: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.extension().is_none_or(|ext| ext != "conf")
                && path
                    .metadata()
                    .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .collect();
    hooks.sort();
    for hook in &hooks {
        let status = Command::new(hook)
            .status()
            .map_err(|e| format!("init hook {}: {e}", hook.display()))?;
        if !status.success() {
            return Err(format!("init hook {} failed: {status}", hook.display()));
        }
    }
    Ok(hooks.len())
}
