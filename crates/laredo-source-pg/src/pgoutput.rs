//! Decoder (and encoder, for tests) of the `pgoutput` logical replication messages.
//!
//! The layouts follow PostgreSQL's "Logical Replication Message Formats" (protocol
//! version 1, which the replication client requests; `b` binary column values of later
//! versions are accepted too). All integers are big-endian; strings are NUL-terminated.
//!
//! | tag | message | body |
//! |---|---|---|
//! | `B` | Begin | final LSN (i64), commit time (i64 µs since 2000-01-01), xid (i32) |
//! | `C` | Commit | flags (i8), commit LSN, end LSN, commit time |
//! | `O` | Origin | commit LSN, name |
//! | `R` | Relation | oid, namespace, name, replica identity (i8), columns (i16) × {flags (i8, 1 = key), name, type oid, type modifier (i32)} |
//! | `Y` | Type | oid, namespace, name |
//! | `I` | Insert | relation oid, `N`, tuple |
//! | `U` | Update | relation oid, optional `K` or `O` + old tuple, `N`, new tuple |
//! | `D` | Delete | relation oid, `K` or `O`, old tuple |
//! | `T` | Truncate | relation count (i32), options (i8: 1 cascade, 2 restart identity), oids |
//! | `M` | Message | flags (i8: 1 transactional), LSN, prefix, content length (i32), content |
//!
//! A tuple is a column count (i16) and per column `n` (NULL), `u` (unchanged TOAST
//! value, not sent), `t` + length (i32) + text, or `b` + length + binary.
//!
//! The decoder never panics: every read is bounds-checked, and truncated, oversized or
//! unknown input is a [`DecodeError`] naming the message and the byte offset.

/// A decoding failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed pgoutput {message} message at byte {offset}: {problem}")]
pub struct DecodeError {
    /// The message being decoded (`Begin`, `Relation`, ...), or `unknown` before the tag.
    pub message: &'static str,
    /// The byte offset of the problem.
    pub offset: usize,
    /// What was wrong.
    pub problem: String,
}

/// `B`: a transaction starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Begin {
    /// The LSN of the transaction's commit record.
    pub final_lsn: u64,
    /// Commit time, microseconds since 2000-01-01 UTC.
    pub commit_time: i64,
    /// Transaction id.
    pub xid: u32,
}

/// `C`: a transaction commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// Flags (currently unused, 0).
    pub flags: u8,
    /// The LSN of the commit record.
    pub commit_lsn: u64,
    /// The end LSN of the transaction.
    pub end_lsn: u64,
    /// Commit time, microseconds since 2000-01-01 UTC.
    pub commit_time: i64,
}

/// `O`: the transaction came from another origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The LSN of the commit on the origin server.
    pub commit_lsn: u64,
    /// The origin's name.
    pub name: String,
}

/// One column of a [`Relation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationColumn {
    /// Whether the column is part of the replica identity key.
    pub key: bool,
    /// Column name.
    pub name: String,
    /// Type OID.
    pub type_oid: u32,
    /// Type modifier (`atttypmod`).
    pub type_modifier: i32,
}

/// `R`: a table's shape, sent before its first change and after every change to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// The table's OID.
    pub oid: u32,
    /// Schema name (`pg_catalog` is sent as an empty string).
    pub namespace: String,
    /// Table name.
    pub name: String,
    /// Replica identity: `d` default, `n` nothing, `f` full, `i` index.
    pub replica_identity: u8,
    /// The columns, in table order.
    pub columns: Vec<RelationColumn>,
}

/// `Y`: a non-built-in type used by a following relation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeInfo {
    /// Type OID.
    pub oid: u32,
    /// Schema name.
    pub namespace: String,
    /// Type name.
    pub name: String,
}

