//! What a pickle can do wrong: the one error type of the reader, the scanner and the flattening,
//! each variant naming the opcode offset or the dotted name where the rule broke.

/// A rule of the safe pickle reader that the input breaks. `offset` is the byte offset of the
/// opcode in the pickle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PickleError {
    #[error("opcode {opcode} at offset {offset}: argument cut short by the end of the input")]
    Truncated { offset: usize, opcode: &'static str },
    #[error("opcode {opcode} at offset {offset}: length {len} is beyond the {remaining} bytes that remain")]
    LengthBeyondEnd {
        offset: usize,
        opcode: &'static str,
        len: u64,
        remaining: u64,
    },
    #[error("opcode {opcode} at offset {offset}: negative length")]
    NegativeLength { offset: usize, opcode: &'static str },
    #[error("the input ends at offset {offset} without a STOP opcode")]
    MissingStop { offset: usize },
    #[error("{count} bytes after the STOP opcode at offset {offset}")]
    TrailingBytes { offset: usize, count: usize },
    #[error("unknown opcode 0x{byte:02x} at offset {offset}")]
    UnknownOpcode { offset: usize, byte: u8 },
    #[error("PROTO at offset {offset}: protocol {version} is not supported (0 to 5 are)")]
    UnsupportedProtocol { offset: usize, version: u64 },
    #[error("global `{global}` at offset {offset} is not on the allowlist of inert globals; refusing to load it")]
    ForbiddenGlobal { offset: usize, global: String },
    #[error("this is a whole pickled module (class {class}, at offset {offset}), not a state dict; save model.state_dict() instead")]
    WholeModule { offset: usize, class: String },
    #[error("unsupported tensor kind ({kind}): global `{global}` at offset {offset}; torch loads it safely, but tantra reads only dense tensors")]
    UnsupportedTensorKind {
        offset: usize,
        global: String,
        kind: &'static str,
    },
    #[error("global `{global}` at offset {offset}: dotted attribute paths are refused")]
    DottedName { offset: usize, global: String },
    #[error("STACK_GLOBAL at offset {offset}: its operands are not literal strings")]
    NonLiteralStackGlobal { offset: usize },
    #[error("{opcode} at offset {offset}: the extension registry is refused")]
    ExtensionRegistry { offset: usize, opcode: &'static str },
    #[error("{opcode} at offset {offset}: instantiating classes by name is refused")]
    InstObj { offset: usize, opcode: &'static str },
    #[error("PERSID at offset {offset}: text persistent ids are refused (torch uses BINPERSID)")]
    TextPersistentId { offset: usize },
    #[error("{opcode} at offset {offset}: out-of-band buffers are refused")]
    OutOfBandBuffer { offset: usize, opcode: &'static str },
    #[error("BUILD at offset {offset} on {target}: BUILD is allowed only on an OrderedDict, a tensor or numpy data")]
    BuildTarget { offset: usize, target: String },
    #[error("tensor state at offset {offset}: {why}; torch and tantra would read different data, so the file is ambiguous")]
    AmbiguousTensorState { offset: usize, why: String },
    #[error("{opcode} at offset {offset}: {text:?} is not a plain decimal integer (Python's and C's unpicklers read it differently)")]
    AmbiguousInteger {
        offset: usize,
        opcode: &'static str,
        text: String,
    },
    #[error("{opcode} at offset {offset} on {target}: items can be set only on a dict")]
    SetItemTarget {
        offset: usize,
        opcode: &'static str,
        target: &'static str,
    },
    #[error("{opcode} at offset {offset} on {target}: items can be appended only to a list")]
    AppendTarget {
        offset: usize,
        opcode: &'static str,
        target: &'static str,
    },
    #[error("ADDITEMS at offset {offset} on {target}: items can be added only to a set")]
    AddItemsTarget { offset: usize, target: &'static str },
    #[error(
        "{opcode} at offset {offset}: an odd number of stack items cannot form key/value pairs"
    )]
    OddItems { offset: usize, opcode: &'static str },
    #[error("BINPERSID at offset {offset}: {why}")]
    PersistentId { offset: usize, why: String },
    #[error("BINPERSID at offset {offset}: this pickle may not refer to storages")]
    NoPersistentIds { offset: usize },
    #[error("BINPERSID at offset {offset}: storage key {key:?} is not a plain name ([A-Za-z0-9_], at most 64 characters)")]
    StorageKey { offset: usize, key: String },
    #[error("{opcode} at offset {offset}: memo index {index} was never stored")]
    MemoMissing {
        offset: usize,
        opcode: &'static str,
        index: u64,
    },
    #[error("opcode at offset {offset}: more than {limit} objects (the budget is one object per 2 bytes of pickle, and at most 16 million)")]
    NodeBudget { offset: usize, limit: usize },
    #[error("opcode at offset {offset}: the stack grows past {limit} items")]
    StackOverflow { offset: usize, limit: usize },
    #[error("MARK at offset {offset}: more than {limit} nested marks")]
    TooManyMarks { offset: usize, limit: usize },
    #[error("{opcode} at offset {offset}: stack underflow")]
    StackUnderflow { offset: usize, opcode: &'static str },
    #[error("{opcode} at offset {offset}: no MARK to pop to")]
    NoMark { offset: usize, opcode: &'static str },
    #[error("{opcode} at offset {offset}: {what} is not an allowlisted callable")]
    NotCallable {
        offset: usize,
        opcode: &'static str,
        what: String,
    },
    #[error("call of {callable} at offset {offset}: {why}")]
    BadArguments {
        offset: usize,
        callable: String,
        why: String,
    },
    #[error("tensor rebuilt at offset {offset}: {why}")]
    BadTensorView { offset: usize, why: String },
    #[error("tensor rebuilt at offset {offset}: its view reaches element {max_index} of a storage of {elements} elements")]
    ViewOutOfBounds {
        offset: usize,
        max_index: u64,
        elements: u64,
    },
    #[error("{opcode} at offset {offset}: a {bytes}-byte integer is longer than the {limit} bytes allowed")]
    IntegerTooLong {
        offset: usize,
        opcode: &'static str,
        bytes: u64,
        limit: usize,
    },
    #[error("{opcode} at offset {offset}: string is not valid UTF-8")]
    InvalidUtf8 { offset: usize, opcode: &'static str },
    #[error("{opcode} at offset {offset}: malformed text argument")]
    BadText { offset: usize, opcode: &'static str },
    #[error("at {path:?}: nesting deeper than {limit} levels")]
    TooDeep { path: String, limit: usize },
    #[error("at {path:?}: the object contains itself (a cycle through the memo)")]
    Cycle { path: String },
    #[error("the object tree expands to more than {limit} entries (shared nodes repeated)")]
    ExpansionBudget { limit: usize },
    #[error("the dotted names of the object tree exceed {limit} bytes in total (a long key reached through shared nodes?)")]
    NameBudget { limit: usize },
    #[error("the str and bytes values of the object tree exceed {limit} bytes in total (a long string reached through many names?)")]
    ValueBudget { limit: usize },
    #[error("two entries flatten to the name {name:?}")]
    DuplicateName { name: String },
    #[error("at {path:?}: a dict key of type {kind} cannot be part of a name")]
    BadKey { path: String, kind: &'static str },
    #[error("tensor {name:?}: dtype {dtype} has no safetensors equivalent")]
    UnsupportedDType { name: String, dtype: &'static str },
    #[error("at {name:?}: {what} is not data")]
    NotData { name: String, what: String },
}
