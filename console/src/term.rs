//! The terminal guard: raw mode and the alternate screen while the
//! console runs, restored when the guard drops (normal exit and errors)
//! and from the panic hook (panics), so the operator's shell is never left
//! broken.

use std::io::{self, IsTerminal, Write};

use crossterm::{cursor, execute, terminal};
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;

pub type Term = Terminal<CrosstermBackend<io::Stdout>>;

/// Why the console cannot draw here, if so.
pub fn check_terminal() -> Result<(), String> {
    let what = if !io::stdin().is_terminal() {
        "standard input is not a terminal"
    } else if !io::stdout().is_terminal() {
        "standard output is not a terminal"
    } else {
        return Ok(());
    };
    Err(format!(
        "backpack-console needs a terminal: {what}. Run it in a terminal (ssh -t for remote hosts); for scripts use backpack-coordinator-print-stats or dump-shards"
    ))
}

/// Restores the terminal; safe to call more than once.
pub fn restore() {
    let _ = terminal::disable_raw_mode();
    let _ = execute!(io::stdout(), terminal::LeaveAlternateScreen, cursor::Show);
    let _ = io::stdout().flush();
}

pub struct Guard {
    pub terminal: Term,
}

impl Guard {
    pub fn enter() -> io::Result<Guard> {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            tracing::error!("panic: {info}");
            previous(info);
        }));
        terminal::enable_raw_mode()?;
        let entered = execute!(io::stdout(), terminal::EnterAlternateScreen, cursor::Hide)
            .and_then(|_| Terminal::new(CrosstermBackend::new(io::stdout())));
        match entered {
            Ok(terminal) => Ok(Guard { terminal }),
            Err(e) => {
                restore();
                Err(e)
            }
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        restore();
    }
}