/// One column value of a tuple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TupleValue {
    /// SQL NULL.
    Null,
    /// A TOASTed value the change did not touch (not sent).
    UnchangedToast,
    /// The value in text format.
    Text(Vec<u8>),
    /// The value in binary format.
    Binary(Vec<u8>),
}

/// A row image: one value per column of the relation.
pub(crate) type Tuple = Vec<TupleValue>;

/// `I`: a row was inserted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Insert {
    /// The table's OID.
    pub relation: u32,
    /// The new row.
    pub new: Tuple,
}

/// The old row image of an update or delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OldTuple {
    /// `K`: the replica identity key columns (others are NULL).
    Key(Tuple),
    /// `O`: the whole old row (REPLICA IDENTITY FULL).
    Full(Tuple),
}

impl OldTuple {
    /// The tuple, whichever kind.
    pub fn tuple(&self) -> &Tuple {
        match self {
            OldTuple::Key(t) | OldTuple::Full(t) => t,
        }
    }
}

/// `U`: a row was updated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// The table's OID.
    pub relation: u32,
    /// The old key or row, when the server sent it (the key changed, or identity full).
    pub old: Option<OldTuple>,
    /// The new row (unchanged TOAST values marked).
    pub new: Tuple,
}

/// `D`: a row was deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delete {
    /// The table's OID.
    pub relation: u32,
    /// The deleted row's key or whole row.
    pub old: OldTuple,
}

/// `T`: tables were truncated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncate {
    /// Option bits: 1 = CASCADE, 2 = RESTART IDENTITY.
    pub options: u8,
    /// The truncated tables' OIDs.
    pub relations: Vec<u32>,
}

/// `M`: a logical decoding message (`pg_logical_emit_message`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalMessage {
    /// Whether the message is part of the transaction.
    pub transactional: bool,
    /// The message's LSN.
    pub lsn: u64,
    /// The prefix given by the emitter.
    pub prefix: String,
    /// The content.
    pub content: Vec<u8>,
}

/// A decoded `pgoutput` message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Message {
    /// `B`
    Begin(Begin),
    /// `C`
    Commit(Commit),
    /// `O`
    Origin(Origin),
    /// `R`
    Relation(Relation),
    /// `Y`
    Type(TypeInfo),
    /// `I`
    Insert(Insert),
    /// `U`
    Update(Update),
    /// `D`
    Delete(Delete),
    /// `T`
    Truncate(Truncate),
    /// `M`
    Message(LogicalMessage),
}

/// Columns per tuple, at most (PostgreSQL's limit is 1664).
const MAX_COLUMNS: usize = 1664;

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    message: &'static str,
}

impl<'a> Reader<'a> {
    fn fail(&self, problem: impl Into<String>) -> DecodeError {
        DecodeError {
            message: self.message,
            offset: self.pos,
            problem: problem.into(),
        }
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| {
                self.fail(format!(
                    "truncated {what}: need {n} byte(s), {} left",
                    self.bytes.len() - self.pos
                ))
            })?;
        let slice = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    fn u8(&mut self, what: &str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn u16(&mut self, what: &str) -> Result<u16, DecodeError> {
        self.array::<2>(what).map(u16::from_be_bytes)
    }

    fn u32(&mut self, what: &str) -> Result<u32, DecodeError> {
        self.array::<4>(what).map(u32::from_be_bytes)
    }

    fn i32(&mut self, what: &str) -> Result<i32, DecodeError> {
        self.array::<4>(what).map(i32::from_be_bytes)
    }

    fn u64(&mut self, what: &str) -> Result<u64, DecodeError> {
        self.array::<8>(what).map(u64::from_be_bytes)
    }

    fn i64(&mut self, what: &str) -> Result<i64, DecodeError> {
        self.array::<8>(what).map(i64::from_be_bytes)
    }

    fn string(&mut self, what: &str) -> Result<String, DecodeError> {
        let rest = &self.bytes[self.pos..];
        let len = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| self.fail(format!("{what} has no NUL terminator")))?;
        let text = std::str::from_utf8(&rest[..len])
            .map_err(|_| self.fail(format!("{what} is not UTF-8")))?;
        self.pos += len + 1;
        Ok(text.to_string())
    }

