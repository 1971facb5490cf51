//! A spinner on stderr while a long prompt is evaluated (3,400 tokens can take 12 s before
//! the first token), with tokens/s so far. Only on a terminal: piped stderr stays clean.

use engine::generate::PromptProgress;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The spinner while it shows; cleared when dropped.
pub struct Spinner(ProgressBar);

impl Drop for Spinner {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

/// A spinner and the callback that moves it, for a prompt of `total` new tokens evaluated
/// `batch` at a time; None when it would flash by (one batch) or stderr is not a terminal.
pub fn start(total: usize, batch: usize) -> Option<(Spinner, PromptProgress)> {
    if total <= batch || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg}") {
        bar.set_style(style);
    }
    bar.set_message(format!("evaluating the prompt: 0/{total} tokens"));
    bar.enable_steady_tick(Duration::from_millis(100));
    let started = Instant::now();
    let shown = bar.clone();
    let callback = move |done: usize, total: usize| {
        let secs = started.elapsed().as_secs_f64();
        let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
        shown.set_message(format!(
            "evaluating the prompt: {done}/{total} tokens, {rate:.0} tokens/s"
        ));
    };
    Some((Spinner(bar), PromptProgress(Arc::new(callback))))
}
