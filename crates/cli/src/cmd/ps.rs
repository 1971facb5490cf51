//! `hearth ps`: the models a running `hearth serve` holds in memory, their size and context,
//! what they are doing and when they unload (asks the server's `/api/ps`).

use anyhow::{bail, Context};
use serde_json::Value;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// The server to ask (default: $HEARTH_HOST, else http://127.0.0.1:11434).
    #[arg(long)]
    host: Option<String>,
    /// The server's API key (default: $HEARTH_API_KEY).
    #[arg(long)]
    api_key: Option<String>,
    /// Print the server's JSON as it is.
    #[arg(long)]
    json: bool,
}

pub const DEFAULT_HOST: &str = "http://127.0.0.1:11434";

/// `host`, `127.0.0.1:8080` or `http://host:port`, as a base URL without a trailing slash.
fn base_url(host: &str) -> anyhow::Result<String> {
    let h = host.trim().trim_end_matches('/');
    if h.is_empty() {
        bail!("--host is empty: give an address such as {DEFAULT_HOST}");
    }
    let url = if h.starts_with("http://") || h.starts_with("https://") {
        h.to_string()
    } else {
        format!("http://{h}")
    };
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        bail!("--host {host:?} is not an address: expected something like {DEFAULT_HOST}");
    }
    Ok(url)
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let host = a
        .host
        .or_else(|| std::env::var("HEARTH_HOST").ok())
        .unwrap_or_else(|| DEFAULT_HOST.to_string());
    let base = base_url(&host)?;
    let key = a.api_key.or_else(|| std::env::var("HEARTH_API_KEY").ok());
    let agent = store::http::agent(Duration::from_secs(3), Duration::from_secs(10));
    let mut req = agent.get(&format!("{base}/api/ps"));
    if let Some(k) = &key {
        req = req.header("Authorization", &format!("Bearer {k}"));
    }
    let mut resp = req.call().with_context(|| {
        format!(
            "no hearth server answers at {base} (start one with `hearth serve`, or give --host)"
        )
    })?;
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .read_to_string()
        .with_context(|| format!("cannot read the answer from {base}/api/ps"))?;
    match status {
        200 => {}
        401 => {
            bail!("the server at {base} wants an API key: give --api-key KEY or set HEARTH_API_KEY")
        }
        _ => bail!("{base}/api/ps answered {status}: {}", body.trim()),
    }
    let v: Value = serde_json::from_str(&body).with_context(|| {
        format!("{base}/api/ps did not answer JSON (is it a hearth or Ollama server?)")
    })?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    print!("{}", table(&v, chrono::Utc::now()));
    Ok(())
}

/// The table `ps` prints.
fn table(v: &Value, now: chrono::DateTime<chrono::Utc>) -> String {
    let models = v["models"].as_array().cloned().unwrap_or_default();
    let mut rows = vec![[
        "NAME".to_string(),
        "SIZE".to_string(),
        "CONTEXT".to_string(),
        "RUNNING".to_string(),
        "UNTIL".to_string(),
    ]];
    for m in &models {
        rows.push([
            m["name"].as_str().unwrap_or("?").to_string(),
            m["size"]
                .as_u64()
                .map_or("?".into(), super::pull::human_bytes),
            m["context_length"]
                .as_u64()
                .map_or("?".into(), |c| c.to_string()),
            m["running_requests"]
                .as_u64()
                .map_or("?".into(), |n| n.to_string()),
            until(m["expires_at"].as_str(), now),
        ]);
    }
    let widths: Vec<usize> = (0..5)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("   ").trim_end());
        out.push('\n');
    }
    if models.is_empty() {
        out.push_str("(no model is loaded)\n");
    }
    out
}

/// "4 minutes from now", "Forever" (a model kept loaded) or "now".
fn until(expires: Option<&str>, now: chrono::DateTime<chrono::Utc>) -> String {
    let Some(t) = expires.and_then(|e| chrono::DateTime::parse_from_rfc3339(e).ok()) else {
        return "?".into();
    };
    let secs = t.signed_duration_since(now).num_seconds();
    match secs {
        s if s > 100 * 365 * 24 * 3600 => "Forever".into(),
        s if s <= 0 => "now".into(),
        s if s < 60 => format!("{s} seconds from now"),
        s if s < 7200 => format!("{} minutes from now", s / 60),
        s if s < 2 * 86400 => format!("{} hours from now", s / 3600),
        s => format!("{} days from now", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hosts() {
        assert_eq!(base_url("127.0.0.1:8080").unwrap(), "http://127.0.0.1:8080");
        assert_eq!(base_url("http://x:1/").unwrap(), "http://x:1");
        assert!(base_url(" ").is_err());
        assert!(base_url("a b").is_err());
    }

    #[test]
    fn table_rows() {
        let now = chrono::Utc::now();
        let soon = (now + chrono::Duration::seconds(299)).to_rfc3339();
        let v = json!({"models": [
            {"name": "smollm2", "size": 120_000_000u64, "context_length": 4096, "running_requests": 2, "expires_at": soon},
            {"name": "gemma3", "size": 300_000_000u64, "context_length": 2048, "running_requests": 0, "expires_at": "2318-01-01T00:00:00Z"},
        ]});
        let t = table(&v, now);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("NAME"));
        assert!(
            lines[1].contains("smollm2")
                && lines[1].contains("4096")
                && lines[1].contains("4 minutes from now"),
            "{t}"
        );
        assert!(lines[2].contains("Forever"), "{t}");
        assert!(table(&json!({"models": []}), now).contains("no model is loaded"));
    }
}
