//! The interactive chat on a pseudo-terminal: the real binary and SmolLM2, greedy and short.
//! Every step waits for what the program prints (no sleeps, no timing assertions) with
//! generous timeouts, so a loaded machine makes the tests slower, not flaky.

use expectrl::{ControlCode, Eof, Regex, Session};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Long enough for a model load and an answer on a busy 2-core machine.
const TIMEOUT: Duration = Duration::from_secs(240);

struct Chat {
    s: Session,
    _home: tempfile::TempDir,
}

impl Chat {
    /// `hearth run SMOLLM2 --temperature 0 --verbose` plus `extra`, waiting for the first prompt.
    fn start(extra: &[&str]) -> Chat {
        let model = testutil::smollm2();
        let model = model.to_str().expect("utf-8 path");
        let mut args = vec!["--temperature", "0"];
        args.extend_from_slice(extra);
        Chat::spawn(model, tempfile::tempdir().expect("tempdir"), &args)
    }

    /// `hearth run MODEL --verbose --threads 2 ARGS` with its store in `home`.
    fn spawn(model: &str, home: tempfile::TempDir, args: &[&str]) -> Chat {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hearth"));
        cmd.arg("run")
            .arg(model)
            .args(["--verbose", "--threads", "2"])
            .args(args)
            .env("HEARTH_HOME", home.path())
            .env("HEARTH_OFFLINE", "1")
            .env("TERM", "xterm");
        let mut s = Session::spawn(cmd).expect("spawn hearth on a pty");
        s.set_expect_timeout(Some(TIMEOUT));
        let mut chat = Chat { s, _home: home };
        chat.expect("Type /help");
        chat.prompt();
        chat
    }

    /// Everything printed up to and including `text`.
    fn expect(&mut self, text: &str) -> String {
        match self.s.expect(text) {
            Ok(c) => String::from_utf8_lossy(c.before()).into_owned(),
            Err(e) => panic!("waiting for {text:?}: {e}"),
        }
    }

    /// The captures of `re`.
    fn expect_re(&mut self, re: &str) -> Vec<String> {
        match self.s.expect(Regex(re)) {
            Ok(c) => c
                .matches()
                .map(|m| String::from_utf8_lossy(m).into_owned())
                .collect(),
            Err(e) => panic!("waiting for /{re}/: {e}"),
        }
    }

    fn prompt(&mut self) {
        self.expect(">>> ");
    }

    fn send(&mut self, line: &str) {
        self.s.send_line(line).expect("write to the pty");
    }

    /// Asks `question`, waits for the verbose report and the next prompt. Returns the
    /// report's (new, reused, total) prompt tokens and the generated tokens.
    fn ask(&mut self, question: &str) -> Report {
        self.send(question);
        let r = self.report();
        self.prompt();
        r
    }

    fn report(&mut self) -> Report {
        let c = self.expect_re(
            r"prompt: (\d+) new tokens \((\d+) reused from the cache, (\d+) in all\)[^\n]*\n[^\n]*generated: (\d+) tokens",
        );
        let n = |i: usize| c[i].parse::<usize>().expect("a number");
        let r = Report {
            new: n(1),
            reused: n(2),
            total: n(3),
            generated: n(4),
        };
        self.expect("memory: peak RSS");
        r
    }

    /// Runs a command and returns what it printed (its echo included) before the next prompt.
    fn command(&mut self, line: &str) -> String {
        self.send(line);
        self.expect(">>> ")
    }

    fn bye(mut self) {
        self.send("/bye");
        if let Err(e) = self.s.expect(Eof) {
            panic!("hearth did not exit after /bye: {e}");
        }
        let status = self.s.get_process().wait().expect("wait for hearth");
        assert!(
            matches!(status, expectrl::WaitStatus::Exited(_, 0)),
            "exit status {status:?}"
        );
    }
}

#[derive(Debug)]
struct Report {
    new: usize,
    reused: usize,
    total: usize,
    generated: usize,
}

#[test]
fn second_turn_evaluates_only_new_tokens() {
    let mut c = Chat::start(&["-n", "12"]);
    let first = c.ask("What is the capital of France?");
    assert_eq!(first.reused, 0, "{first:?}");
    assert_eq!(first.new, first.total, "{first:?}");
    assert!(first.generated > 0, "{first:?}");
    let second = c.ask("And of Italy?");
    // The whole first prompt came from the cache, and only what follows it was evaluated.
    assert!(second.reused >= first.total, "{first:?} then {second:?}");
    assert_eq!(second.new + second.reused, second.total, "{second:?}");
    // /clear empties the cache: everything is evaluated again.
    assert!(c.command("/clear").contains("(conversation cleared)"));
    let third = c.ask("And of Spain?");
    assert_eq!(third.reused, 0, "{third:?}");
    c.bye();
}

