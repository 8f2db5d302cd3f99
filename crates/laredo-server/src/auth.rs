//! The tokens of the two roles, gathered from the configuration (inline, environment
//! through `LAREDO_GRPC_AUTH_*`, files), and the rule that a server without any token
//! only starts with `insecure = true`.

use laredo_config::LaredoConfig;

/// Tokens per role, ready for laredo-service.
#[derive(Clone, Default)]
pub(crate) struct Tokens {
    pub(crate) admin: Vec<String>,
    pub(crate) read: Vec<String>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("admin", &self.admin.len())
            .field("read", &self.read.len())
            .finish()
    }
}

/// Every configured token, files read; every problem one line, starting with its key.
pub(crate) fn tokens(config: &LaredoConfig) -> Result<Tokens, Vec<String>> {
    let auth = &config.grpc.auth;
    let mut errors = Vec::new();
    let mut read_files = |key: &str, files: &[std::path::PathBuf], into: &mut Vec<String>| {
        for (idx, path) in files.iter().enumerate() {
            match std::fs::read_to_string(path) {
                Ok(text) if text.trim().is_empty() => errors.push(format!(
                    "grpc.auth.{key}[{idx}]: {} holds no token",
                    path.display()
                )),
                Ok(text) => into.push(text.trim().to_owned()),
                Err(e) => errors.push(format!(
                    "grpc.auth.{key}[{idx}]: cannot read {}: {e}",
                    path.display()
                )),
            }
        }
    };
    let mut tokens = Tokens::default();
    tokens.admin.extend(auth.admin_token.iter().cloned());
    tokens.admin.extend(auth.admin_tokens.iter().cloned());
    read_files(
        "admin_token_files",
        &auth.admin_token_files,
        &mut tokens.admin,
    );
    tokens.read.extend(auth.read_token.iter().cloned());
    tokens.read.extend(auth.read_tokens.iter().cloned());
    read_files("read_token_files", &auth.read_token_files, &mut tokens.read);
    for (key, list) in [
        ("admin_tokens", &tokens.admin),
        ("read_tokens", &tokens.read),
    ] {
        if list
            .iter()
            .any(|t| t.is_empty() || !t.bytes().all(|b| b.is_ascii_graphic()))
        {
            errors.push(format!(
                "grpc.auth.{key}: a token must be visible ASCII without spaces"
            ));
        }
    }
    if tokens.admin.is_empty() && tokens.read.is_empty() && !config.insecure {
        errors.push(
            "grpc.auth: no token is configured, and laredo-server does not serve OAM, Query \
             and fan-out without one: set grpc.auth.admin_token (or the environment variable \
             LAREDO_GRPC_AUTH_ADMIN_TOKEN, or grpc.auth.admin_token_files) and read tokens for \
             readers, or set insecure = true to serve every method to anyone who can reach \
             the ports"
                .to_owned(),
        );
    }
    if errors.is_empty() {
        Ok(tokens)
    } else {
        Err(errors)
    }
}
