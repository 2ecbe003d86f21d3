//! Where `hearth chat` reads its lines: a line editor with history when a
//! person types at a terminal, else standard input line by line, so a
//! session can be scripted (`hearth chat < questions.txt`).

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;

use anyhow::Result;
use rustyline::error::ReadlineError;
use rustyline::history::DefaultHistory;
use rustyline::{Config, Editor};

pub enum Read {
    Line(String),
    /// Ctrl-C at the prompt (the editor drops the line).
    Interrupted,
    Eof,
}

pub enum Input {
    Editor {
        editor: Box<Editor<(), DefaultHistory>>,
        /// `None` when there is no data directory to keep it in.
        history: Option<PathBuf>,
    },
    Piped(std::io::StdinLock<'static>),
}

/// `hearth/chat_history.txt` under the user's data directory.
fn history_path() -> Option<PathBuf> {
    Some(dirs::data_dir()?.join("hearth").join("chat_history.txt"))
}

impl Input {
    pub fn open() -> Result<Input> {
        if !(std::io::stdin().is_terminal() && std::io::stdout().is_terminal()) {
            return Ok(Input::Piped(std::io::stdin().lock()));
        }
        let config = Config::builder()
            .max_history_size(1000)?
            .auto_add_history(false)
            .build();
        let mut editor = Box::new(Editor::with_config(config)?);
        let history = history_path();
        if let Some(p) = &history {
            // A first session has no file yet.
            let _ = editor.load_history(p);
        }
        Ok(Input::Editor { editor, history })
    }

    pub fn is_terminal(&self) -> bool {
        matches!(self, Input::Editor { .. })
    }

    /// One line, shown with `prompt` at a terminal.
    pub fn read(&mut self, prompt: &str) -> Result<Read> {
        match self {
            Input::Editor { editor, .. } => match editor.readline(prompt) {
                Ok(l) => Ok(Read::Line(l)),
                Err(ReadlineError::Interrupted) => Ok(Read::Interrupted),
                Err(ReadlineError::Eof) => Ok(Read::Eof),
                Err(e) => Err(e.into()),
            },
            Input::Piped(stdin) => {
                let mut l = String::new();
                if stdin.read_line(&mut l)? == 0 {
                    return Ok(Read::Eof);
                }
                let end = l.trim_end_matches(['\n', '\r']).len();
                l.truncate(end);
                Ok(Read::Line(l))
            }
        }
    }

    /// Remembers `entry` for the arrow keys and the next session; a history
    /// file that cannot be written costs a warning, not the session.
    pub fn remember(&mut self, entry: &str) {
        let Input::Editor { editor, history } = self else {
            return;
        };
        if editor.add_history_entry(entry).is_err() {
            return;
        }
        let Some(p) = history else { return };
        let saved = p
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .map_err(ReadlineError::from)
            .and_then(|()| editor.save_history(p));
        if let Err(e) = saved {
            eprintln!("hearth: cannot save the history to {}: {e}", p.display());
            *history = None;
        }
    }
}
