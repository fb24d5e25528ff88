//! What a `.pt` archive will hold, decided before its first byte is written: the pickled
//! `data.pkl` (a flat `OrderedDict` or the source's nesting rebuilt), each storage's byte length,
//! and every refusal (names, dtypes, shapes), so that a refused write writes nothing.

use std::collections::{HashMap, HashSet};

use super::write_error::WriteError;
use crate::error::FormatError;
use crate::pickle::op::OpCode;
use crate::pickle::write::{Pickler, BATCH_SIZE};
use crate::structure::Structure;
use crate::tensor::TensorSource;

/// Everything decided before the first byte is written.
pub(crate) struct Plan {
    pub(crate) archive_name: String,
    pub(crate) data_pkl: Vec<u8>,
    /// Byte length of each tensor, in source order.
    pub(crate) byte_lens: Vec<u64>,
    pub(crate) total_bytes: u64,
}

impl Plan {
    pub(crate) fn new(src: &dyn TensorSource, archive_name: &str) -> Result<Plan, FormatError> {
        if archive_name.is_empty() || archive_name.contains(['/', '\\', '\0']) {
            return Err(WriteError::ArchiveName(archive_name.to_string()).into());
        }
        let mut names = HashSet::new();
        for name in src
            .tensors()
            .iter()
            .map(|t| t.name.as_str())
            .chain(src.values().keys().map(String::as_str))
        {
            if !names.insert(name) {
                return Err(WriteError::DuplicateName(name.to_string()).into());
            }
        }
        if let Some(structure) = src.structure().filter(|s| s.fits(src)) {
            return Plan::nested(src, archive_name, structure);
        }
        let mut p = Pickler::default();
        p.proto();
        p.global("collections", "OrderedDict")?;
        p.op(OpCode::EmptyTuple);
        p.op(OpCode::Reduce);
        p.memoize()?;
        let mut byte_lens = Vec::with_capacity(src.tensors().len());
        let mut total_bytes = 0u64;
        // Items: tensors in source order, then values in name order.
        let count = src
            .tensors()
            .len()
            .checked_add(src.values().len())
            .ok_or(WriteError::ArchiveTooLarge)?;
        let mut tensors = src.tensors().iter().enumerate();
        let mut values = src.values().iter();
        let mut done = 0usize;
        while done < count {
            let batch = (count - done).min(BATCH_SIZE);
            if batch > 1 {
                p.op(OpCode::Mark);
            }
            for _ in 0..batch {
                if let Some((key, info)) = tensors.next() {
                    p.str(&info.name)?;
                    let byte_len = p.source_tensor(key, info)?;
                    byte_lens.push(byte_len);
                    total_bytes = total_bytes
                        .checked_add(byte_len)
                        .ok_or(WriteError::ArchiveTooLarge)?;
                } else if let Some((name, value)) = values.next() {
                    p.str(name)?;
                    p.value(name, value)?;
                }
            }
            p.op(if batch > 1 {
                OpCode::Setitems
            } else {
                OpCode::Setitem
            });
            done += batch;
        }
        p.op(OpCode::Stop);
        Ok(Plan {
            archive_name: archive_name.to_string(),
            data_pkl: p.buf,
            byte_lens,
            total_bytes,
        })
    }
}

impl Plan {
    /// The plan for a source written with its nesting: the pickle rebuilds `structure` (dicts,
    /// `OrderedDict`s, lists, tuples) with each tensor and value where its leaf is; storages are
    /// still keyed and written in source order. `structure` fits `src` ([`Structure::fits`]).
    fn nested(
        src: &dyn TensorSource,
        archive_name: &str,
        structure: &Structure,
    ) -> Result<Plan, FormatError> {
        let by_name: HashMap<&str, usize> = src
            .tensors()
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.as_str(), i))
            .collect();
        let mut p = Pickler::default();
        p.proto();
        let mut byte_lens = vec![0u64; src.tensors().len()];
        p.node(&structure.root, src, &by_name, &mut byte_lens)?;
        p.op(OpCode::Stop);
        let total_bytes = byte_lens
            .iter()
            .try_fold(0u64, |a, &b| a.checked_add(b))
            .ok_or(WriteError::ArchiveTooLarge)?;
        Ok(Plan {
            archive_name: archive_name.to_string(),
            data_pkl: p.buf,
            byte_lens,
            total_bytes,
        })
    }
}