    fn tuple(&mut self) -> Result<Tuple, DecodeError> {
        let count = usize::from(self.u16("column count")?);
        if count > MAX_COLUMNS {
            return Err(self.fail(format!("{count} columns exceed the limit of {MAX_COLUMNS}")));
        }
        let mut tuple = Vec::with_capacity(count);
        for _ in 0..count {
            let value = match self.u8("column kind")? {
                b'n' => TupleValue::Null,
                b'u' => TupleValue::UnchangedToast,
                kind @ (b't' | b'b') => {
                    let len = self.i32("value length")?;
                    let len = usize::try_from(len)
                        .map_err(|_| self.fail(format!("negative value length {len}")))?;
                    let data = self.take(len, "value")?.to_vec();
                    if kind == b't' {
                        TupleValue::Text(data)
                    } else {
                        TupleValue::Binary(data)
                    }
                }
                other => {
                    return Err(self.fail(format!("unknown column kind {:?}", char::from(other))));
                }
            };
            tuple.push(value);
        }
        Ok(tuple)
    }

    fn old_tuple(&mut self, kind: u8) -> Result<OldTuple, DecodeError> {
        match kind {
            b'K' => Ok(OldTuple::Key(self.tuple()?)),
            b'O' => Ok(OldTuple::Full(self.tuple()?)),
            other => Err(self.fail(format!("expected K or O, found {:?}", char::from(other)))),
        }
    }

    fn expect_new(&mut self) -> Result<(), DecodeError> {
        match self.u8("tuple marker")? {
            b'N' => Ok(()),
            other => Err(self.fail(format!("expected N, found {:?}", char::from(other)))),
        }
    }

    fn finish<T>(&self, value: T) -> Result<T, DecodeError> {
        if self.pos == self.bytes.len() {
            Ok(value)
        } else {
            Err(self.fail(format!("{} trailing byte(s)", self.bytes.len() - self.pos)))
        }
    }
}

