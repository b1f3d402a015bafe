//! The coordinator client used by the user-facing subcommands, and the reading of a
//! coordinator URL that they and `steer worker` share.

use std::time::Duration;

use anyhow::Context;
use api_client::CoordinatorClient;

use super::CoordinatorArgs;

/// File under `steer up`'s data directory holding its admin token.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";

/// How long an interactive command retries a coordinator that answers 5xx (restarting, its
/// database briefly away). One that cannot be connected to at all is not retried.
const RETRY_FOR: Duration = Duration::from_secs(10);

pub fn connect(args: &CoordinatorArgs) -> anyhow::Result<CoordinatorClient> {
    let url = coordinator_url(&args.coordinator)?;
    let token = api_token(args.token.as_deref(), args.data_dir.as_deref())?;
    Ok(CoordinatorClient::new(&url, &token).with_retry_for(RETRY_FOR).without_retry_when_unreachable())
}

/// The token given, or else the admin token `steer up` wrote on this machine (in `data_dir`,
/// or its default data directory).
pub fn api_token(given: Option<&str>, data_dir: Option<&std::path::Path>) -> anyhow::Result<String> {
    if let Some(t) = given {
        return Ok(t.to_string());
    }
    let dir = data_dir.map(std::path::Path::to_path_buf).unwrap_or_else(super::default_data_dir);
    let path = dir.join(ADMIN_TOKEN_FILE);
    std::fs::read_to_string(&path).map(|t| t.trim().to_string()).with_context(|| {
        format!(
            "no API token: set STEER_TOKEN (or --token), or run `steer up` on this machine, which writes one to {}",
            path.display()
        )
    })
}

/// Why a `--coordinator` value is not a coordinator URL.
#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    #[error("--coordinator `{0}`: a coordinator is reached over http:// or https://, not {1}://; write e.g. http://10.0.0.5:8420")]
    Scheme(String, String),
    #[error("--coordinator `{0}` is not a URL ({1}); write http://HOST:PORT, e.g. http://10.0.0.5:8420")]
    NotAUrl(String, String),
}

/// The coordinator's base URL from `--coordinator` / `STEER_COORDINATOR`: `HOST:PORT` without
/// a scheme means `http://HOST:PORT`; any scheme other than http and https is refused.
pub fn coordinator_url(given: &str) -> Result<String, UrlError> {
    let text = given.trim();
    let full = if text.contains("://") { text.to_string() } else { format!("http://{text}") };
    let url = reqwest::Url::parse(&full).map_err(|e| UrlError::NotAUrl(given.to_string(), e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(UrlError::Scheme(given.to_string(), url.scheme().to_string()));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(UrlError::NotAUrl(given.to_string(), "no host".into()));
    }
    Ok(full.trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admin_token_is_read_from_the_data_dir_steer_up_was_given() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(ADMIN_TOKEN_FILE), "stb_abc\n").unwrap();
        assert_eq!(api_token(None, Some(dir.path())).unwrap(), "stb_abc");
        assert_eq!(api_token(Some("given"), Some(dir.path())).unwrap(), "given");
        let empty = tempfile::tempdir().unwrap();
        let err = format!("{:#}", api_token(None, Some(empty.path())).unwrap_err());
        assert!(err.contains(&empty.path().join(ADMIN_TOKEN_FILE).display().to_string()), "{err}");
    }

    #[test]
    fn a_host_and_port_without_scheme_is_http() {
        assert_eq!(coordinator_url("localhost:8420").unwrap(), "http://localhost:8420");
        assert_eq!(coordinator_url("10.0.0.5:8420").unwrap(), "http://10.0.0.5:8420");
        assert_eq!(coordinator_url("https://steer.example/").unwrap(), "https://steer.example");
        assert_eq!(coordinator_url("http://127.0.0.1:8420").unwrap(), "http://127.0.0.1:8420");
    }

    #[test]
    fn other_schemes_and_non_urls_are_refused_saying_what_to_write() {
        let ftp = coordinator_url("ftp://x").unwrap_err().to_string();
        assert!(ftp.contains("not ftp://") && ftp.contains("http://10.0.0.5:8420"), "{ftp}");
        let junk = coordinator_url("not a url").unwrap_err().to_string();
        assert!(junk.contains("`not a url` is not a URL") && junk.contains("http://HOST:PORT"), "{junk}");
        assert!(coordinator_url("http://").is_err());
    }
}
