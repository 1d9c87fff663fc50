//! What RabbitMQ 3.10 does with input it cannot take, and the exact reply
//! texts it sends, so that a client sees the same thing from Ferry.
//!
//! RabbitMQ's reader (`rabbit_reader`, `rabbit_command_assembler`) reacts to
//! bad frames in four ways, all observed against 3.10.8 on Erlang/OTP 25:
//!
//! - most errors: `connection.close` with a FRAME_ERROR text that prints
//!   the frame type and payload with Erlang's `~p`
//!   (`type 9, all octets = <<"x">>: unknown_frame`), then it waits for
//!   `connection.close-ok` ([`Fault::Close`]);
//! - an invalid frame-end octet or a frame larger than frame_max is fatal:
//!   `connection.close`, then the socket is closed 3 s later without
//!   reading anything more, since the framing is lost ([`Fault::Fatal`]);
//! - an unknown class or method id, or a field table whose contents do not
//!   parse, crashes the connection process: the socket is closed and
//!   nothing is sent ([`Fault::Drop`]);
//! - a content header whose properties do not decode is accepted as a
//!   frame: RabbitMQ decodes properties only when the whole message has
//!   arrived, and then closes the connection with 541 INTERNAL_ERROR
//!   ([`Fault::UndecodableHeader`]).
//!
//! Arguments that do not match a method's layout (truncated, extra bytes, a
//! table length running past the frame) get `cannot decode <<...>>`, the
//! arguments printed with `~w`.

use crate::error::CodecError;
use crate::reply::ReplyCode;
use crate::wire::{be_u16, be_u32, be_u64, FRAME_HEADER, FRAME_HEADER_SIZE};

/// RabbitMQ prints at most this many payload octets in a frame error.
const SNIPPET: usize = 16;
/// `~p`'s line length.
const LINE: usize = 80;

/// How to answer an input error, as RabbitMQ does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Send `connection.close` (code, detail, class and method ids) and
    /// wait for `connection.close-ok`; the bad frame has been consumed.
    Close {
        /// Reply code.
        code: ReplyCode,
        /// Reply text without the code name (`reply_text` adds it).
        detail: String,
        /// Class of the offending method, or 0.
        class_id: u16,
        /// Method of the offending method, or 0.
        method_id: u16,
    },
    /// Send `connection.close`, read nothing more (the framing is lost),
    /// close the socket after a grace period.
    Fatal {
        /// Reply code.
        code: ReplyCode,
        /// Reply text without the code name.
        detail: String,
    },
    /// Close the socket without sending anything.
    Drop,
    /// A content header of this class and body size whose properties do
    /// not decode: the channel takes it (and its body) as usual and fails
    /// with 541 INTERNAL_ERROR once the message is complete.
    UndecodableHeader {
        /// The header's class id.
        class_id: u16,
        /// The header's body size.
        body_size: u64,
    },
}

