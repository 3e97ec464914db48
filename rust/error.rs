//! The one error type of the core. The binding layer maps each variant to a Python exception
//! (see `bindings/error.rs`); nothing here depends on Python.

use std::fmt;

#[derive(Debug)]
pub enum JtmError {
    /// A caller-supplied argument is out of range or inconsistent (arity < 2, d < 1, ...).
    InvalidArgument(String),
    /// An item id that the tree does not hold.
    UnknownItem(i64),
    /// A node id outside the tree, or not at the level it must be at.
    InvalidNode(String),
    /// A user callback (`weights_fn`, `score_fn`) returned something unusable.
    Callback(String),
    /// A tree file or byte string that is truncated, corrupted or of an unknown version.
    CorruptTree(String),
    Io(std::io::Error),
    /// A buffer the request needs could not be allocated (Python `MemoryError`, never an abort).
    OutOfMemory(String),
    /// A broken invariant or a caught panic: a bug in jtm_rs, never the caller's fault.
    Internal(String),
}

pub type Result<T> = std::result::Result<T, JtmError>;

impl fmt::Display for JtmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JtmError::InvalidArgument(m) => write!(f, "{m}"),
            JtmError::UnknownItem(id) => {
                write!(f, "unknown item id {id}: the tree holds no such item")
            }
            JtmError::InvalidNode(m) => write!(f, "{m}"),
            JtmError::Callback(m) => write!(f, "{m}"),
            JtmError::CorruptTree(m) => write!(f, "corrupt tree data: {m}"),
            JtmError::Io(e) => write!(f, "{e}"),
            JtmError::OutOfMemory(m) => write!(f, "{m}"),
            JtmError::Internal(m) => write!(f, "internal error in jtm_rs (please report): {m}"),
        }
    }
}

impl std::error::Error for JtmError {}

impl From<std::io::Error> for JtmError {
    fn from(e: std::io::Error) -> Self {
        JtmError::Io(e)
    }
}

/// Room for `additional` more elements in `v`, or `OutOfMemory` naming `what` and the bytes it
/// needed: large buffers sized by the caller go through here so that a request too big for
/// the machine raises instead of aborting the process.
pub fn try_reserve<T>(v: &mut Vec<T>, additional: usize, what: &str) -> Result<()> {
    v.try_reserve_exact(additional).map_err(|_| {
        JtmError::OutOfMemory(format!(
            "cannot allocate {what}: {additional} elements ({} MiB)",
            (additional as u128 * std::mem::size_of::<T>() as u128) >> 20
        ))
    })
}

/// A vector of `len` copies of `fill`, allocated through [`try_reserve`].
pub fn try_vec<T: Clone>(len: usize, fill: T, what: &str) -> Result<Vec<T>> {
    let mut v = Vec::new();
    try_reserve(&mut v, len, what)?;
    v.resize(len, fill);
    Ok(v)
}

/// `Err(InvalidArgument)` built with `format!` syntax.
macro_rules! invalid {
    ($($arg:tt)*) => { Err($crate::error::JtmError::InvalidArgument(format!($($arg)*))) };
}
pub(crate) use invalid;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn try_vec_refuses_what_cannot_be_allocated() {
        assert_eq!(try_vec(3, 7u8, "x").unwrap(), vec![7, 7, 7]);
        let err = try_vec(usize::MAX / 2, 0u64, "the test buffer").unwrap_err();
        assert!(matches!(&err, JtmError::OutOfMemory(m) if m.contains("the test buffer")));
    }
}
