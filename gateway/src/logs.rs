//! The CLI's diagnostics on stderr: text for people at a terminal, JSON lines for log
//! collectors (journald, files, pipes). Never ANSI escapes unless stderr is a terminal.

use std::io::IsTerminal;

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line: `timestamp`, `level`, `target`, `message` and the event's fields.
    Json,
    /// Human-readable lines; coloured only on a terminal.
    Text,
}

/// The format when none is asked for: text on a terminal, JSON lines otherwise.
pub fn default_format(terminal: bool) -> LogFormat {
    if terminal {
        LogFormat::Text
    } else {
        LogFormat::Json
    }
}

/// A subscriber writing to `writer`: `format` (or the default for `terminal`), filtered by
/// `FEDGATE_LOG` if set, else `default_level`; colours only when `terminal`.
pub fn subscriber<W>(
    format: Option<LogFormat>,
    terminal: bool,
    default_level: &str,
    writer: W,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_env("FEDGATE_LOG").unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer).with_ansi(terminal);
    match format.unwrap_or(default_format(terminal)) {
        LogFormat::Json => Box::new(builder.json().flatten_event(true).finish()),
        LogFormat::Text => Box::new(builder.finish()),
    }
}

/// Installs the process's subscriber on stderr.
pub fn init(format: Option<LogFormat>, default_level: &str) {
    let terminal = std::io::stderr().is_terminal();
    // A second init (only possible in tests) keeps the first subscriber.
    let _ =
        tracing::subscriber::set_global_default(subscriber(format, terminal, default_level, std::io::stderr));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn emit(format: Option<LogFormat>, terminal: bool) -> String {
        let buf = Buf::default();
        let out = buf.clone();
        let sub = subscriber(format, terminal, "info", move || out.clone());
        tracing::subscriber::with_default(sub, || {
            tracing::warn!(peer = "police@wuxi.liangxi", count = 3, "query \"refused\"\nsecond line");
        });
        let bytes = buf.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn json_lines_when_not_on_a_terminal() {
        let text = emit(None, false);
        assert_eq!(text.lines().count(), 1, "{text}");
        let v: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["message"], "query \"refused\"\nsecond line");
        assert_eq!(v["peer"], "police@wuxi.liangxi");
        assert_eq!(v["count"], 3);
        assert!(v["timestamp"].is_string());
        assert!(!text.contains('\x1b'));
    }

    #[test]
    fn text_on_request_has_no_ansi_escapes_off_a_terminal() {
        let text = emit(Some(LogFormat::Text), false);
        assert!(text.contains("WARN") && text.contains("peer=\"police@wuxi.liangxi\""), "{text}");
        assert!(!text.contains('\x1b'), "{text:?}");
        assert!(serde_json::from_str::<serde_json::Value>(text.lines().next().unwrap()).is_err());
    }

    #[test]
    fn text_is_the_default_on_a_terminal_and_json_can_be_forced_there() {
        assert_eq!(default_format(true), LogFormat::Text);
        assert!(emit(Some(LogFormat::Json), true).starts_with('{'));
    }
}