/// RabbitMQ's reaction to `err`, raised by [`crate::check_frame`] or
/// [`crate::parse_frame`] for `frame`: the whole frame for errors from
/// `parse_frame` (and for an unknown frame type, delimited with
/// [`crate::frame::frame_extent`]), at least its 7-byte header for
/// [`CodecError::FrameTooLarge`].
#[must_use]
pub fn classify(err: &CodecError, frame: &[u8]) -> Fault {
    let frame_type = frame.first().copied().unwrap_or(0);
    let payload = frame
        .get(FRAME_HEADER_SIZE..frame.len().saturating_sub(1))
        .unwrap_or(&[]);
    let close = |detail: String| Fault::Close {
        code: ReplyCode::FRAME_ERROR,
        detail,
        class_id: 0,
        method_id: 0,
    };
    match err {
        CodecError::FrameTooLarge { size, frame_max } => Fault::Fatal {
            code: ReplyCode::FRAME_ERROR,
            detail: frame_error_detail(
                frame_type,
                &[],
                &Term::Tuple(vec![
                    Term::Atom("frame_too_large"),
                    Term::Int(*size),
                    Term::Int(u64::from(frame_max.saturating_sub(8))),
                ]),
            ),
        },
        CodecError::BadFrameEnd { found } => Fault::Fatal {
            code: ReplyCode::FRAME_ERROR,
            detail: frame_error_detail(
                frame_type,
                payload,
                &Term::Tuple(vec![
                    Term::Atom("invalid_frame_end_marker"),
                    Term::Int(u64::from(*found)),
                ]),
            ),
        },
        CodecError::UnknownMethod { .. } => Fault::Drop,
        CodecError::MalformedMethod {
            class_id,
            method_id,
            ..
        } => {
            let args = payload.get(4..).unwrap_or(&[]);
            if layout_matches(*class_id, *method_id, args) {
                // The layout is right, so a table's contents are wrong
                // (RabbitMQ's table parser crashes) or a short string is
                // not UTF-8 (which RabbitMQ would take; we cannot).
                if has_table(*class_id, *method_id) {
                    return Fault::Drop;
                }
            }
            Fault::Close {
                code: ReplyCode::FRAME_ERROR,
                detail: cannot_decode_detail(args),
                class_id: *class_id,
                method_id: *method_id,
            }
        }
        CodecError::MalformedProperties | CodecError::UnexpectedContentClass { .. }
            if frame_type == FRAME_HEADER && payload.len() >= 12 =>
        {
            Fault::UndecodableHeader {
                class_id: be_u16(payload, 0),
                body_size: be_u64(payload, 4),
            }
        }
        // A header frame with its fixed fields but no property flags.
        CodecError::MalformedFrame { frame_type: t, .. }
            if *t == FRAME_HEADER && payload.len() >= 12 =>
        {
            Fault::UndecodableHeader {
                class_id: be_u16(payload, 0),
                body_size: be_u64(payload, 4),
            }
        }
        // Frames RabbitMQ cannot even classify: an unknown type, a
        // heartbeat with a payload, a method or header shorter than its
        // fixed fields.
        CodecError::UnknownFrameType { .. }
        | CodecError::MalformedFrame { .. }
        | CodecError::MalformedProperties
        | CodecError::UnexpectedContentClass { .. } => close(frame_error_detail(
            frame_type,
            payload,
            &Term::Atom("unknown_frame"),
        )),
        other => {
            let (class_id, method_id) = other.method_ids();
            Fault::Close {
                code: other.reply_code(),
                detail: other.to_string(),
                class_id,
                method_id,
            }
        }
    }
}

/// `type T, all octets = <<...>>: Reason`: RabbitMQ's FRAME_ERROR detail.
#[must_use]
pub fn frame_error_detail(frame_type: u8, payload: &[u8], reason: &Term<'_>) -> String {
    let mut out = Line::default();
    snippet(&mut out, frame_type, payload);
    out.push(": ");
    out.print(reason);
    out.text
}

/// `type T, all octets = <<...>>`: RabbitMQ's UNEXPECTED_FRAME detail for a
/// frame of a known type that makes no sense where it is (a heartbeat on a
/// channel other than 0, content on channel 0, a frame on a channel before
/// `connection.open`).
#[must_use]
pub fn unexpected_frame_detail(frame_type: u8, payload: &[u8]) -> String {
    let mut out = Line::default();
    snippet(&mut out, frame_type, payload);
    out.text
}

/// `cannot decode <<0,0,16>>`: method arguments printed with `~w`.
#[must_use]
pub fn cannot_decode_detail(args: &[u8]) -> String {
    format!("cannot decode {}", bytes_w(args))
}

fn snippet(out: &mut Line, frame_type: u8, payload: &[u8]) {
    let (qualifier, shown) = if payload.len() <= SNIPPET {
        ("all", payload)
    } else {
        ("first 16", &payload[..SNIPPET])
    };
    out.push(&format!("type {frame_type}, {qualifier} octets = "));
    out.print(&Term::Bin(shown));
}

// -- method layouts ------------------------------------------------------------

/// Field kinds, as RabbitMQ's generated decoder matches them.
#[derive(Clone, Copy)]
enum F {
    /// Fixed width: octet, bits (packed), short, long, long long.
    Fixed(usize),
    Short,
    Long,
    Table,
}

