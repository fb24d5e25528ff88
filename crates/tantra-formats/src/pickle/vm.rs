//! The pickle machine: runs opcodes over the inert object model, with the stack, marks and memo
//! of Python's unpickler and every length, count and depth capped. Calls (`REDUCE`, `BUILD`,
//! persistent ids) are interpreted in [`super::reduce`].

use super::allowlist::{classify_global, refusal_error};
use super::limits::{per_input, NODES_PER_BYTE};
use super::memo::Memo;
use super::object::{decode_long, FALSE, NONE, TRUE};
use super::op::{
    decode_raw_unicode_escape, decode_string_literal, memo_index, parse_decimal, read_op, Arg,
    OpCode,
};
use super::{pyeq, NodeId, Object, ParseOptions, Pickle, PickleError};

impl Pickle {
    /// Parses one pickle that fills `bytes` exactly.
    ///
    /// # Errors
    /// The first rule the pickle breaks, naming the opcode offset; bytes after STOP too.
    pub fn parse(bytes: &[u8], opts: &ParseOptions) -> Result<Pickle, PickleError> {
        let (p, end) = Pickle::parse_prefix(bytes, opts)?;
        if end != bytes.len() {
            return Err(PickleError::TrailingBytes {
                offset: end,
                count: bytes.len() - end,
            });
        }
        Ok(p)
    }

    /// Parses the pickle at the start of `bytes`; returns it and the offset after its STOP.
    ///
    /// # Errors
    /// The first rule the pickle breaks, naming the opcode offset.
    pub fn parse_prefix(bytes: &[u8], opts: &ParseOptions) -> Result<(Pickle, usize), PickleError> {
        let mut vm = Vm {
            data: bytes,
            opts,
            nodes: vec![Object::None, Object::Bool(false), Object::Bool(true)],
            stack: Vec::new(),
            marks: Vec::new(),
            memo: Memo::new(bytes.len()),
            off: 0,
            protocol: 0,
        };
        let (root, end) = vm.run()?;
        pyeq::fold_equal_keys(&mut vm.nodes);
        Ok((
            Pickle {
                nodes: vm.nodes,
                root,
                protocol: vm.protocol,
                len: end,
            },
            end,
        ))
    }
}

/// True for a storage key that is a plain name.
pub(super) fn plain_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 64
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}
pub(super) struct Vm<'a> {
    pub(super) data: &'a [u8],
    pub(super) opts: &'a ParseOptions,
    pub(super) nodes: Vec<Object>,
    pub(super) stack: Vec<NodeId>,
    pub(super) marks: Vec<usize>,
    pub(super) memo: Memo<NodeId>,
    /// Offset of the opcode being run.
    pub(super) off: usize,
    pub(super) protocol: u8,
}

