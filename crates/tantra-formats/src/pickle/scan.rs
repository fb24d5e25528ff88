//! `tantra scan` of a pickle: walks the opcodes without building anything and reports the
//! globals, opcode counts and a verdict, using the same opcode decoding, memo and allowlist as
//! the machine so that what it calls safe is what the machine reads.

use std::collections::HashSet;
use std::fmt;
use std::rc::Rc;

use super::allowlist::{classify_global, refusal_error, GlobalRefusal};
use super::memo::Memo;
use std::collections::BTreeMap;

use super::op::{
    decode_raw_unicode_escape, decode_string_literal, memo_index, opcode_name, read_op, Arg, OpCode,
};
use super::{Limits, PickleError};

/// What a scan concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every global is on the allowlist and no refused opcode occurs.
    Safe,
    /// Reasons the file would run code or is refused on safety grounds.
    Unsafe(Vec<String>),
    /// The file is malformed (truncated, unknown opcode, ...); it holds no refused global as
    /// far as it could be read.
    Invalid(String),
    /// The file holds a legal kind of tensor that tantra does not read (quantized, sparse,
    /// meta, nested): not malicious, but not loadable here.
    Unsupported(Vec<String>),
}

impl Verdict {
    /// `safe`, `unsafe` or `invalid`.
    pub fn name(&self) -> &'static str {
        match self {
            Verdict::Safe => "safe",
            Verdict::Unsafe(_) => "unsafe",
            Verdict::Invalid(_) => "invalid",
            Verdict::Unsupported(_) => "unsupported",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Safe => f.write_str("safe"),
            Verdict::Unsafe(r) => write!(f, "unsafe: {}", r.join("; ")),
            Verdict::Invalid(r) => write!(f, "invalid: {r}"),
            Verdict::Unsupported(r) => write!(f, "unsupported: {}", r.join("; ")),
        }
    }
}

/// What [`scan`] found in a pickle (or, merged, in every pickle of a file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanReport {
    /// Every global named (`module.name`), deduplicated, in first-seen order.
    pub globals: Vec<String>,
    /// How often each opcode occurs, by name.
    pub opcodes: BTreeMap<String, u64>,
    /// The highest protocol a PROTO opcode declared.
    pub protocol: Option<u8>,
    pub verdict: Verdict,
}

impl ScanReport {
    /// A report with nothing scanned and the given verdict.
    pub fn with_verdict(verdict: Verdict) -> Self {
        ScanReport {
            globals: Vec::new(),
            opcodes: BTreeMap::new(),
            protocol: None,
            verdict,
        }
    }

    /// True when the verdict is [`Verdict::Safe`].
    pub fn is_safe(&self) -> bool {
        self.verdict == Verdict::Safe
    }

    /// Adds an unsafe reason (making the verdict unsafe).
    pub fn add_unsafe(&mut self, reason: String) {
        match &mut self.verdict {
            Verdict::Unsafe(r) => r.push(reason),
            Verdict::Invalid(inv) => {
                let inv = std::mem::take(inv);
                self.verdict = Verdict::Unsafe(vec![reason, format!("also invalid: {inv}")]);
            }
            Verdict::Safe | Verdict::Unsupported(_) => self.verdict = Verdict::Unsafe(vec![reason]),
        }
    }

    /// Adds a reason the file is not loadable that is no danger (making a safe verdict
    /// unsupported; unsafe and invalid verdicts stay).
    pub fn add_unsupported(&mut self, reason: String) {
        match &mut self.verdict {
            Verdict::Unsupported(r) => {
                if !r.contains(&reason) {
                    r.push(reason)
                }
            }
            Verdict::Safe => self.verdict = Verdict::Unsupported(vec![reason]),
            Verdict::Unsafe(_) | Verdict::Invalid(_) => {}
        }
    }

