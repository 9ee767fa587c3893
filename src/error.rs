//! The crate's error type: a message plus the chain of contexts that led to it.

use std::fmt;
use std::path::Path;

/// An error with a human-readable message naming what went wrong and where
/// (file, tensor, op). Contexts are prepended, outermost first.
#[derive(Debug)]
pub struct Error {
    message: String,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn msg(message: impl Into<String>) -> Self {
        Error {
            message: message.into(),
        }
    }

    /// An error about a file: "`path`: message".
    pub fn file(path: &Path, message: impl fmt::Display) -> Self {
        Error::msg(format!("{}: {message}", path.display()))
    }

    /// Prefix the message with an outer context ("context: inner message").
    pub fn context(self, context: impl fmt::Display) -> Self {
        Error {
            message: format!("{context}: {}", self.message),
        }
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::msg(format!("I/O error: {e}"))
    }
}

/// Adds context to any `Result` whose error converts into [`Error`].
pub trait Context<T> {
    fn context(self, context: impl fmt::Display) -> Result<T>;
    fn with_context<C: fmt::Display>(self, f: impl FnOnce() -> C) -> Result<T>;
}

impl<T, E: Into<Error>> Context<T> for std::result::Result<T, E> {
    fn context(self, context: impl fmt::Display) -> Result<T> {
        self.map_err(|e| e.into().context(context))
    }
    fn with_context<C: fmt::Display>(self, f: impl FnOnce() -> C) -> Result<T> {
        self.map_err(|e| e.into().context(f()))
    }
}

/// Return early with a formatted [`Error`].
#[macro_export]
macro_rules! bail {
    ($($arg:tt)*) => { return Err($crate::error::Error::msg(format!($($arg)*))) };
}

/// Return early with a formatted [`Error`] unless the condition holds.
#[macro_export]
macro_rules! ensure {
    // Bound first: `!(x > 0.0)` (NaN fails the check) would trip clippy's
    // neg_cmp_op_on_partial_ord at every call site.
    ($cond:expr, $($arg:tt)*) => {
        let holds: bool = $cond;
        if !holds {
            $crate::bail!($($arg)*);
        }
    };
}
