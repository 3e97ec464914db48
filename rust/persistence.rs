//! Tree files: a versioned little-endian binary format with a CRC32 of everything before it.
//!
//! ```text
//! magic   8 bytes  "JTMTREE\0"
//! version u32      1
//! arity   u64
//! leaf_level u32
//! n_items u64
//! item_ids  i64 × n_items   (ascending)
//! leaves    u64 × n_items   (leaf node of each item)
//! crc32   u32      of all preceding bytes
//! ```
//! Only the item→leaf map is stored; everything else is rebuilt and validated on load, so a
//! file that passes the checksum but breaks an invariant is still refused.

use crate::error::{JtmError, Result};
use crate::tree::Tree;
use std::io::Write;
use std::path::Path;

const MAGIC: &[u8; 8] = b"JTMTREE\0";
const VERSION: u32 = 1;
const HEADER_LEN: usize = 8 + 4 + 8 + 4 + 8;

pub fn to_bytes(tree: &Tree) -> Vec<u8> {
    let n = tree.n_items();
    let mut out = Vec::with_capacity(HEADER_LEN + 16 * n + 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&tree.arity().to_le_bytes());
    out.extend_from_slice(&tree.leaf_level().to_le_bytes());
    out.extend_from_slice(&(n as u64).to_le_bytes());
    for id in tree.item_ids() {
        out.extend_from_slice(&id.to_le_bytes());
    }
    for leaf in tree.item_leaves() {
        out.extend_from_slice(&leaf.to_le_bytes());
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn corrupt(msg: impl Into<String>) -> JtmError {
    JtmError::CorruptTree(msg.into())
}

/// Reads fixed-size little-endian fields off the front of a byte slice.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let (head, rest) = self.0.split_at(N);
        self.0 = rest;
        head.try_into().expect("split_at gave N bytes")
    }
}

pub fn from_bytes(data: &[u8]) -> Result<Tree> {
    if data.len() < HEADER_LEN + 4 {
        return Err(corrupt(format!(
            "{} bytes is shorter than a tree header",
            data.len()
        )));
    }
    if &data[..8] != MAGIC {
        return Err(corrupt("not a jtm_rs tree (bad magic bytes)"));
    }
    let mut r = Reader(&data[8..HEADER_LEN]);
    let version = u32::from_le_bytes(r.take());
    if version != VERSION {
        return Err(corrupt(format!(
            "format version {version} is not supported (this build reads {VERSION})"
        )));
    }
    let arity = u64::from_le_bytes(r.take());
    let leaf_level = u32::from_le_bytes(r.take());
    let n = u64::from_le_bytes(r.take());
    let expected = (n as u128) * 16 + HEADER_LEN as u128 + 4;
    if data.len() as u128 != expected {
        return Err(corrupt(format!(
            "{} bytes, but a tree of {n} items takes {expected} (truncated or padded file)",
            data.len()
        )));
    }
    let (body, crc) = data.split_at(data.len() - 4);
    if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
        return Err(corrupt("checksum mismatch"));
    }
    let n = n as usize;
    let payload = &body[HEADER_LEN..];
    let ids: Vec<i64> = payload[..8 * n]
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let leaves: Vec<u64> = payload[8 * n..]
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    Tree::from_leaves(&ids, &leaves, arity, leaf_level)
        .map_err(|e| corrupt(format!("invalid tree: {e}")))
}

/// Writes to a temporary file beside `path`, then renames: a crash never leaves half a tree.
pub fn save(tree: &Tree, path: &Path) -> Result<()> {
    // A temporary name of this process and call: two saves to one path (threads or
    // processes) never write or rename each other's file; the last rename wins.
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}-{call}.tmp", std::process::id()));
    let tmp = std::path::PathBuf::from(tmp);
    let written = (|| -> Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&to_bytes(tree))?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

pub fn load(path: &Path) -> Result<Tree> {
    from_bytes(&std::fs::read(path)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_claiming_a_huge_tree_is_refused_not_allocated() {
        // Valid magic, version and checksum; leaf_level 2^32-1 (issue: 34 GB allocated first).
        let mut body = MAGIC.to_vec();
        body.extend(VERSION.to_le_bytes());
        body.extend(2u64.to_le_bytes());
        body.extend(u32::MAX.to_le_bytes());
        body.extend(1u64.to_le_bytes());
        body.extend(0i64.to_le_bytes());
        body.extend(1u64.to_le_bytes());
        let crc = crc32fast::hash(&body);
        body.extend(crc.to_le_bytes());
        let err = from_bytes(&body).unwrap_err().to_string();
        assert!(err.contains("int64"), "{err}");
    }

    fn tree() -> Tree {
        Tree::random(&[-5, 3, 8, 13, 21, 34, 55], 3, None, 9).unwrap()
    }

    #[test]
    fn round_trip() {
        let t = tree();
        assert_eq!(from_bytes(&to_bytes(&t)).unwrap(), t);
        let dir = std::env::temp_dir().join(format!("jtm_rs_persist_{}", std::process::id()));
        save(&t, &dir).unwrap();
        assert_eq!(load(&dir).unwrap(), t);
        std::fs::remove_file(&dir).unwrap();
    }

    #[test]
    fn every_truncation_and_bit_flip_is_refused() {
        let bytes = to_bytes(&tree());
        for len in 0..bytes.len() {
            assert!(
                matches!(from_bytes(&bytes[..len]), Err(JtmError::CorruptTree(_))),
                "len {len}"
            );
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert!(
                matches!(from_bytes(&b), Err(JtmError::CorruptTree(_))),
                "byte {i}"
            );
        }
    }
}