/// Decodes one `pgoutput` message (the payload of an XLogData).
///
/// # Errors
/// A truncated, malformed or unknown message.
pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
    let mut r = Reader {
        bytes,
        pos: 0,
        message: "unknown",
    };
    let tag = r.u8("message tag")?;
    r.message = match tag {
        b'B' => "Begin",
        b'C' => "Commit",
        b'O' => "Origin",
        b'R' => "Relation",
        b'Y' => "Type",
        b'I' => "Insert",
        b'U' => "Update",
        b'D' => "Delete",
        b'T' => "Truncate",
        b'M' => "Message",
        other => return Err(r.fail(format!("unknown message tag {:?}", char::from(other)))),
    };
    let message = match tag {
        b'B' => Message::Begin(Begin {
            final_lsn: r.u64("final LSN")?,
            commit_time: r.i64("commit time")?,
            xid: r.u32("xid")?,
        }),
        b'C' => Message::Commit(Commit {
            flags: r.u8("flags")?,
            commit_lsn: r.u64("commit LSN")?,
            end_lsn: r.u64("end LSN")?,
            commit_time: r.i64("commit time")?,
        }),
        b'O' => Message::Origin(Origin {
            commit_lsn: r.u64("commit LSN")?,
            name: r.string("origin name")?,
        }),
        b'R' => {
            let oid = r.u32("relation OID")?;
            let namespace = r.string("namespace")?;
            let name = r.string("relation name")?;
            let replica_identity = r.u8("replica identity")?;
            let count = usize::from(r.u16("column count")?);
            if count > MAX_COLUMNS {
                return Err(r.fail(format!("{count} columns exceed the limit of {MAX_COLUMNS}")));
            }
            let mut columns = Vec::with_capacity(count);
            for _ in 0..count {
                columns.push(RelationColumn {
                    key: r.u8("column flags")? & 1 == 1,
                    name: r.string("column name")?,
                    type_oid: r.u32("type OID")?,
                    type_modifier: r.i32("type modifier")?,
                });
            }
            Message::Relation(Relation {
                oid,
                namespace,
                name,
                replica_identity,
                columns,
            })
        }
        b'Y' => Message::Type(TypeInfo {
            oid: r.u32("type OID")?,
            namespace: r.string("namespace")?,
            name: r.string("type name")?,
        }),
        b'I' => {
            let relation = r.u32("relation OID")?;
            r.expect_new()?;
            Message::Insert(Insert {
                relation,
                new: r.tuple()?,
            })
        }
        b'U' => {
            let relation = r.u32("relation OID")?;
            let old = match r.u8("tuple marker")? {
                b'N' => None,
                kind => {
                    let old = r.old_tuple(kind)?;
                    r.expect_new()?;
                    Some(old)
                }
            };
            Message::Update(Update {
                relation,
                old,
                new: r.tuple()?,
            })
        }
        b'D' => {
            let relation = r.u32("relation OID")?;
            let kind = r.u8("tuple marker")?;
            Message::Delete(Delete {
                relation,
                old: r.old_tuple(kind)?,
            })
        }
        b'T' => {
            let count = r.u32("relation count")?;
            let options = r.u8("options")?;
            let count = usize::try_from(count).map_err(|_| r.fail("relation count overflow"))?;
            if count > (bytes.len() - r.pos) / 4 {
                return Err(r.fail(format!("{count} relations do not fit in the message")));
            }
            let relations = (0..count)
                .map(|_| r.u32("relation OID"))
                .collect::<Result<_, _>>()?;
            Message::Truncate(Truncate { options, relations })
        }
        _ => {
            let transactional = r.u8("flags")? & 1 == 1;
            let lsn = r.u64("LSN")?;
            let prefix = r.string("prefix")?;
            let len = r.i32("content length")?;
            let len = usize::try_from(len)
                .map_err(|_| r.fail(format!("negative content length {len}")))?;
            Message::Message(LogicalMessage {
                transactional,
                lsn,
                prefix,
                content: r.take(len, "content")?.to_vec(),
            })
        }
    };
    r.finish(message)
}

