//! Chat templates from model files rendered in a child process whose address space is capped,
//! so that a hostile template that doubles a string until memory runs out kills only the
//! child (a clear error), never the chat or the server. The child is this same binary run as
//! `hearth __render-template`, speaking JSON on stdin and stdout. Templates built into hearth
//! are rendered in-process (see `engine::chat::Sandbox`).

use engine::chat::{ChatError, ChatTemplate, Message, Sandbox};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The child's address space: a template that needs more is refused.
const MEMORY_LIMIT: u64 = 1 << 30;
/// A render that takes longer is killed (minijinja's fuel bounds work long before this).
const TIME_LIMIT: Duration = Duration::from_secs(20);
/// The hidden subcommand.
pub const SUBCOMMAND: &str = "__render-template";

#[derive(Serialize, Deserialize)]
struct Request {
    source: String,
    bos: String,
    eos: String,
    messages: Vec<Message>,
    #[serde(default)]
    tools: Option<Vec<serde_json::Value>>,
    add_generation_prompt: bool,
}

#[derive(Serialize, Deserialize)]
enum Reply {
    Ok(String),
    Syntax(String),
    Render(String),
    TooLong,
    Unsafe(String),
}

/// Renders in a child process of this binary.
pub struct ProcessSandbox {
    exe: PathBuf,
}

impl ProcessSandbox {
    /// The sandbox, or None when this binary cannot be found again (templates then render
    /// in-process, bounded in work and output as always).
    pub fn new() -> Option<ProcessSandbox> {
        std::env::current_exe()
            .ok()
            .map(|exe| ProcessSandbox { exe })
    }
}

impl Sandbox for ProcessSandbox {
    fn render(
        &self,
        t: &ChatTemplate,
        messages: &[Message],
        tools: Option<&[serde_json::Value]>,
        add_generation_prompt: bool,
    ) -> Result<String, ChatError> {
        let fail = |why: String| ChatError::Sandbox(why);
        let request = Request {
            source: t.source().to_string(),
            bos: t.bos().to_string(),
            eos: t.eos().to_string(),
            messages: messages.to_vec(),
            tools: tools.map(<[serde_json::Value]>::to_vec),
            add_generation_prompt,
        };
        let input = serde_json::to_vec(&request).map_err(|e| fail(e.to_string()))?;
        let mut child = Command::new(&self.exe)
            .arg(SUBCOMMAND)
            // The sandbox renders untrusted templates: it gets no secret of the server's.
            .env_remove("HEARTH_API_KEY")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| fail(format!("cannot start {}: {e}", self.exe.display())))?;
        // Written from a thread: a child that fails early must not leave us blocked on a pipe.
        let mut stdin = child.stdin.take().ok_or_else(|| fail("no stdin".into()))?;
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let mut stdout = child
            .stdout
            .take()
            .ok_or_else(|| fail("no stdout".into()))?;
        let mut stderr = child
            .stderr
            .take()
            .ok_or_else(|| fail("no stderr".into()))?;
        let reader = std::thread::spawn(move || {
            let mut out = Vec::new();
            let _ = stdout.read_to_end(&mut out);
            out
        });
        let err_reader = std::thread::spawn(move || {
            let mut err = String::new();
            let _ = stderr.read_to_string(&mut err);
            err
        });
        let started = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if started.elapsed() > TIME_LIMIT => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(fail(format!(
                        "it took longer than {} s",
                        TIME_LIMIT.as_secs()
                    )));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(1)),
                Err(e) => return Err(fail(e.to_string())),
            }
        };
        let _ = writer.join();
        let out = reader.join().unwrap_or_default();
        let err = err_reader.join().unwrap_or_default();
        if !status.success() {
            if err.contains("memory allocation") {
                return Err(fail(format!(
                    "it needed more than {} MiB of memory (a hostile or broken template)",
                    MEMORY_LIMIT >> 20
                )));
            }
            return Err(fail(format!(
                "the helper process failed ({status}): {}",
                err.lines().next().unwrap_or("").trim()
            )));
        }
        match serde_json::from_slice::<Reply>(&out) {
            Ok(Reply::Ok(text)) => Ok(text),
            Ok(Reply::Syntax(m)) => Err(ChatError::Syntax(m)),
            Ok(Reply::Render(m)) => Err(ChatError::Render(m)),
            Ok(Reply::TooLong) => Err(ChatError::TooLong),
            Ok(Reply::Unsafe(m)) => Err(ChatError::Unsafe(m)),
            Err(e) => Err(fail(format!("the helper's answer is not readable: {e}"))),
        }
    }
}

/// `hearth __render-template`: caps this process's memory, renders the request on stdin and
/// writes the reply on stdout.
pub fn serve_one() -> anyhow::Result<()> {
    // Where the platform will not cap the address space (macOS refuses RLIMIT_AS), the render
    // is still bounded in work and output, as in-process.
    #[cfg(unix)]
    let _ = rlimit::setrlimit(rlimit::Resource::AS, MEMORY_LIMIT, MEMORY_LIMIT);
    let mut input = Vec::new();
    std::io::stdin().read_to_end(&mut input)?;
    let r: Request = serde_json::from_slice(&input)?;
    let template = ChatTemplate::from_parts(&r.source, &r.bos, &r.eos);
    let reply = match template.render_here(&r.messages, r.tools.as_deref(), r.add_generation_prompt)
    {
        Ok(text) => Reply::Ok(text),
        Err(ChatError::Syntax(m)) => Reply::Syntax(m),
        Err(ChatError::Render(m) | ChatError::Sandbox(m)) => Reply::Render(m),
        Err(ChatError::TooLong) => Reply::TooLong,
        Err(ChatError::Unsafe(m)) => Reply::Unsafe(m),
        // Not an outcome of rendering a template that exists; passed on as text regardless.
        Err(e @ ChatError::BaseModel) => Reply::Render(e.to_string()),
    };
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, &reply)?;
    out.flush()?;
    Ok(())
}