    /// Folds another report (another pickle of the same file) into this one. Unsafe beats
    /// invalid beats safe.
    pub fn merge(&mut self, other: ScanReport) {
        for g in other.globals {
            if !self.globals.contains(&g) {
                self.globals.push(g);
            }
        }
        for (k, v) in other.opcodes {
            *self.opcodes.entry(k).or_insert(0) += v;
        }
        self.protocol = self.protocol.max(other.protocol);
        match other.verdict {
            Verdict::Safe => {}
            Verdict::Unsafe(rs) => {
                for r in rs {
                    self.add_unsafe(r);
                }
            }
            Verdict::Invalid(r) => match &mut self.verdict {
                Verdict::Safe | Verdict::Unsupported(_) => self.verdict = Verdict::Invalid(r),
                Verdict::Unsafe(rs) => rs.push(format!("also invalid: {r}")),
                Verdict::Invalid(_) => {}
            },
            Verdict::Unsupported(rs) => {
                for r in rs {
                    self.add_unsupported(r);
                }
            }
        }
    }
}

/// Scans one pickle that fills `bytes`: lists its globals and opcodes and says whether loading
/// it would be refused on safety grounds, without building any object. `STACK_GLOBAL` operands
/// are tracked on a shadow stack so that only literal strings count as names.
pub fn scan(bytes: &[u8]) -> ScanReport {
    let (mut r, end) = scan_prefix(bytes);
    if let Some(end) = end {
        if end != bytes.len() {
            r.merge(ScanReport::with_verdict(Verdict::Invalid(
                PickleError::TrailingBytes {
                    offset: end,
                    count: bytes.len() - end,
                }
                .to_string(),
            )));
        }
    }
    r
}

/// Unsafe reasons kept per scan; the rest are counted.
const MAX_REASONS: usize = 50;

/// The shadow machine of [`scan_prefix`]: `Some(text)` for literal strings, `None` for
/// anything else.
struct Scanner {
    limits: Limits,
    stack: Vec<Option<Rc<str>>>,
    marks: Vec<usize>,
    memo: Memo<Option<Rc<str>>>,
    seen: HashSet<String>,
    reasons: Vec<String>,
    more_reasons: usize,
    /// Legal tensor kinds that tantra does not read.
    unsupported: Vec<String>,
    counts: [u64; 256],
    report: ScanReport,
}

impl Scanner {
    fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn pop_n(
        &mut self,
        n: usize,
        offset: usize,
        opcode: &'static str,
    ) -> Result<Vec<Option<Rc<str>>>, PickleError> {
        if self.stack.len() < self.floor() + n {
            return Err(PickleError::StackUnderflow { offset, opcode });
        }
        let at = self.stack.len() - n;
        Ok(self.stack.split_off(at))
    }

    fn pop_mark(&mut self, offset: usize, opcode: &'static str) -> Result<(), PickleError> {
        let m = self
            .marks
            .pop()
            .ok_or(PickleError::NoMark { offset, opcode })?;
        self.stack.truncate(m);
        Ok(())
    }

    fn unsafe_reason(&mut self, e: PickleError) {
        if self.reasons.len() < MAX_REASONS {
            self.reasons.push(e.to_string());
        } else {
            self.more_reasons += 1;
        }
    }

    fn global(&mut self, module: &str, name: &str, offset: usize) {
        let q = format!("{module}.{name}");
        if self.seen.insert(q.clone()) {
            self.report.globals.push(q);
        }
        match classify_global(module, name) {
            Ok(_) => {}
            Err(GlobalRefusal::UnsupportedKind(kind)) => {
                self.unsupported
                    .push(format!("unsupported tensor kind ({kind})"));
            }
            Err(r) => self.unsafe_reason(refusal_error(offset, module, name, r)),
        }
    }