#[test]
fn set_and_show_parameters_with_range_checks() {
    let mut c = Chat::start(&["-n", "4"]);
    assert!(c
        .command("/set temperature 0.3")
        .contains("(set temperature to 0.3)"));
    let shown = c.command("/show parameters");
    assert!(shown.contains("temperature        0.3"), "{shown}");
    let refused = c.command("/set top_p 2") + &c.command("/show parameters");
    assert!(refused.contains("top_p"), "{refused}");
    assert!(refused.contains("between 0 and 1"), "{refused}");
    assert!(refused.contains("top_p              0.95"), "{refused}");
    let refused = c.command("/set num_predict -5");
    assert!(refused.contains("num_predict"), "{refused}");
    let info = c.command("/show info");
    assert!(info.contains("llama"), "{info}");
    assert!(info.contains("Q4_1"), "{info}");
    let help = c.command("/help");
    assert!(help.contains("/save FILE"), "{help}");
    // A multi-line message between """ lines is one message.
    // Each line waits for the continuation prompt, as a person would.
    c.send("\"\"\"");
    c.expect("... ");
    c.send("Say hello");
    c.expect("... ");
    c.send("in French.");
    c.expect("... ");
    c.send("\"\"\"");
    let r = c.report();
    c.prompt();
    assert!(r.generated > 0, "{r:?}");
    let history = c.command("/show history");
    assert!(
        history.contains("[user] Say hello\r\nin French."),
        "{history:?}"
    );
    c.bye();
}

#[test]
fn ctrl_c_stops_the_answer_not_the_chat() {
    // End-of-turn tokens banned: the answer runs until stopped.
    let mut c = Chat::start(&[
        "-n",
        "400",
        "--logit-bias",
        "0=-inf",
        "--logit-bias",
        "2=-inf",
    ]);
    c.send("Count from 1 to 500, separated by commas.");
    c.expect("commas.");
    // The answer has started once a digit follows the echoed question.
    c.expect_re(r"\n[^\n]*\d");
    c.s.send(ControlCode::EndOfText).expect("send Ctrl-C");
    let stopped = c.expect("(answer stopped)");
    // The terminal's echo of the key stays out of the answer.
    assert!(!stopped.contains("^C"), "{stopped:?}");
    let r = c.report();
    assert!(r.generated < 400, "{r:?}");
    c.prompt();
    c.command("/set num_predict 6");
    let next = c.ask("What is 2 + 2?");
    assert!(next.generated > 0, "{next:?}");
    // The stopped answer stayed in the cache as far as it went.
    assert!(next.reused > r.total, "{r:?} then {next:?}");
    // Ctrl-C twice at the prompt leaves.
    c.s.send(ControlCode::EndOfText).expect("send Ctrl-C");
    c.expect("Ctrl-C again");
    c.s.send(ControlCode::EndOfText).expect("send Ctrl-C");
    c.s.expect(Eof).expect("hearth exits after a second Ctrl-C");
}

/// A prompt of several batches shows a spinner with its progress on the terminal, cleared
/// before the answer, which wraps at word boundaries to the terminal's width.
#[test]
fn a_long_message_shows_progress_and_the_answer_wraps_at_words() {
    let mut c = Chat::start(&["-n", "48"]);
    c.s.get_process_mut()
        .set_window_size(40, 24)
        .expect("resize the pty");
    let long = format!(
        "{}Now write two sentences about the sea.",
        "The sea is wide and deep. ".repeat(80)
    );
    c.send(&long);
    c.expect("evaluating the prompt");
    // The verbose report's first line (the spinner's text also says "prompt: ").
    let before_report = c.expect(" new tokens (");
    c.expect("memory: peak RSS");
    c.prompt();
    // The answer follows the spinner's last clearing of its line.
    let answer = before_report
        .rsplit("\x1b[2K")
        .next()
        .expect("text after the spinner");
    // Less the spinner's cursor moves (a message wider than the terminal takes two lines).
    let answer = strip_escapes(answer);
    let lines: Vec<&str> = answer.split("\r\n").collect();
    assert!(
        answer.trim().len() > 40,
        "a short answer proves nothing: {answer:?}"
    );
    for line in &lines {
        assert!(line.chars().count() <= 40, "{line:?} in {answer:?}");
    }
    c.bye();
}