/// Encodes a message in the wire format (the inverse of [`decode`]); the tests use it to
/// produce streams.
#[cfg(test)]
pub(crate) fn encode(message: &Message) -> Vec<u8> {
    let mut out = Vec::new();
    let string = |out: &mut Vec<u8>, s: &str| {
        out.extend_from_slice(s.as_bytes());
        out.push(0);
    };
    let tuple = |out: &mut Vec<u8>, t: &Tuple| {
        out.extend_from_slice(&u16::try_from(t.len()).unwrap_or(u16::MAX).to_be_bytes());
        for value in t {
            match value {
                TupleValue::Null => out.push(b'n'),
                TupleValue::UnchangedToast => out.push(b'u'),
                TupleValue::Text(data) | TupleValue::Binary(data) => {
                    out.push(if matches!(value, TupleValue::Text(_)) {
                        b't'
                    } else {
                        b'b'
                    });
                    out.extend_from_slice(
                        &i32::try_from(data.len()).unwrap_or(i32::MAX).to_be_bytes(),
                    );
                    out.extend_from_slice(data);
                }
            }
        }
    };
    let old = |out: &mut Vec<u8>, o: &OldTuple| {
        out.push(if matches!(o, OldTuple::Key(_)) {
            b'K'
        } else {
            b'O'
        });
        tuple(out, o.tuple());
    };
    match message {
        Message::Begin(b) => {
            out.push(b'B');
            out.extend_from_slice(&b.final_lsn.to_be_bytes());
            out.extend_from_slice(&b.commit_time.to_be_bytes());
            out.extend_from_slice(&b.xid.to_be_bytes());
        }
        Message::Commit(c) => {
            out.push(b'C');
            out.push(c.flags);
            out.extend_from_slice(&c.commit_lsn.to_be_bytes());
            out.extend_from_slice(&c.end_lsn.to_be_bytes());
            out.extend_from_slice(&c.commit_time.to_be_bytes());
        }
        Message::Origin(o) => {
            out.push(b'O');
            out.extend_from_slice(&o.commit_lsn.to_be_bytes());
            string(&mut out, &o.name);
        }
        Message::Relation(r) => {
            out.push(b'R');
            out.extend_from_slice(&r.oid.to_be_bytes());
            string(&mut out, &r.namespace);
            string(&mut out, &r.name);
            out.push(r.replica_identity);
            out.extend_from_slice(
                &u16::try_from(r.columns.len())
                    .unwrap_or(u16::MAX)
                    .to_be_bytes(),
            );
            for c in &r.columns {
                out.push(u8::from(c.key));
                string(&mut out, &c.name);
                out.extend_from_slice(&c.type_oid.to_be_bytes());
                out.extend_from_slice(&c.type_modifier.to_be_bytes());
            }
        }
        Message::Type(t) => {
            out.push(b'Y');
            out.extend_from_slice(&t.oid.to_be_bytes());
            string(&mut out, &t.namespace);
            string(&mut out, &t.name);
        }
        Message::Insert(i) => {
            out.push(b'I');
            out.extend_from_slice(&i.relation.to_be_bytes());
            out.push(b'N');
            tuple(&mut out, &i.new);
        }
        Message::Update(u) => {
            out.push(b'U');
            out.extend_from_slice(&u.relation.to_be_bytes());
            if let Some(o) = &u.old {
                old(&mut out, o);
            }
            out.push(b'N');
            tuple(&mut out, &u.new);
        }
        Message::Delete(d) => {
            out.push(b'D');
            out.extend_from_slice(&d.relation.to_be_bytes());
            old(&mut out, &d.old);
        }
        Message::Truncate(t) => {
            out.push(b'T');
            out.extend_from_slice(
                &u32::try_from(t.relations.len())
                    .unwrap_or(u32::MAX)
                    .to_be_bytes(),
            );
            out.push(t.options);
            for oid in &t.relations {
                out.extend_from_slice(&oid.to_be_bytes());
            }
        }
        Message::Message(m) => {
            out.push(b'M');
            out.push(u8::from(m.transactional));
            out.extend_from_slice(&m.lsn.to_be_bytes());
            string(&mut out, &m.prefix);
            out.extend_from_slice(
                &i32::try_from(m.content.len())
                    .unwrap_or(i32::MAX)
                    .to_be_bytes(),
            );
            out.extend_from_slice(&m.content);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn name() -> impl Strategy<Value = String> {
        "[a-z_][a-z0-9_ ]{0,20}"
    }

    fn value() -> impl Strategy<Value = TupleValue> {
        prop_oneof![
            Just(TupleValue::Null),
            Just(TupleValue::UnchangedToast),
            proptest::collection::vec(any::<u8>(), 0..64).prop_map(TupleValue::Text),
            proptest::collection::vec(any::<u8>(), 0..64).prop_map(TupleValue::Binary),
        ]
    }

    fn tuple() -> impl Strategy<Value = Tuple> {
        proptest::collection::vec(value(), 0..12)
    }

    fn old() -> impl Strategy<Value = OldTuple> {
        prop_oneof![
            tuple().prop_map(OldTuple::Key),
            tuple().prop_map(OldTuple::Full)
        ]
    }

    fn message() -> impl Strategy<Value = Message> {
        prop_oneof![
            (any::<u64>(), any::<i64>(), any::<u32>()).prop_map(|(final_lsn, commit_time, xid)| {
                Message::Begin(Begin {
                    final_lsn,
                    commit_time,
                    xid,
                })
            }),
            (any::<u8>(), any::<u64>(), any::<u64>(), any::<i64>()).prop_map(
                |(flags, commit_lsn, end_lsn, commit_time)| {
                    Message::Commit(Commit {
                        flags,
                        commit_lsn,
                        end_lsn,
                        commit_time,
                    })
                }
            ),
            (any::<u64>(), name())
                .prop_map(|(commit_lsn, name)| Message::Origin(Origin { commit_lsn, name })),
            (
                any::<u32>(),
                name(),
                name(),
                prop_oneof![Just(b'd'), Just(b'n'), Just(b'f'), Just(b'i')],
                proptest::collection::vec(
                    (any::<bool>(), name(), any::<u32>(), any::<i32>()),
                    0..10
                )
            )
                .prop_map(|(oid, namespace, name, replica_identity, cols)| {
                    Message::Relation(Relation {
                        oid,
                        namespace,
                        name,
                        replica_identity,
                        columns: cols
                            .into_iter()
                            .map(|(key, name, type_oid, type_modifier)| RelationColumn {
                                key,
                                name,
                                type_oid,
                                type_modifier,
                            })
                            .collect(),
                    })
                }),
            (any::<u32>(), name(), name()).prop_map(|(oid, namespace, name)| Message::Type(
                TypeInfo {
                    oid,
                    namespace,
                    name
                }
            )),
            (any::<u32>(), tuple())
                .prop_map(|(relation, new)| Message::Insert(Insert { relation, new })),
            (any::<u32>(), proptest::option::of(old()), tuple())
                .prop_map(|(relation, old, new)| Message::Update(Update { relation, old, new })),
            (any::<u32>(), old())
                .prop_map(|(relation, old)| Message::Delete(Delete { relation, old })),
            (any::<u8>(), proptest::collection::vec(any::<u32>(), 0..8)).prop_map(
                |(options, relations)| Message::Truncate(Truncate { options, relations })
            ),
            (
                any::<bool>(),
                any::<u64>(),
                name(),
                proptest::collection::vec(any::<u8>(), 0..64)
            )
                .prop_map(|(transactional, lsn, prefix, content)| Message::Message(
                    LogicalMessage {
                        transactional,
                        lsn,
                        prefix,
                        content
                    }
                )),
        ]
    }

    proptest! {
        #[test]
        fn encode_decode_round_trip(m in message()) {
            prop_assert_eq!(decode(&encode(&m)).unwrap(), m);
        }

        #[test]
        fn every_truncation_is_an_error(m in message(), cut in 0usize..1000) {
            let bytes = encode(&m);
            let cut = cut % bytes.len();
            prop_assert!(decode(&bytes[..cut]).is_err());
        }

        #[test]
        fn trailing_bytes_are_an_error(m in message(), extra in proptest::collection::vec(any::<u8>(), 1..8)) {
            let mut bytes = encode(&m);
            bytes.extend(extra);
            prop_assert!(decode(&bytes).is_err());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn corrupted_messages_never_panic(m in message(), at in 0usize..1000, byte in any::<u8>()) {
            let mut bytes = encode(&m);
            let at = at % bytes.len();
            bytes[at] = byte;
            let _ = decode(&bytes);
        }
    }

    #[test]
    fn errors_name_the_message_and_offset() {
        let err = decode(&[b'I', 0, 0, 0, 1, b'X']).unwrap_err();
        assert_eq!(
            err.to_string(),
            "malformed pgoutput Insert message at byte 6: expected N, found 'X'"
        );
        let err = decode(b"Z").unwrap_err();
        assert_eq!(
            err.to_string(),
            "malformed pgoutput unknown message at byte 1: unknown message tag 'Z'"
        );
        let huge = [b'T', 0xff, 0xff, 0xff, 0xff, 0];
        assert!(decode(&huge).unwrap_err().problem.contains("do not fit"));
    }
}
