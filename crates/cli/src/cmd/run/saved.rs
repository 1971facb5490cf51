//! `/save` and `/load`: a conversation as JSON, its messages and its settings.
//!
//! ```json
//! {"format": "hearth-conversation", "version": 1, "model": "smollm2",
//!  "settings": {"params": {"temperature": 0.3}, "system": "Be brief."},
//!  "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}
//! ```

use super::settings::Settings;
use anyhow::{bail, Context};
use engine::chat::Message;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;

const FORMAT: &str = "hearth-conversation";
const VERSION: u32 = 1;
/// Far more than any conversation that fits a context; stops a wrong file early.
const MAX_BYTES: u64 = 64 << 20;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Saved {
    format: String,
    version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    model: Option<String>,
    #[serde(default)]
    settings: Settings,
    messages: Vec<SavedMessage>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedMessage {
    role: String,
    content: String,
}

/// A conversation read back.
pub struct Loaded {
    pub model: Option<String>,
    pub settings: Settings,
    pub messages: Vec<Message>,
}

/// Writes the file whole or not at all (a temporary file renamed into place).
pub fn save(
    path: &Path,
    model: &str,
    settings: &Settings,
    messages: &[Message],
) -> anyhow::Result<()> {
    let saved = Saved {
        format: FORMAT.into(),
        version: VERSION,
        model: Some(model.to_string()),
        settings: settings.clone(),
        messages: messages
            .iter()
            .map(|m| SavedMessage {
                role: m.role.clone(),
                content: m.content.clone(),
            })
            .collect(),
    };
    let mut text = serde_json::to_string_pretty(&saved)?;
    text.push('\n');
    let name = path
        .file_name()
        .with_context(|| format!("{} is not a file name", path.display()))?;
    let tmp = path.with_file_name(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write {}", path.display()));
    }
    Ok(())
}

pub fn load(path: &Path) -> anyhow::Result<Loaded> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    if size > MAX_BYTES {
        bail!(
            "{} has {size} bytes: too large for a saved conversation",
            path.display()
        );
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse(&text).with_context(|| format!("{} is not a usable saved conversation", path.display()))
}

fn parse(text: &str) -> anyhow::Result<Loaded> {
    let saved: Saved = serde_json::from_str(text).context("invalid JSON")?;
    if saved.format != FORMAT {
        bail!("its format is {:?}, not {FORMAT:?}", saved.format);
    }
    if saved.version != VERSION {
        bail!(
            "it is version {}; this hearth reads version {VERSION}",
            saved.version
        );
    }
    let settings = saved.settings;
    settings.params.validate()?;
    settings.check_sampler()?;
    if let Some(s) = &settings.system {
        store::preset::check_system(s).map_err(anyhow::Error::msg)?;
    }
    let mut messages = Vec::with_capacity(saved.messages.len());
    for (i, m) in saved.messages.into_iter().enumerate() {
        if m.role != "user" && m.role != "assistant" {
            bail!(
                "message {} has role {:?}: only \"user\" and \"assistant\" (the system prompt is in settings)",
                i + 1,
                m.role
            );
        }
        messages.push(Message::new(&m.role, &m.content));
    }
    Ok(Loaded {
        model: saved.model,
        settings,
        messages,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let dir = std::env::temp_dir().join(format!("hearth-saved-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("chat.json");
        let mut settings = Settings::default();
        settings.set("temperature", "0.3").unwrap();
        settings.set_system(Some("Be brief.")).unwrap();
        let messages = vec![
            Message::new("user", "Hi"),
            Message::new("assistant", "Hello"),
        ];
        save(&path, "smollm2", &settings, &messages).unwrap();
        let back = load(&path).unwrap();
        assert_eq!(back.messages, messages);
        assert_eq!(back.settings, settings);
        assert_eq!(back.model.as_deref(), Some("smollm2"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_files_are_clear_errors() {
        let ok = r#"{"format":"hearth-conversation","version":1,"messages":[]}"#;
        assert!(parse(ok).is_ok());
        for (text, want) in [
            ("", "invalid JSON"),
            ("{\"format\": \"hearth-conv", "invalid JSON"),
            (r#"{"format":"x","version":1,"messages":[]}"#, "format"),
            (
                r#"{"format":"hearth-conversation","version":9,"messages":[]}"#,
                "version",
            ),
            (
                r#"{"format":"hearth-conversation","version":1,"messages":[{"role":"tool","content":""}]}"#,
                "role",
            ),
            (
                r#"{"format":"hearth-conversation","version":1,"settings":{"params":{"top_p":2}},"messages":[]}"#,
                "top_p",
            ),
            (
                r#"{"format":"hearth-conversation","version":1,"settings":{"params":{"bogus":2}},"messages":[]}"#,
                "bogus",
            ),
        ] {
            let e = format!("{:#}", parse(text).err().expect(text));
            assert!(e.contains(want), "{text}: {e}");
        }
        let e = format!(
            "{:#}",
            load(Path::new("/nonexistent/chat.json")).err().unwrap()
        );
        assert!(e.contains("/nonexistent/chat.json"), "{e}");
    }
}