impl Vm<'_> {
    pub(super) fn node(&self, id: NodeId) -> &Object {
        self.nodes.get(id.ix()).unwrap_or(&Object::None)
    }

    pub(super) fn alloc(&mut self, obj: Object) -> Result<NodeId, PickleError> {
        let limit = self
            .opts
            .limits
            .max_nodes
            .min(u32::MAX as usize)
            .min(per_input(self.data.len(), NODES_PER_BYTE));
        if self.nodes.len() >= limit {
            return Err(PickleError::NodeBudget {
                offset: self.off,
                limit,
            });
        }
        let id = NodeId(self.nodes.len() as u32);
        self.nodes.push(obj);
        Ok(id)
    }

    pub(super) fn push(&mut self, id: NodeId) -> Result<(), PickleError> {
        if self.stack.len() >= self.opts.limits.max_stack {
            return Err(PickleError::StackOverflow {
                offset: self.off,
                limit: self.opts.limits.max_stack,
            });
        }
        self.stack.push(id);
        Ok(())
    }

    pub(super) fn push_new(&mut self, obj: Object) -> Result<(), PickleError> {
        let id = self.alloc(obj)?;
        self.push(id)
    }

    pub(super) fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    pub(super) fn pop(&mut self, opcode: &'static str) -> Result<NodeId, PickleError> {
        if self.stack.len() <= self.floor() {
            return Err(PickleError::StackUnderflow {
                offset: self.off,
                opcode,
            });
        }
        self.stack.pop().ok_or(PickleError::StackUnderflow {
            offset: self.off,
            opcode,
        })
    }

    pub(super) fn top(&self, opcode: &'static str) -> Result<NodeId, PickleError> {
        if self.stack.len() <= self.floor() {
            return Err(PickleError::StackUnderflow {
                offset: self.off,
                opcode,
            });
        }
        self.stack
            .last()
            .copied()
            .ok_or(PickleError::StackUnderflow {
                offset: self.off,
                opcode,
            })
    }

    pub(super) fn pop_mark(&mut self, opcode: &'static str) -> Result<Vec<NodeId>, PickleError> {
        let m = self.marks.pop().ok_or(PickleError::NoMark {
            offset: self.off,
            opcode,
        })?;
        Ok(self.stack.split_off(m.min(self.stack.len())))
    }

    pub(super) fn memo_put(&mut self, index: u64, opcode: &'static str) -> Result<(), PickleError> {
        let top = self.top(opcode)?;
        // The memo grows by at most one entry per opcode, so its size is bounded by the input.
        self.memo.insert(index, top);
        Ok(())
    }

    pub(super) fn memo_get(&mut self, index: u64, opcode: &'static str) -> Result<(), PickleError> {
        let id = *self.memo.get(index).ok_or(PickleError::MemoMissing {
            offset: self.off,
            opcode,
            index,
        })?;
        self.push(id)
    }

    /// The text of `INT` or `LONG`, accepted only as Python writes it: an optional `-`, then
    /// `0` or digits without a leading zero. Python's `pickle.py` reads these with
    /// `int(text, 0)` (so `010` is an error and `0x10` is 16) and the C unpickler INT with
    /// `strtol(text, 0)` (`010` is 8): any other spelling means different numbers, or an
    /// error, to different loaders. (torch's own weights_only loader has neither opcode.)
    pub(super) fn plain_integer(
        &self,
        text: &[u8],
        opcode: &'static str,
    ) -> Result<i64, PickleError> {
        let digits = text.strip_prefix(b"-").unwrap_or(text);
        let plain = !digits.is_empty()
            && digits.iter().all(u8::is_ascii_digit)
            && (digits[0] != b'0' || digits.len() == 1);
        if !plain {
            return Err(PickleError::AmbiguousInteger {
                offset: self.off,
                opcode,
                text: String::from_utf8_lossy(text).into_owned(),
            });
        }
        parse_decimal(text).ok_or_else(|| self.bad_text(opcode))
    }

    /// A text argument (protocol 0) that does not parse.
    pub(super) fn bad_text(&self, opcode: &'static str) -> PickleError {
        PickleError::BadText {
            offset: self.off,
            opcode,
        }
    }

    pub(super) fn string(&self, bytes: &[u8], opcode: &'static str) -> Result<String, PickleError> {
        String::from_utf8(bytes.to_vec()).map_err(|_| PickleError::InvalidUtf8 {
            offset: self.off,
            opcode,
        })
    }

    pub(super) fn pairs(
        &self,
        items: Vec<NodeId>,
        opcode: &'static str,
    ) -> Result<Vec<(NodeId, NodeId)>, PickleError> {
        if !items.len().is_multiple_of(2) {
            return Err(PickleError::OddItems {
                offset: self.off,
                opcode,
            });
        }
        Ok(items.chunks(2).map(|c| (c[0], c[1])).collect())
    }

    pub(super) fn global(&mut self, module: &str, name: &str) -> Result<(), PickleError> {
        let g =
            classify_global(module, name).map_err(|r| refusal_error(self.off, module, name, r))?;
        self.push_new(Object::Global(
            g,
            format!("{module}.{name}").into_boxed_str(),
        ))
    }

    pub(super) fn run(&mut self) -> Result<(NodeId, usize), PickleError> {
        let mut pos = 0usize;
        loop {
            let (code, name, arg, next) = read_op(self.data, pos)?;
            self.off = pos;
            pos = next;
            let bytes = match arg {
                Arg::Bytes(b) | Arg::Line(b) => b,
                _ => &[],
            };
            let uarg = match arg {
                Arg::U(u) => u,
                _ => 0,
            };
            match code {
                OpCode::Stop => {
                    let root = self.pop(name)?;
                    return Ok((root, pos));
                }
                OpCode::Proto => {
                    if uarg > 5 {
                        return Err(PickleError::UnsupportedProtocol {
                            offset: self.off,
                            version: uarg,
                        });
                    }
                    self.protocol = uarg as u8;
                }
                OpCode::Frame => {
                    // FRAME: a hint for buffered readers; only its length is checked.
                    let remaining = (self.data.len() - pos) as u64;
                    if uarg > remaining {
                        return Err(PickleError::LengthBeyondEnd {
                            offset: self.off,
                            opcode: name,
                            len: uarg,
                            remaining,
                        });
                    }
                }
                OpCode::Mark => {
                    if self.marks.len() >= self.opts.limits.max_marks {
                        return Err(PickleError::TooManyMarks {
                            offset: self.off,
                            limit: self.opts.limits.max_marks,
                        });
                    }
                    self.marks.push(self.stack.len());
                }
                OpCode::Pop => {
                    if self.stack.len() > self.floor() {
                        self.stack.pop();
                    } else {
                        self.pop_mark(name)?;
                    }
                }
                OpCode::PopMark => {
                    self.pop_mark(name)?;
                }
                OpCode::Dup => {
                    let t = self.top(name)?;
                    self.push(t)?;
                }
                OpCode::None => self.push(NONE)?,
                OpCode::Newtrue => self.push(TRUE)?,
                OpCode::Newfalse => self.push(FALSE)?,
                OpCode::Binint1 | OpCode::Binint2 => self.push_new(Object::Int(uarg as i64))?,
                OpCode::Binint => {
                    if let Arg::I(i) = arg {
                        self.push_new(Object::Int(i))?;
                    }
                }
                OpCode::Binfloat => {
                    if let Arg::F(f) = arg {
                        self.push_new(Object::Float(f))?;
                    }
                }
                OpCode::Long1 | OpCode::Long4 => {
                    if bytes.len() > self.opts.limits.max_int_bytes {
                        return Err(PickleError::IntegerTooLong {
                            offset: self.off,
                            opcode: name,
                            bytes: bytes.len() as u64,
                            limit: self.opts.limits.max_int_bytes,
                        });
                    }
                    self.push_new(decode_long(bytes))?;
                }
                OpCode::Int => match bytes {
                    b"00" => self.push(FALSE)?,
                    b"01" => self.push(TRUE)?,
                    _ => {
                        let v = self.plain_integer(bytes, name)?;
                        self.push_new(Object::Int(v))?;
                    }
                },
                OpCode::Long => {
                    let digits = bytes.strip_suffix(b"L").unwrap_or(bytes);
                    let v = self.plain_integer(digits, name)?;
                    self.push_new(Object::Int(v))?;
                }
                OpCode::Float => {
                    let v: f64 = std::str::from_utf8(bytes)
                        .ok()
                        .and_then(|s| s.trim().parse().ok())
                        .ok_or_else(|| self.bad_text(name))?;
                    self.push_new(Object::Float(v))?;
                }
                OpCode::Binunicode | OpCode::ShortBinunicode | OpCode::Binunicode8 => {
                    let s = self.string(bytes, name)?;
                    self.push_new(Object::Str(s))?;
                }
                OpCode::Unicode => {
                    let s = decode_raw_unicode_escape(bytes).ok_or_else(|| self.bad_text(name))?;
                    self.push_new(Object::Str(s))?;
                }
                OpCode::Binstring | OpCode::ShortBinstring | OpCode::String => {
                    let raw = if code == OpCode::String {
                        decode_string_literal(bytes).ok_or_else(|| self.bad_text(name))?
                    } else {
                        bytes.to_vec()
                    };
                    // Python 2 `str`: text when it is UTF-8 (as torch loads it), else bytes.
                    let obj = match String::from_utf8(raw) {
                        Ok(s) => Object::Str(s),
                        Err(e) => Object::Bytes(e.into_bytes()),
                    };
                    self.push_new(obj)?;
                }
                OpCode::Binbytes
                | OpCode::ShortBinbytes
                | OpCode::Binbytes8
                | OpCode::Bytearray8 => self.push_new(Object::Bytes(bytes.to_vec()))?,
                OpCode::EmptyTuple => self.push_new(Object::Tuple(Vec::new()))?,
                OpCode::EmptyList => self.push_new(Object::List(Vec::new()))?,
                OpCode::EmptyDict => self.push_new(Object::Dict(Vec::new()))?,
                OpCode::EmptySet => self.push_new(Object::Set(Vec::new()))?,
                OpCode::Tuple => {
                    let items = self.pop_mark(name)?;
                    self.push_new(Object::Tuple(items))?;
                }
                OpCode::Tuple1 | OpCode::Tuple2 | OpCode::Tuple3 => {
                    let n = code.tuple_len();
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop(name)?);
                    }
                    items.reverse();
                    self.push_new(Object::Tuple(items))?;
                }
                OpCode::List => {
                    let items = self.pop_mark(name)?;
                    self.push_new(Object::List(items))?;
                }
                OpCode::Dict => {
                    let items = self.pop_mark(name)?;
                    let pairs = self.pairs(items, name)?;
                    self.push_new(Object::Dict(pairs))?;
                }
                OpCode::Frozenset => {
                    let items = self.pop_mark(name)?;
                    self.push_new(Object::FrozenSet(items))?;
                }
                OpCode::Append => {
                    let v = self.pop(name)?;
                    let target = self.top(name)?;
                    self.append(target, vec![v], name)?;
                }
                OpCode::Appends => {
                    let items = self.pop_mark(name)?;
                    let target = self.top(name)?;
                    self.append(target, items, name)?;
                }
                OpCode::Setitem => {
                    let v = self.pop(name)?;
                    let k = self.pop(name)?;
                    let target = self.top(name)?;
                    self.set_items(target, vec![(k, v)], name)?;
                }
                OpCode::Setitems => {
                    let items = self.pop_mark(name)?;
                    let pairs = self.pairs(items, name)?;
                    let target = self.top(name)?;
                    self.set_items(target, pairs, name)?;
                }
                OpCode::Additems => {
                    let items = self.pop_mark(name)?;
                    let target = self.top(name)?;
                    let kind = self.node(target).kind();
                    match self.nodes.get_mut(target.ix()) {
                        Some(Object::Set(v)) => v.extend(items),
                        _ => {
                            return Err(PickleError::AddItemsTarget {
                                offset: self.off,
                                target: kind,
                            })
                        }
                    }
                }
                OpCode::Get | OpCode::Binget | OpCode::LongBinget => {
                    let i = memo_index(arg, 0, code).ok_or_else(|| self.bad_text(name))?;
                    self.memo_get(i, name)?;
                }
                OpCode::Put | OpCode::Binput | OpCode::LongBinput | OpCode::Memoize => {
                    let i = memo_index(arg, self.memo.len(), code)
                        .ok_or_else(|| self.bad_text(name))?;
                    self.memo_put(i, name)?;
                }
                OpCode::Global => {
                    if let Arg::Lines(m, n) = arg {
                        let module = self.string(m, name)?;
                        let gname = self.string(n, name)?;
                        self.global(&module, &gname)?;
                    }
                }
                OpCode::StackGlobal => {
                    let n = self.pop(name)?;
                    let m = self.pop(name)?;
                    let (Object::Str(module), Object::Str(gname)) = (self.node(m), self.node(n))
                    else {
                        return Err(PickleError::NonLiteralStackGlobal { offset: self.off });
                    };
                    let (module, gname) = (module.clone(), gname.clone());
                    self.global(&module, &gname)?;
                }
                OpCode::Reduce => {
                    let args = self.pop(name)?;
                    let callable = self.pop(name)?;
                    let r = self.call(callable, args, false, name)?;
                    self.push(r)?;
                }
                OpCode::Newobj => {
                    let args = self.pop(name)?;
                    let cls = self.pop(name)?;
                    let r = self.call(cls, args, true, name)?;
                    self.push(r)?;
                }
                OpCode::NewobjEx => {
                    let kwargs = self.pop(name)?;
                    let args = self.pop(name)?;
                    let cls = self.pop(name)?;
                    let empty = matches!(self.node(kwargs), Object::Dict(d) if d.is_empty());
                    if !empty {
                        return Err(PickleError::BadArguments {
                            offset: self.off,
                            callable: "NEWOBJ_EX".into(),
                            why: "keyword arguments are not supported".into(),
                        });
                    }
                    let r = self.call(cls, args, true, name)?;
                    self.push(r)?;
                }
                OpCode::Build => self.build()?,
                OpCode::Binpersid => {
                    let pid = self.pop(name)?;
                    let s = self.persistent_load(pid)?;
                    self.push(s)?;
                }
                OpCode::Persid => return Err(PickleError::TextPersistentId { offset: self.off }),
                OpCode::Ext1 | OpCode::Ext2 | OpCode::Ext4 => {
                    return Err(PickleError::ExtensionRegistry {
                        offset: self.off,
                        opcode: name,
                    })
                }
                OpCode::Inst | OpCode::Obj => {
                    return Err(PickleError::InstObj {
                        offset: self.off,
                        opcode: name,
                    })
                }
                OpCode::NextBuffer | OpCode::ReadonlyBuffer => {
                    return Err(PickleError::OutOfBandBuffer {
                        offset: self.off,
                        opcode: name,
                    })
                }
            }
        }
    }
}