/// `text` without its CSI escape sequences (`ESC [` … a letter).
fn strip_escapes(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' && chars.peek() == Some(&'[') {
            for e in chars.by_ref() {
                if e.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn save_then_load_in_a_new_process() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("chat.json");
    let file = file.to_str().expect("utf-8 path");
    let mut c = Chat::start(&[
        "-n",
        "6",
        "--logit-bias",
        "42=-inf",
        "--logit-bias",
        "7=2.5",
    ]);
    c.command("/set system You answer in French.");
    let first = c.ask("What is the capital of France?");
    c.command("/set temperature 0.3");
    let out = c.command(&format!("/save {file}"));
    assert!(out.contains("(saved 2 messages"), "{out}");
    c.bye();
    let saved = std::fs::read_to_string(file).expect("saved file");
    assert!(saved.contains("What is the capital of France?"), "{saved}");
    let json: serde_json::Value = serde_json::from_str(&saved).expect("JSON");
    assert_eq!(
        json["settings"]["logit_bias"],
        serde_json::json!([[42, "-inf"], [7, 2.5]]),
        "{saved}"
    );

    let mut c = Chat::start(&["-n", "6"]);
    // Bad files are refused clearly and the chat goes on.
    let missing = c.command("/load /nonexistent/chat.json");
    assert!(missing.contains("/nonexistent/chat.json"), "{missing}");
    let corrupt = dir.path().join("corrupt.json");
    std::fs::write(&corrupt, "{\"format\": \"hearth-conv").expect("write");
    let corrupt = c.command(&format!("/load {}", corrupt.display()));
    assert!(
        corrupt.contains("not a usable saved conversation"),
        "{corrupt}"
    );
    let out = c.command(&format!("/load {file}"));
    assert!(out.contains("(loaded 2 messages"), "{out}");
    let history = c.command("/show history");
    assert!(
        history.contains("[user] What is the capital of France?"),
        "{history}"
    );
    let params = c.command("/show parameters");
    assert!(params.contains("temperature        0.3"), "{params}");
    assert!(params.contains("You answer in French."), "{params}");
    // The next turn is asked with the loaded conversation before it.
    let next = c.ask("And of Italy?");
    assert!(next.total > first.total, "{first:?} then {next:?}");
    c.bye();
}

#[test]
fn the_context_size_can_change_mid_chat() {
    let mut c = Chat::start(&["-n", "4", "--ctx", "1024"]);
    let first = c.ask("What is the capital of France?");
    let out = c.command("/set num_ctx 512");
    assert!(out.contains("(context set to 512 tokens"), "{out}");
    let info = c.command("/show info");
    assert!(info.contains("512 tokens in use (0 filled"), "{info}");
    // The conversation is evaluated again in the new cache: nothing is reused.
    let next = c.ask("And of Italy?");
    assert_eq!(next.reused, 0, "{next:?}");
    assert!(next.total > first.total, "{first:?} then {next:?}");
    let refused = c.command("/set num_ctx 0");
    assert!(refused.contains("num_ctx"), "{refused}");
    assert!(c.command("/show info").contains("512 tokens in use"));
    c.bye();
}

#[test]
fn a_full_context_drops_the_oldest_turns_and_says_so() {
    let mut c = Chat::start(&["-n", "24", "--ctx", "128"]);
    let mut said = false;
    for q in [
        "Name a color.",
        "Name a fruit.",
        "Name an animal.",
        "Name a city.",
        "Name a tree.",
    ] {
        c.send(q);
        let before = c.expect("prompt: ");
        said |= before.contains("context full");
        c.expect("memory: peak RSS");
        c.prompt();
    }
    assert!(
        said,
        "no context-full notice in five turns of a 128-token context"
    );
    // Ctrl-D leaves.
    c.s.send(ControlCode::EndOfTransmission)
        .expect("send Ctrl-D");
    c.s.expect(Eof).expect("hearth exits on Ctrl-D");
}

/// A preset's system prompt and options apply; flags given on the command line win.
#[test]
fn presets_apply_and_flags_override_them() {
    let home = tempfile::tempdir().expect("tempdir");
    let synthetic =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/synthetic/llama_f32.gguf");
    let out = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(["create", "tiny-preset", "--from"])
        .arg(&synthetic)
        .args(["--system", "You are tiny.", "--param", "temperature=0.2"])
        .args(["--param", "num_predict=3", "--param", "top_k=7"])
        .env("HEARTH_HOME", home.path())
        .env("HEARTH_OFFLINE", "1")
        .output()
        .expect("hearth create runs");
    assert!(
        out.status.success(),
        "create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The synthetic file has no chat template (a base model to hearth): chat through ChatML.
    let mut c = Chat::spawn(
        "tiny-preset",
        home,
        &["--top-k", "9", "--chat-template", "chatml"],
    );
    let params = c.command("/show parameters");
    assert!(params.contains("temperature        0.2"), "{params}");
    assert!(params.contains("num_predict        3"), "{params}");
    assert!(params.contains("top_k              9"), "{params}");
    assert!(params.contains("You are tiny."), "{params}");
    let r = c.ask("hello");
    assert!(r.generated <= 3, "{r:?}");
    c.bye();
}

/// A base model (a file without a chat template) gets no chat: hearth says why and what to
/// do instead, and exits, rather than open a chat that would answer nonsense.
#[test]
fn a_base_model_is_refused_before_the_chat_opens() {
    let home = tempfile::tempdir().expect("tempdir");
    let synthetic =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/synthetic/llama_f32.gguf");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hearth"));
    cmd.arg("run")
        .arg(&synthetic)
        .env("HEARTH_HOME", home.path())
        .env("HEARTH_OFFLINE", "1")
        .env("TERM", "xterm");
    let mut s = Session::spawn(cmd).expect("spawn hearth on a pty");
    s.set_expect_timeout(Some(TIMEOUT));
    let found = s.expect(Eof).expect("hearth exits");
    // Eof's match is everything printed.
    let mut text = String::from_utf8_lossy(found.before()).into_owned();
    for m in found.matches() {
        text.push_str(&String::from_utf8_lossy(m));
    }
    assert!(text.contains("is a base model"), "{text}");
    assert!(text.contains("--raw"), "{text}");
    assert!(!text.contains(">>> "), "{text}");
}
