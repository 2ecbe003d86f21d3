//! A line of `hearth chat`: a message for the model, or a `/command`.

/// What one line asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    Message(String),
    Help,
    Exit,
    /// Forget the conversation (the system message stays).
    Reset,
    /// `/system TEXT`; `None` goes back to the template's own.
    System(Option<String>),
    Set {
        key: String,
        value: String,
    },
    Show,
    /// Nothing to do (a blank line).
    Empty,
}

pub const HELP: &str = "\
Type a message and press Enter; end a line with \\ to continue it on the next.
Ctrl-C stops the answer being written; Ctrl-D (or /exit) quits.
  /help              this list
  /exit, /quit, /bye leave
  /reset, /clear     start a new conversation (keeps the system message)
  /system TEXT       set the system message; /system alone restores the template's own
  /set KEY VALUE     change a setting for the next answers: temperature, top_k, top_p,
                     min_p, repetition_penalty, presence_penalty, frequency_penalty,
                     seed (a number or none), max_tokens (a number or none)
  /show              the settings, the system message and the conversation's length
  //TEXT             send a message that starts with /";

/// Parses one line; the error says what is wrong with a command.
pub fn parse(line: &str) -> Result<Line, String> {
    let trimmed = line.trim();
    if trimmed.is_empty() {
        return Ok(Line::Empty);
    }
    if let Some(rest) = trimmed.strip_prefix("//") {
        return Ok(Line::Message(format!("/{rest}")));
    }
    let Some(cmd) = trimmed.strip_prefix('/') else {
        return Ok(Line::Message(trimmed.to_string()));
    };
    let (name, arg) = match cmd.split_once(char::is_whitespace) {
        Some((n, a)) => (n, a.trim()),
        None => (cmd, ""),
    };
    let no_arg = |l: Line| {
        if arg.is_empty() {
            Ok(l)
        } else {
            Err(format!("/{name} takes no argument"))
        }
    };
    match name {
        "help" | "?" => no_arg(Line::Help),
        "exit" | "quit" | "bye" => no_arg(Line::Exit),
        "reset" | "clear" => no_arg(Line::Reset),
        "show" => no_arg(Line::Show),
        "system" => Ok(Line::System((!arg.is_empty()).then(|| arg.to_string()))),
        "set" => {
            let mut parts = arg.split_whitespace();
            match (parts.next(), parts.next(), parts.next()) {
                (Some(key), Some(value), None) => Ok(Line::Set {
                    key: key.to_string(),
                    value: value.to_string(),
                }),
                _ => Err(
                    "usage: /set KEY VALUE (e.g. /set temperature 0.7; /show lists them)".into(),
                ),
            }
        }
        _ => Err(format!(
            "unknown command /{name} (/help lists the commands)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_commands() {
        assert_eq!(parse("  hi there "), Ok(Line::Message("hi there".into())));
        assert_eq!(
            parse("//etc/hosts?"),
            Ok(Line::Message("/etc/hosts?".into()))
        );
        assert_eq!(parse(""), Ok(Line::Empty));
        assert_eq!(parse("/bye"), Ok(Line::Exit));
        assert_eq!(parse("/clear"), Ok(Line::Reset));
        assert_eq!(
            parse("/system  You are terse. "),
            Ok(Line::System(Some("You are terse.".into())))
        );
        assert_eq!(parse("/system"), Ok(Line::System(None)));
        assert_eq!(
            parse("/set top_p 0.9"),
            Ok(Line::Set {
                key: "top_p".into(),
                value: "0.9".into()
            })
        );
    }

    #[test]
    fn bad_commands_say_what_is_wrong() {
        let err = |l| parse(l).unwrap_err();
        assert!(err("/frobnicate").contains("unknown command /frobnicate"));
        assert!(err("/set temperature").contains("usage: /set KEY VALUE"));
        assert!(err("/set a b c").contains("usage"));
        assert!(err("/reset now").contains("/reset takes no argument"));
    }
}
