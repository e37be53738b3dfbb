//! The error type. Every failure carries a message written for the programmer who will read it
//! (through `dlb_last_error()` in C, `Display` in Rust), and a kind that the C boundary maps onto
//! a `dlb_status`.

use std::borrow::Cow;
use std::fmt::{self, Write};

/// What went wrong, by class. The C API reports each kind as one `dlb_status` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// NULL where not allowed, negative extent, view out of bounds, overflow, bad dtype.
    InvalidArgument,
    /// A dtype, device or layout this operation cannot handle.
    Unsupported,
    /// An allocation failed.
    OutOfMemory,
    /// A device runtime is missing or failing.
    Device,
    /// Write access asked of read-only data.
    ReadOnly,
    /// A DLPack major version we do not understand.
    Version,
}

/// A failed operation: a kind and a message that says what was wrong with which value.
///
/// ```
/// use dlbridge::{DType, Device, ErrorKind, Tensor};
///
/// let t = Tensor::zeros(&[2, 3], DType::F32, Device::CPU).unwrap();
/// let err = t.view(&[4], None, 3).unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::InvalidArgument);
/// assert!(err.message().contains("outside the 6 elements"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    pub(crate) kind: ErrorKind,
    pub(crate) message: Cow<'static, str>,
}

/// What an error message can be made of: fixed text (no allocation) or `format_args!(...)`,
/// formatted without aborting when memory runs out (see [`message`]).
pub(crate) trait IntoMessage {
    fn into_message(self) -> Cow<'static, str>;
}

impl IntoMessage for &'static str {
    fn into_message(self) -> Cow<'static, str> {
        Cow::Borrowed(self)
    }
}

impl IntoMessage for std::fmt::Arguments<'_> {
    fn into_message(self) -> Cow<'static, str> {
        message(self)
    }
}

impl IntoMessage for Cow<'static, str> {
    fn into_message(self) -> Cow<'static, str> {
        self
    }
}

impl Error {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message, e.g. "view element 7 lies outside the 6 elements of its storage".
    pub fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn new(kind: ErrorKind, message: impl IntoMessage) -> Self {
        Error { kind, message: message.into_message() }
    }
    pub(crate) fn invalid(message: impl IntoMessage) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }
    pub(crate) fn unsupported(message: impl IntoMessage) -> Self {
        Self::new(ErrorKind::Unsupported, message)
    }
    pub(crate) fn out_of_memory(message: impl IntoMessage) -> Self {
        Self::new(ErrorKind::OutOfMemory, message)
    }
    pub(crate) fn device(message: impl IntoMessage) -> Self {
        Self::new(ErrorKind::Device, message)
    }
    pub(crate) fn read_only(message: impl IntoMessage) -> Self {
        Self::new(ErrorKind::ReadOnly, message)
    }
    pub(crate) fn version(message: impl IntoMessage) -> Self {
        Self::new(ErrorKind::Version, message)
    }
}

/// `std::result::Result` with dlbridge's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a message says when formatting it ran out of memory.
pub(crate) const MESSAGE_LOST: &str = "(the error message could not be written: out of memory)";

/// A `String` writer that reserves before every write instead of aborting.
struct TryString(String);

impl Write for TryString {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.try_reserve(s.len()).map_err(|_| fmt::Error)?;
        self.0.push_str(s);
        Ok(())
    }
}

/// Formats an error message without aborting: a message without arguments is used as it is (no
/// allocation), and one whose formatting runs out of memory becomes [`MESSAGE_LOST`].
pub(crate) fn message(args: fmt::Arguments<'_>) -> Cow<'static, str> {
    if let Some(text) = args.as_str() {
        return Cow::Borrowed(text);
    }
    let mut out = TryString(String::new());
    match out.write_fmt(args) {
        Ok(()) => Cow::Owned(out.0),
        Err(_) => Cow::Borrowed(MESSAGE_LOST),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_borrow_plain_text_and_format_the_rest() {
        assert!(matches!(message(format_args!("plain")), Cow::Borrowed("plain")));
        let n = 3;
        assert_eq!(message(format_args!("n = {n}")), "n = 3");
    }
}
