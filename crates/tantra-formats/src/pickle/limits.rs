//! The budgets of the pickle reader: caps on stack, marks, nodes, nesting and output, most of
//! them growing with the input so that no pickle costs more than a small multiple of its size.

/// Budgets that grow with the input, as (per input byte as a fraction `num / den`, plus a
/// fixed allowance). A node costs 32 bytes; pickles that torch writes spend at least two bytes
/// per node (an int is `K` and a byte, a container is memoized), so one node per two bytes
/// keeps the arena under 16 bytes per input byte while no real file comes near it.
pub(super) const NODES_PER_BYTE: (usize, usize, usize) = (1, 2, 4096);
/// Flattening visits each node once, plus shared nodes again: one visit per two bytes (each
/// visit may make a name), plus room for tied tensors.
pub(super) const VISITS_PER_BYTE: (usize, usize, usize) = (1, 2, 1 << 16);
/// Name bytes: dotted names repeat their prefixes, so they outgrow the input (a list of ints
/// in a nested optimizer state makes ~35 name bytes per 2 input bytes).
pub(super) const NAME_BYTES_PER_BYTE: (usize, usize, usize) = (16, 1, 16 << 20);
/// Bytes of str/bytes values: each value is copied out once per name it is reached by.
pub(super) const VALUE_BYTES_PER_BYTE: (usize, usize, usize) = (2, 1, 1 << 20);

/// `len * num / den + extra`, saturating.
pub(super) fn per_input(len: usize, (num, den, extra): (usize, usize, usize)) -> usize {
    (len / den).saturating_mul(num).saturating_add(extra)
}

/// Caps on the resources a pickle may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Objects in the arena (at most `u32::MAX`).
    pub max_nodes: usize,
    /// Items on the stack.
    pub max_stack: usize,
    /// Nested MARKs.
    pub max_marks: usize,
    /// Nesting depth when the tree is walked ([`super::Pickle::flatten`]).
    pub max_depth: usize,
    /// Nodes visited when the tree is walked (a shared node counts each time it is reached).
    pub max_visits: usize,
    /// Bytes of a `LONG1`/`LONG4` integer.
    pub max_int_bytes: usize,
    /// Total bytes of the dotted names the walk builds (a long key shared at every level of a
    /// deep tree would otherwise multiply).
    pub max_name_bytes: usize,
    /// Total bytes of the str and bytes values the walk copies out (a long string reached by
    /// many names is copied for each).
    pub max_value_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_nodes: 1 << 24,
            max_stack: 1 << 20,
            max_marks: 1 << 16,
            max_depth: 1000,
            max_visits: 1 << 24,
            max_int_bytes: 256,
            max_name_bytes: 1 << 28,
            max_value_bytes: 1 << 28,
        }
    }
}

/// Which persistent ids (`BINPERSID`) a pickle may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PersistentIds {
    /// None at all (the header pickles of legacy files, bare pickles).
    Forbidden,
    /// `('storage', cls, key, location, numel)`: zip archives.
    Zip,
    /// `('storage', cls, key, location, numel, view_metadata)`: legacy files.
    Legacy,
}

/// How to parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseOptions {
    pub persistent_ids: PersistentIds,
    pub limits: Limits,
}

impl ParseOptions {
    pub fn new(persistent_ids: PersistentIds) -> Self {
        ParseOptions {
            persistent_ids,
            limits: Limits::default(),
        }
    }
}
