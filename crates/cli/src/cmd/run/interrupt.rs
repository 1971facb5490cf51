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

/// While it lives, the terminal does not echo control keys: a Ctrl-C that stops an answer
/// would otherwise print `^C` into the middle of the answer's text. Restored when dropped
/// (a second Ctrl-C that ends the program leaves only this setting off, which shells do not
/// mind).
pub struct QuietControlKeys {
    #[cfg(unix)]
    saved: Option<nix::sys::termios::Termios>,
}

impl QuietControlKeys {
    /// Does nothing when stdin is not a terminal.
    pub fn start() -> QuietControlKeys {
        #[cfg(unix)]
        {
            use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
            let stdin = std::io::stdin();
            let saved = tcgetattr(&stdin).ok().filter(|t| {
                let mut quiet = t.clone();
                quiet.local_flags.remove(LocalFlags::ECHOCTL);
                tcsetattr(&stdin, SetArg::TCSANOW, &quiet).is_ok()
            });
            QuietControlKeys { saved }
        }
        #[cfg(not(unix))]
        QuietControlKeys {}
    }
}

impl Drop for QuietControlKeys {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Some(t) = &self.saved {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                t,
            );
        }
    }
}
