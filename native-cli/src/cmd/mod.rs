//! One module per subcommand; `main` holds their clap definitions and
//! dispatches to each one's `run` (`serve::serve` for the server).

pub mod bench;
pub mod chat;
pub mod embed;
pub mod info;
pub mod perplexity;
pub mod run;
pub mod serve;