    /// Runs one opcode; `Ok(true)` at STOP.
    fn step(
        &mut self,
        code: OpCode,
        name: &'static str,
        arg: Arg<'_>,
        off: usize,
        remaining: usize,
    ) -> Result<bool, PickleError> {
        match code {
            OpCode::Stop => {
                self.pop_n(1, off, name)?;
                return Ok(true);
            }
            OpCode::Proto => {
                if let Arg::U(v) = arg {
                    if v > 5 {
                        return Err(PickleError::UnsupportedProtocol {
                            offset: off,
                            version: v,
                        });
                    }
                    self.report.protocol = self.report.protocol.max(Some(v as u8));
                }
            }
            OpCode::Frame => {
                if let Arg::U(v) = arg {
                    if v > remaining as u64 {
                        return Err(PickleError::LengthBeyondEnd {
                            offset: off,
                            opcode: name,
                            len: v,
                            remaining: remaining as u64,
                        });
                    }
                }
            }
            OpCode::Put | OpCode::Binput | OpCode::LongBinput | OpCode::Memoize => {
                let i = memo_index(arg, self.memo.len(), code).ok_or(PickleError::BadText {
                    offset: off,
                    opcode: name,
                })?;
                let top = self.pop_n(1, off, name)?.pop().flatten();
                self.stack.push(top.clone());
                self.memo.insert(i, top);
            }
            OpCode::Get | OpCode::Binget | OpCode::LongBinget => {
                let i = memo_index(arg, 0, code).ok_or(PickleError::BadText {
                    offset: off,
                    opcode: name,
                })?;
                let v = self.memo.get(i).ok_or(PickleError::MemoMissing {
                    offset: off,
                    opcode: name,
                    index: i,
                })?;
                self.stack.push(v.clone());
            }
            OpCode::Mark => {
                if self.marks.len() >= self.limits.max_marks {
                    return Err(PickleError::TooManyMarks {
                        offset: off,
                        limit: self.limits.max_marks,
                    });
                }
                self.marks.push(self.stack.len());
            }
            OpCode::Pop => {
                if self.stack.len() > self.floor() {
                    self.stack.pop();
                } else {
                    self.pop_mark(off, name)?;
                }
            }
            OpCode::PopMark => self.pop_mark(off, name)?,
            OpCode::Dup => {
                let t = self.pop_n(1, off, name)?.pop().flatten();
                self.stack.extend([t.clone(), t]);
            }
            OpCode::Global | OpCode::Inst => {
                if let Arg::Lines(m, n) = arg {
                    let m = String::from_utf8_lossy(m);
                    let n = String::from_utf8_lossy(n);
                    self.global(&m, &n, off);
                }
                if code == OpCode::Inst {
                    self.unsafe_reason(PickleError::InstObj {
                        offset: off,
                        opcode: name,
                    });
                    self.pop_mark(off, name)?;
                }
                self.stack.push(None);
            }
            OpCode::StackGlobal => {
                let mut ops = self.pop_n(2, off, name)?;
                let (n, m) = (ops.pop().flatten(), ops.pop().flatten());
                match (m, n) {
                    (Some(m), Some(n)) => self.global(&m, &n, off),
                    _ => self.unsafe_reason(PickleError::NonLiteralStackGlobal { offset: off }),
                }
                self.stack.push(None);
            }
            OpCode::Obj => {
                self.unsafe_reason(PickleError::InstObj {
                    offset: off,
                    opcode: name,
                });
                self.pop_mark(off, name)?;
                self.stack.push(None);
            }
            OpCode::Ext1 | OpCode::Ext2 | OpCode::Ext4 => {
                self.unsafe_reason(PickleError::ExtensionRegistry {
                    offset: off,
                    opcode: name,
                });
                self.stack.push(None);
            }
            OpCode::Persid => {
                self.unsafe_reason(PickleError::TextPersistentId { offset: off });
                self.stack.push(None);
            }
            OpCode::NextBuffer | OpCode::ReadonlyBuffer => {
                self.unsafe_reason(PickleError::OutOfBandBuffer {
                    offset: off,
                    opcode: name,
                });
                if code == OpCode::NextBuffer {
                    self.stack.push(None);
                }
            }
            // A container from the items above the mark.
            OpCode::Tuple | OpCode::List | OpCode::Dict | OpCode::Frozenset => {
                self.pop_mark(off, name)?;
                self.stack.push(None);
            }
            // The items above the mark go into the container below it.
            OpCode::Appends | OpCode::Setitems | OpCode::Additems => {
                self.pop_mark(off, name)?;
                self.pop_n(1, off, name)?;
                self.stack.push(None);
            }
            OpCode::Tuple1 | OpCode::Tuple2 | OpCode::Tuple3 => {
                self.pop_n(code.tuple_len(), off, name)?;
                self.stack.push(None);
            }
            OpCode::Append | OpCode::Build | OpCode::Reduce | OpCode::Newobj => {
                self.pop_n(2, off, name)?;
                self.stack.push(None);
            }
            OpCode::Setitem | OpCode::NewobjEx => {
                self.pop_n(3, off, name)?;
                self.stack.push(None);
            }
            OpCode::Binpersid => {
                self.pop_n(1, off, name)?;
                self.stack.push(None);
            }
            OpCode::Long1 | OpCode::Long4 => {
                if let Arg::Bytes(b) = arg {
                    if b.len() > self.limits.max_int_bytes {
                        return Err(PickleError::IntegerTooLong {
                            offset: off,
                            opcode: name,
                            bytes: b.len() as u64,
                            limit: self.limits.max_int_bytes,
                        });
                    }
                }
                self.stack.push(None);
            }
            // Everything else pushes one object: a literal string, or something else.
            _ => {
                // The strings the machine turns into `str` (see `Vm::run`).
                let text = match (code, arg) {
                    (
                        OpCode::Binunicode
                        | OpCode::ShortBinunicode
                        | OpCode::Binunicode8
                        | OpCode::ShortBinstring
                        | OpCode::Binstring,
                        Arg::Bytes(b),
                    ) => std::str::from_utf8(b).ok().map(Rc::from),
                    (OpCode::String, Arg::Line(l)) => decode_string_literal(l)
                        .and_then(|b| String::from_utf8(b).ok())
                        .map(Rc::from),
                    (OpCode::Unicode, Arg::Line(l)) => decode_raw_unicode_escape(l).map(Rc::from),
                    _ => None,
                };
                self.stack.push(text);
            }
        }
        if self.stack.len() > self.limits.max_stack {
            return Err(PickleError::StackOverflow {
                offset: off,
                limit: self.limits.max_stack,
            });
        }
        Ok(false)
    }
}

