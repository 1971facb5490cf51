//! Ctrl-C during an answer: SIGINT sets a flag that generation checks, so the answer stops and
//! the chat goes on. A second Ctrl-C before the first was handled ends the program, so a stuck
//! process can always be stopped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub struct Interrupt {
    flag: Arc<AtomicBool>,
}

impl Interrupt {
    /// Replaces SIGINT's default action (ending the program) for the rest of the process.
    pub fn install() -> anyhow::Result<Interrupt> {
        use signal_hook::consts::SIGINT;
        let flag = Arc::new(AtomicBool::new(false));
        // Registered first so that it sees the flag before this signal sets it.
        signal_hook::flag::register_conditional_shutdown(SIGINT, 130, Arc::clone(&flag))?;
        signal_hook::flag::register(SIGINT, Arc::clone(&flag))?;
        Ok(Interrupt { flag })
    }

    /// The flag to hand to generation.
    pub fn flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.flag)
    }

    /// Forgets an earlier Ctrl-C (call before each answer and each prompt).
    pub fn reset(&self) {
        self.flag.store(false, Ordering::SeqCst);
    }
}
