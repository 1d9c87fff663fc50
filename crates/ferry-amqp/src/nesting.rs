//! A bound on how deeply field tables and arrays nest.
//!
//! amq-protocol's parser recurses once per nesting level with no limit,
//! about 1.4 KB of stack per level in a release build: a frame of 7.5 KB
//! (a table holding an array holding an array ...) overflows a 2 MiB tokio
//! worker stack and aborts the whole broker, before authentication if it
//! is sent as `connection.start-ok`. Deeply nested values also recurse
//! again later (Debug, Drop, routing, the definitions file, whose JSON
//! reader stops at 128 levels, so a durable queue declared with such
//! arguments made the broker unable to restart).
//!
//! So before amq-protocol sees a method or a property list, the tables it
//! carries are walked here without recursion, and nesting deeper than
//! [`MAX_NESTING`] is refused as malformed. Real clients nest a few levels
//! at most. Anything else that is malformed is left for amq-protocol to
//! reject.

use crate::wire::be_u32;

/// Deepest accepted nesting; the top-level table counts as 1.
pub(crate) const MAX_NESTING: usize = 32;

/// Whether the tables among `args` (a method's arguments, after the class
/// and method ids) nest within [`MAX_NESTING`]. True for methods without
/// tables and for arguments too malformed to find the table in.
pub(crate) fn method_ok(class_id: u16, method_id: u16, args: &[u8]) -> bool {
    // Fields before the table: (leading bytes, short strings, flag bytes).
    let (fixed, shorts, flags) = match (class_id, method_id) {
        (10, 10) => (2, 0, 0),            // connection.start: version major, minor
        (10, 11) => (0, 0, 0),            // connection.start-ok
        (40, 10) => (2, 2, 1),            // exchange.declare: ticket, exchange, type, bits
        (40, 30) | (40, 40) => (2, 3, 1), // exchange.bind / unbind
        (50, 10) => (2, 1, 1),            // queue.declare: ticket, queue, bits
        (50, 20) => (2, 3, 1),            // queue.bind
        (50, 50) => (2, 3, 0),            // queue.unbind (no bits)
        (60, 20) => (2, 2, 1),            // basic.consume: ticket, queue, tag, bits
        _ => return true,
    };
    let mut pos = fixed;
    for _ in 0..shorts {
        let Some(&len) = args.get(pos) else {
            return true;
        };
        pos += 1 + usize::from(len);
    }
    pos += flags;
    args.get(pos..).is_none_or(table_ok)
}

/// Whether the headers table of a property list (flags word first) nests
/// within [`MAX_NESTING`].
pub(crate) fn properties_ok(raw: &[u8]) -> bool {
    let Some(flags) = raw.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]])) else {
        return true;
    };
    if flags & (1 << 13) == 0 {
        return true;
    }
    let mut pos = 2;
    // content-type and content-encoding, short strings, come first.
    for bit in [15, 14] {
        if flags & (1 << bit) != 0 {
            let Some(&len) = raw.get(pos) else {
                return true;
            };
            pos += 1 + usize::from(len);
        }
    }
    raw.get(pos..).is_none_or(table_ok)
}

/// Walks the field table at the start of `buf` (its u32 length first).
/// False only if it nests deeper than [`MAX_NESTING`].
fn table_ok(buf: &[u8]) -> bool {
    let Some(len) = u32_at(buf, 0) else {
        return true;
    };
    let mut pos: usize = 4;
    // (end offset, is a table): the containers we are inside.
    let mut open: Vec<(usize, bool)> = vec![(pos.saturating_add(len), true)];
    while let Some(&(end, is_table)) = open.last() {
        if end > buf.len() || pos > end {
            return true; // malformed: amq-protocol rejects it
        }
        if pos == end {
            open.pop();
            continue;
        }
        if is_table {
            let key_len = usize::from(buf[pos]);
            pos += 1 + key_len;
        }
        let Some(&tag) = buf.get(pos) else {
            return true;
        };
        pos += 1;
        let size = match tag {
            b't' | b'b' | b'B' => 1,
            b's' | b'U' | b'u' => 2,
            b'I' | b'i' | b'f' => 4,
            b'D' => 5,
            b'L' | b'l' | b'd' | b'T' => 8,
            b'V' => 0,
            b'S' | b'x' => match u32_at(buf, pos) {
                Some(n) => n.saturating_add(4),
                None => return true,
            },
            b'A' | b'F' => {
                let Some(n) = u32_at(buf, pos) else {
                    return true;
                };
                if open.len() >= MAX_NESTING {
                    return false;
                }
                pos += 4;
                open.push((pos.saturating_add(n), tag == b'F'));
                continue;
            }
            _ => return true, // unknown type: amq-protocol rejects it
        };
        pos = pos.saturating_add(size);
    }
    true
}

fn u32_at(buf: &[u8], pos: usize) -> Option<usize> {
    let end = pos.checked_add(4)?;
    (end <= buf.len()).then(|| be_u32(buf, pos) as usize)
}

#[cfg(test)]
mod tests;