/// The argument layout of the methods that carry a field table.
fn table_layout(class_id: u16, method_id: u16) -> Option<&'static [F]> {
    use F::{Fixed, Long, Short, Table};
    Some(match (class_id, method_id) {
        // connection.start-ok: client-properties, mechanism, response, locale
        (10, 11) => &[Table, Short, Long, Short],
        // exchange.declare: ticket, exchange, type, bits
        (40, 10) => &[Fixed(2), Short, Short, Fixed(1), Table],
        // exchange.bind / unbind: ticket, destination, source, key, no-wait
        (40, 30) | (40, 40) => &[Fixed(2), Short, Short, Short, Fixed(1), Table],
        // queue.declare: ticket, queue, bits
        (50, 10) => &[Fixed(2), Short, Fixed(1), Table],
        // queue.bind: ticket, queue, exchange, key, no-wait
        (50, 20) => &[Fixed(2), Short, Short, Short, Fixed(1), Table],
        // queue.unbind: ticket, queue, exchange, key (no no-wait)
        (50, 50) => &[Fixed(2), Short, Short, Short, Table],
        // basic.consume: ticket, queue, consumer tag, bits
        (60, 20) => &[Fixed(2), Short, Short, Fixed(1), Table],
        _ => return None,
    })
}

fn has_table(class_id: u16, method_id: u16) -> bool {
    table_layout(class_id, method_id).is_some()
}

/// Whether `args` splits exactly into the method's fields (table contents
/// unchecked). Methods without a table: always false, their layout is all
/// their decoder checks.
fn layout_matches(class_id: u16, method_id: u16, args: &[u8]) -> bool {
    let Some(layout) = table_layout(class_id, method_id) else {
        return false;
    };
    let mut pos = 0usize;
    for field in layout {
        let len = match field {
            F::Fixed(n) => *n,
            F::Short => match args.get(pos) {
                Some(&n) => 1 + usize::from(n),
                None => return false,
            },
            F::Long | F::Table => match args.get(pos..pos + 4) {
                Some(_) => 4 + be_u32(args, pos) as usize,
                None => return false,
            },
        };
        pos = match pos.checked_add(len) {
            Some(p) if p <= args.len() => p,
            _ => return false,
        };
    }
    pos == args.len()
}

// -- Erlang term printing ---------------------------------------------------------