/// Scans the pickle at the start of `bytes`; also returns the offset after its STOP, `None`
/// when the walk could not reach one.
pub fn scan_prefix(bytes: &[u8]) -> (ScanReport, Option<usize>) {
    let mut s = Scanner {
        limits: Limits::default(),
        stack: Vec::new(),
        marks: Vec::new(),
        memo: Memo::new(bytes.len()),
        seen: HashSet::new(),
        reasons: Vec::new(),
        more_reasons: 0,
        unsupported: Vec::new(),
        counts: [0; 256],
        report: ScanReport::with_verdict(Verdict::Safe),
    };
    let mut pos = 0usize;
    let end = loop {
        let step = read_op(bytes, pos).and_then(|(code, name, arg, next)| {
            s.counts[usize::from(code as u8)] += 1;
            let off = pos;
            pos = next;
            s.step(code, name, arg, off, bytes.len() - next)
        });
        match step {
            Ok(true) => break Some(pos),
            Ok(false) => {}
            Err(e) => {
                s.report.verdict = Verdict::Invalid(e.to_string());
                break None;
            }
        }
    };
    let mut report = s.report;
    for (code, &n) in s.counts.iter().enumerate() {
        if let Some(name) = opcode_name(code as u8).filter(|_| n > 0) {
            report.opcodes.insert(name.to_string(), n);
        }
    }
    for r in s.unsupported {
        report.add_unsupported(r);
    }
    for r in s.reasons {
        report.add_unsafe(r);
    }
    if s.more_reasons > 0 {
        report.add_unsafe(format!("... and {} more", s.more_reasons));
    }
    (report, end)
}