/// The few Erlang terms RabbitMQ's frame errors print.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Term<'a> {
    /// A non-negative integer.
    Int(u64),
    /// An atom that needs no quotes.
    Atom(&'a str),
    /// A binary.
    Bin(&'a [u8]),
    /// A tuple of integers and atoms.
    Tuple(Vec<Term<'a>>),
}

/// `~w` of a binary: always the octets as numbers.
fn bytes_w(b: &[u8]) -> String {
    let items: Vec<String> = b.iter().map(u8::to_string).collect();
    format!("<<{}>>", items.join(","))
}

/// Erlang's printable latin-1 characters (`io_lib:printable_latin1_list`).
fn printable(c: u8) -> bool {
    matches!(c, 0x20..=0x7e | 0xa0..=0xff | b'\n' | b'\r' | b'\t' | 0x0b | 0x08 | 0x0c | 0x1b)
}

/// `<<"...">>` with Erlang's string escapes. Octets 0xA0-0xFF come out as
/// the latin-1 characters they are (RabbitMQ sends them as single bytes;
/// a reply text here is UTF-8, so they take two).
fn bin_string(b: &[u8]) -> String {
    let mut s = String::from("<<\"");
    for &c in b {
        match c {
            b'"' => s.push_str("\\\""),
            b'\\' => s.push_str("\\\\"),
            b'\n' => s.push_str("\\n"),
            b'\r' => s.push_str("\\r"),
            b'\t' => s.push_str("\\t"),
            0x0b => s.push_str("\\v"),
            0x08 => s.push_str("\\b"),
            0x0c => s.push_str("\\f"),
            0x1b => s.push_str("\\e"),
            c => s.push(char::from(c)),
        }
    }
    s.push_str("\">>");
    s
}

/// Output with the column `~p` needs for line breaking.
#[derive(Default)]
struct Line {
    text: String,
}

impl Line {
    fn push(&mut self, s: &str) {
        self.text.push_str(s);
    }

    /// 1-based column of the next character (io_lib_format's view).
    fn col(&self) -> usize {
        let last = self.text.rsplit('\n').next().unwrap_or("");
        last.chars().count() + 1
    }

    /// `~p` (io_lib_pretty:print with line length 80, no depth limit).
    fn print(&mut self, term: &Term<'_>) {
        let col = self.col();
        let s = pretty(term, col);
        self.push(&s);
    }
}

/// An atomic term's text, or None for compound ones.
fn atomic(term: &Term<'_>) -> Option<String> {
    match term {
        Term::Int(n) => Some(n.to_string()),
        Term::Atom(a) => Some((*a).to_string()),
        Term::Bin([]) => Some("<<>>".into()),
        Term::Bin(b) if b.iter().all(|&c| printable(c)) => Some(bin_string(b)),
        Term::Bin(_) | Term::Tuple(_) => None,
    }
}

fn written(term: &Term<'_>) -> String {
    match term {
        Term::Bin(b) => atomic(term).unwrap_or_else(|| bytes_w(b)),
        Term::Tuple(items) => {
            let inner: Vec<String> = items.iter().map(written).collect();
            format!("{{{}}}", inner.join(","))
        }
        _ => atomic(term).unwrap_or_default(),
    }
}

fn pretty(term: &Term<'_>, col: usize) -> String {
    let whole = written(term);
    let len = whole.chars().count();
    if atomic(term).is_some() || len < LINE.saturating_sub(col) {
        return whole;
    }
    // M (the ribbon) defaults to the term's own length.
    let m = len as isize;
    let ind = " ".repeat(col - 1);
    match term {
        Term::Bin(b) => pp_binary(b, col + 2, m, &format!("{ind}  ")),
        Term::Tuple(items) => pp_tuple(items, col, m, &ind),
        _ => whole,
    }
}

/// io_lib_pretty:pp_binary: octets filled greedily, continuation lines
/// indented to just after the `<<`.
fn pp_binary(b: &[u8], col: usize, m: isize, ind: &str) -> String {
    let n0 = (LINE as isize - col as isize).min(m - 4).max(8);
    let mut n = n0;
    let mut out = String::from("<<");
    for (i, c) in b.iter().enumerate() {
        let item = c.to_string();
        if i + 1 < b.len() {
            let len = item.len() as isize + 1;
            if n - len < 0 {
                out.push('\n');
                out.push_str(ind);
                n = n0 - len;
            } else {
                n -= len;
            }
            out.push_str(&item);
            out.push(',');
        } else {
            if item.len() as isize > n {
                out.push('\n');
                out.push_str(ind);
            }
            out.push_str(&item);
        }
    }
    out.push_str(">>");
    out
}

/// io_lib_pretty for a tuple of atomic elements (tagged when the first is
/// an atom): the indentation is chosen by `cind` among -1, 4 and 1.
fn pp_tuple(items: &[Term<'_>], col: usize, m: isize, ind: &str) -> String {
    let ll = LINE as isize;
    let col = col as isize;
    let texts: Vec<String> = items.iter().map(written).collect();
    let tagged = matches!(items.first(), Some(Term::Atom(_))) && items.len() > 1;
    if !tagged {
        // cind_list never fails for atomic elements: TInd = -1.
        let inner = pp_list(&texts, col + 1, m, &format!("{ind} "), 1);
        return format!("{{{inner}}}");
    }
    let tlen = texts[0].chars().count() as isize;
    let tag_ind = tlen + 2;
    let tcol = col + tag_ind;
    let fits = |t_ind: isize| {
        if t_ind > 0 && tag_ind > t_ind {
            let col1 = col + t_ind;
            m + col1 <= ll || col1 <= ll / 2
        } else {
            m + tcol < ll || tcol < ll / 2
        }
    };
    let t_ind = [-1isize, 4].into_iter().find(|&i| fits(i)).unwrap_or(1);
    let w = 1;
    let inner = if t_ind > 0 && tag_ind > t_ind {
        let indent = format!("{ind}{}", " ".repeat(t_ind as usize));
        let mut s = texts[0].clone();
        s.push_str(&pp_tail(
            &texts[1..],
            col + t_ind,
            tcol,
            m,
            &indent,
            w + tlen,
        ));
        s
    } else {
        let indent = format!("{ind}{}", " ".repeat(tag_ind as usize));
        format!(
            "{},{}",
            texts[0],
            pp_list(&texts[1..], tcol, m, &indent, w + tlen + 1)
        )
    };
    format!("{{{inner}}}")
}

fn pp_list(texts: &[String], col0: isize, m: isize, ind: &str, w: isize) -> String {
    let Some((first, rest)) = texts.split_first() else {
        return String::new();
    };
    let len = first.chars().count() as isize;
    let ld = if rest.is_empty() { 1 } else { 0 };
    // pp_element: an atomic element always fits or forces a new line (Ll).
    let we = if len < LINE as isize - col0 - ld && len + w + ld <= m {
        len
    } else {
        LINE as isize
    };
    let mut s = first.clone();
    s.push_str(&pp_tail(rest, col0, col0 + we, m, ind, w + we));
    s
}

fn pp_tail(
    texts: &[String],
    col0: isize,
    mut col: isize,
    m: isize,
    ind: &str,
    mut w: isize,
) -> String {
    let ll = LINE as isize;
    let mut s = String::new();
    for (i, t) in texts.iter().enumerate() {
        let len = t.chars().count() as isize;
        let ld1 = if i + 1 < texts.len() { 0 } else { 1 };
        let elen = 1 + len;
        let fits = if ld1 == 0 {
            elen + 1 < ll - col && w + elen < m
        } else {
            elen < ll - col - ld1 && w + elen + ld1 <= m
        };
        if fits {
            s.push(',');
            s.push_str(t);
            col += elen;
            w += elen;
        } else {
            s.push_str(",\n");
            s.push_str(ind);
            s.push_str(t);
            let we = if len < ll - col0 - ld1 && len + ld1 <= m {
                len
            } else {
                ll
            };
            col = col0 + we;
            w = we;
        }
    }
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn texts_seen_from_rabbitmq_3_10() {
        assert_eq!(
            frame_error_detail(9, b"x", &Term::Atom("unknown_frame")),
            "type 9, all octets = <<\"x\">>: unknown_frame"
        );
        assert_eq!(
            frame_error_detail(
                3,
                &[],
                &Term::Tuple(vec![
                    Term::Atom("frame_too_large"),
                    Term::Int(10000),
                    Term::Int(4088)
                ])
            ),
            "type 3, all octets = <<>>: {frame_too_large,10000,4088}"
        );
        assert_eq!(
            frame_error_detail(9, &[128; 16], &Term::Atom("unknown_frame")),
            "type 9, all octets = <<128,128,128,128,128,128,128,128,128,128,128,128,128,128,\n                       128,128>>: unknown_frame"
        );
        let payload: Vec<u8> = [0u8, 50, 0, 10, 0, 0, 17]
            .into_iter()
            .chain(*b"a-long-queue-name")
            .collect();
        assert_eq!(
            frame_error_detail(
                1,
                &payload,
                &Term::Tuple(vec![Term::Atom("invalid_frame_end_marker"), Term::Int(1)])
            ),
            format!(
                "type 1, first 16 octets = <<0,50,0,10,0,0,17,97,45,108,111,110,103,45,113,117>>: {{invalid_frame_end_marker,\n{}1}}",
                " ".repeat(82)
            )
        );
        assert_eq!(
            frame_error_detail(9, b"a\"b\\c\n\td", &Term::Atom("unknown_frame")),
            "type 9, all octets = <<\"a\\\"b\\\\c\\n\\td\">>: unknown_frame"
        );
        assert_eq!(unexpected_frame_detail(8, &[]), "type 8, all octets = <<>>");
        assert_eq!(
            cannot_decode_detail(&[0, 0, 16, 97, 98, 99]),
            "cannot decode <<0,0,16,97,98,99>>"
        );
    }

    #[test]
    fn layouts() {
        // queue.declare: ticket, "q", bits, empty table
        let ok = [0, 0, 1, b'q', 0, 0, 0, 0, 0];
        assert!(layout_matches(50, 10, &ok));
        assert!(!layout_matches(50, 10, &ok[..8]));
        let mut long = ok.to_vec();
        long.push(0);
        assert!(!layout_matches(50, 10, &long));
        // A table length running past the end.
        let over = [0, 0, 1, b'q', 0, 0, 0, 0, 9, 1];
        assert!(!layout_matches(50, 10, &over));
        assert!(!layout_matches(60, 10, &[0; 7]));
    }

    /// Runs a frame through `check_frame`/`frame_extent` and `parse_frame`
    /// as the server does, and classifies the error.
    fn fault_of(frame: &[u8]) -> Fault {
        let extent = match crate::check_frame(frame, 4096) {
            Err(CodecError::UnknownFrameType { .. }) => super::super::frame_extent(frame, 4096),
            other => other,
        };
        let err = match extent {
            Ok(Some(len)) => {
                assert_eq!(len, frame.len());
                crate::parse_frame(bytes::Bytes::copy_from_slice(frame)).unwrap_err()
            }
            Ok(None) => panic!("incomplete"),
            Err(e) => e,
        };
        classify(&err, frame)
    }

    fn frame(frame_type: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![frame_type];
        f.extend_from_slice(&channel.to_be_bytes());
        f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        f.extend_from_slice(payload);
        f.push(0xCE);
        f
    }

    fn close(detail: &str, class_id: u16, method_id: u16) -> Fault {
        Fault::Close {
            code: ReplyCode::FRAME_ERROR,
            detail: detail.into(),
            class_id,
            method_id,
        }
    }

    #[test]
    fn reactions() {
        // An unknown type is read whole and quoted.
        assert_eq!(
            fault_of(&frame(9, 1, b"x")),
            close("type 9, all octets = <<\"x\">>: unknown_frame", 0, 0)
        );
        // A bad frame end is fatal, whatever the type.
        let mut f = frame(9, 1, b"x");
        *f.last_mut().unwrap() = 0;
        assert_eq!(
            fault_of(&f),
            Fault::Fatal {
                code: ReplyCode::FRAME_ERROR,
                detail: "type 9, all octets = <<\"x\">>: {invalid_frame_end_marker,0}".into()
            }
        );
        // Too large, from the header alone.
        assert_eq!(
            fault_of(&[3, 0, 1, 0, 0, 0x27, 0x10]),
            Fault::Fatal {
                code: ReplyCode::FRAME_ERROR,
                detail: "type 3, all octets = <<>>: {frame_too_large,10000,4088}".into()
            }
        );
        // Unknown ids: dropped.
        assert_eq!(fault_of(&frame(1, 1, &[0, 60, 3, 231])), Fault::Drop);
        // Arguments not matching the layout: quoted with ~w.
        assert_eq!(
            fault_of(&frame(1, 1, &[0, 60, 0, 10, 0, 0, 0, 0, 0, 1])),
            close("cannot decode <<0,0,0,0,0,1>>", 60, 10)
        );
        // Right layout, bad table contents: dropped.
        let declare = [0, 50, 0, 10, 0, 0, 1, b'q', 0, 0, 0, 0, 3, 1, b'k', b'Z'];
        assert_eq!(fault_of(&frame(1, 1, &declare)), Fault::Drop);
        // Undecodable properties: left for the channel.
        let mut header = vec![0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0x80, 0];
        assert_eq!(
            fault_of(&frame(2, 3, &header)),
            Fault::UndecodableHeader {
                class_id: 60,
                body_size: 5
            }
        );
        header.truncate(12);
        assert_eq!(
            fault_of(&frame(2, 3, &header)),
            Fault::UndecodableHeader {
                class_id: 60,
                body_size: 5
            }
        );
        // Shorter than a header's fixed fields: unknown.
        assert_eq!(
            fault_of(&frame(2, 3, &[0, 60])),
            close("type 2, all octets = <<0,60>>: unknown_frame", 0, 0)
        );
        assert_eq!(
            fault_of(&frame(8, 0, b"abc")),
            close("type 8, all octets = <<\"abc\">>: unknown_frame", 0, 0)
        );
    }
}
