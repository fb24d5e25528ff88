//! The globals a pickle may name: a short allowlist of tokens (containers, torch's tensor rebuild
//! functions, storage classes, dtypes, numpy reconstructors), the legal tensor kinds tantra does
//! not read, and the refusal of everything else at the opcode that names it.

use crate::dtype::DType;

use super::object::{ElementType, StorageKind};
use super::PickleError;

/// An allowlisted global: a token, never a resolved Python object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Global {
    OrderedDict,
    /// `torch._utils._rebuild_tensor` (1), `_v2` (2), `_v3` (3).
    RebuildTensor(u8),
    /// `torch._utils._rebuild_parameter` (`with_state`: `_rebuild_parameter_with_state`).
    RebuildParameter {
        with_state: bool,
    },
    /// `torch._tensor._rebuild_from_type_v2`.
    RebuildFromTypeV2,
    /// A storage class, usable only inside a persistent id.
    Storage(StorageKind),
    /// A dtype (`torch.float8_e4m3fn`).
    DType(ElementType),
    /// `torch.Tensor` or `torch.nn.parameter.Parameter`, usable only as the type argument of
    /// `_rebuild_from_type_v2`.
    TensorType,
    Size,
    Device,
    CodecsEncode,
    Set,
    FrozenSet,
    NumpyReconstruct,
    NumpyNdarray,
    NumpyDtype,
    NumpyScalar,
}

impl Global {
    pub(super) fn is_class(self) -> bool {
        matches!(
            self,
            Global::OrderedDict | Global::Size | Global::Device | Global::Set | Global::FrozenSet
        )
    }
}

pub(super) const TORCH_DTYPES: &[(&str, ElementType)] = &[
    ("float64", ElementType::DType(DType::F64)),
    ("float32", ElementType::DType(DType::F32)),
    ("float16", ElementType::DType(DType::F16)),
    ("bfloat16", ElementType::DType(DType::BF16)),
    ("int64", ElementType::DType(DType::I64)),
    ("int32", ElementType::DType(DType::I32)),
    ("int16", ElementType::DType(DType::I16)),
    ("int8", ElementType::DType(DType::I8)),
    ("uint8", ElementType::DType(DType::U8)),
    ("uint16", ElementType::DType(DType::U16)),
    ("uint32", ElementType::DType(DType::U32)),
    ("uint64", ElementType::DType(DType::U64)),
    ("bool", ElementType::DType(DType::Bool)),
    ("complex64", ElementType::DType(DType::C64)),
    ("complex128", ElementType::Complex128),
    ("float8_e4m3fn", ElementType::DType(DType::F8E4M3)),
    ("float8_e5m2", ElementType::DType(DType::F8E5M2)),
    ("float8_e4m3fnuz", ElementType::DType(DType::F8E4M3Fnuz)),
    ("float8_e5m2fnuz", ElementType::DType(DType::F8E5M2Fnuz)),
    ("float8_e8m0fnu", ElementType::DType(DType::F8E8M0)),
    // One element is one byte holding two 4-bit values: the view arithmetic counts bytes, and
    // the tensor's last dimension doubles when it becomes safetensors `F4`.
    ("float4_e2m1fn_x2", ElementType::DType(DType::F4)),
];

pub(super) const STORAGE_CLASSES: &[(&str, ElementType)] = &[
    ("DoubleStorage", ElementType::DType(DType::F64)),
    ("FloatStorage", ElementType::DType(DType::F32)),
    ("HalfStorage", ElementType::DType(DType::F16)),
    ("BFloat16Storage", ElementType::DType(DType::BF16)),
    ("LongStorage", ElementType::DType(DType::I64)),
    ("IntStorage", ElementType::DType(DType::I32)),
    ("ShortStorage", ElementType::DType(DType::I16)),
    ("CharStorage", ElementType::DType(DType::I8)),
    ("ByteStorage", ElementType::DType(DType::U8)),
    ("BoolStorage", ElementType::DType(DType::Bool)),
    ("ComplexFloatStorage", ElementType::DType(DType::C64)),
    ("ComplexDoubleStorage", ElementType::Complex128),
];

/// The torch name of an element type (`float32`, `complex128`).
pub fn torch_dtype_name(e: ElementType) -> &'static str {
    TORCH_DTYPES
        .iter()
        .find(|(_, t)| *t == e)
        .map(|(n, _)| *n)
        .unwrap_or("unknown")
}

/// Why a global is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GlobalRefusal {
    /// Not on the allowlist.
    Forbidden,
    /// The name part has dots (an attribute path).
    Dotted,
    /// A model class: the file is a whole pickled module.
    WholeModule,
    /// A legal tensor kind that tantra does not read (`quantized`, `sparse`, `meta`,
    /// `nested`): torch loads it safely; it is not an attack.
    UnsupportedKind(&'static str),
}

/// torch's globals for tensor kinds other than dense strided tensors, with the kind they
/// belong to. They are on torch's own weights_only allowlist: safe, but not read here.
pub(super) const UNSUPPORTED_KINDS: &[(&str, &str, &str)] = &[
    ("torch._utils", "_rebuild_qtensor", "quantized"),
    ("torch", "QUInt8Storage", "quantized"),
    ("torch", "QInt8Storage", "quantized"),
    ("torch", "QInt32Storage", "quantized"),
    ("torch", "QUInt4x2Storage", "quantized"),
    ("torch", "QUInt2x4Storage", "quantized"),
    ("torch", "quint8", "quantized"),
    ("torch", "qint8", "quantized"),
    ("torch", "qint32", "quantized"),
    ("torch", "quint4x2", "quantized"),
    ("torch", "quint2x4", "quantized"),
    ("torch", "per_tensor_affine", "quantized"),
    ("torch", "per_channel_affine", "quantized"),
    ("torch", "per_channel_affine_float_qparams", "quantized"),
    ("torch._utils", "_rebuild_sparse_tensor", "sparse"),
    ("torch._utils", "_rebuild_sparse_csr_tensor", "sparse"),
    ("torch.serialization", "_get_layout", "sparse"),
    ("torch", "sparse_coo", "sparse"),
    ("torch", "sparse_csr", "sparse"),
    ("torch", "sparse_csc", "sparse"),
    ("torch", "sparse_bsr", "sparse"),
    ("torch", "sparse_bsc", "sparse"),
    ("torch._utils", "_rebuild_meta_tensor_no_storage", "meta"),
    ("torch._utils", "_rebuild_nested_tensor", "nested"),
];

/// Looks `module.name` up in the allowlist.
///
/// # Errors
/// Why the global is refused.
pub fn classify_global(module: &str, name: &str) -> Result<Global, GlobalRefusal> {
    if name.contains('.') {
        return Err(GlobalRefusal::Dotted);
    }
    let g = match (module, name) {
        ("collections", "OrderedDict") => Global::OrderedDict,
        ("torch._utils", "_rebuild_tensor") => Global::RebuildTensor(1),
        ("torch._utils", "_rebuild_tensor_v2") => Global::RebuildTensor(2),
        ("torch._utils", "_rebuild_tensor_v3") => Global::RebuildTensor(3),
        ("torch._utils", "_rebuild_parameter") => Global::RebuildParameter { with_state: false },
        ("torch._utils", "_rebuild_parameter_with_state") => {
            Global::RebuildParameter { with_state: true }
        }
        ("torch._tensor", "_rebuild_from_type_v2") => Global::RebuildFromTypeV2,
        ("torch", "Tensor") | ("torch._tensor", "Tensor") => Global::TensorType,
        ("torch.nn.parameter", "Parameter") => Global::TensorType,
        ("torch", "Size") => Global::Size,
        ("torch", "device") => Global::Device,
        ("_codecs", "encode") => Global::CodecsEncode,
        ("builtins" | "__builtin__", "set") => Global::Set,
        ("builtins" | "__builtin__", "frozenset") => Global::FrozenSet,
        ("numpy.core.multiarray" | "numpy._core.multiarray", "_reconstruct") => {
            Global::NumpyReconstruct
        }
        ("numpy.core.multiarray" | "numpy._core.multiarray", "scalar") => Global::NumpyScalar,
        ("numpy", "ndarray") => Global::NumpyNdarray,
        ("numpy", "dtype") => Global::NumpyDtype,
        ("torch" | "torch.storage", "UntypedStorage") => Global::Storage(StorageKind::Untyped),
        ("torch" | "torch.cuda", n) if STORAGE_CLASSES.iter().any(|(c, _)| *c == n) => {
            let e = STORAGE_CLASSES
                .iter()
                .find(|(c, _)| *c == n)
                .map(|(_, e)| *e)
                .ok_or(GlobalRefusal::Forbidden)?;
            Global::Storage(StorageKind::Typed(e))
        }
        ("torch", n) if TORCH_DTYPES.iter().any(|(d, _)| *d == n) => {
            let e = TORCH_DTYPES
                .iter()
                .find(|(d, _)| *d == n)
                .map(|(_, e)| *e)
                .ok_or(GlobalRefusal::Forbidden)?;
            Global::DType(e)
        }
        _ if UNSUPPORTED_KINDS
            .iter()
            .any(|(m, n, _)| *m == module && *n == name) =>
        {
            let kind = UNSUPPORTED_KINDS
                .iter()
                .find(|(m, n, _)| *m == module && *n == name)
                .map_or("unknown", |(_, _, k)| *k);
            return Err(GlobalRefusal::UnsupportedKind(kind));
        }
        _ => {
            let model_class = module == "__main__"
                || module.starts_with("torch.nn.modules")
                || module.starts_with("torch.nn.parallel")
                || module.starts_with("torch.jit");
            return Err(if model_class {
                GlobalRefusal::WholeModule
            } else {
                GlobalRefusal::Forbidden
            });
        }
    };
    Ok(g)
}

pub(super) fn refusal_error(
    offset: usize,
    module: &str,
    name: &str,
    r: GlobalRefusal,
) -> PickleError {
    let global = format!("{module}.{name}");
    match r {
        GlobalRefusal::Forbidden => PickleError::ForbiddenGlobal { offset, global },
        GlobalRefusal::Dotted => PickleError::DottedName { offset, global },
        GlobalRefusal::WholeModule => PickleError::WholeModule {
            offset,
            class: global,
        },
        GlobalRefusal::UnsupportedKind(kind) => PickleError::UnsupportedTensorKind {
            offset,
            global,
            kind,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowlist() {
        assert_eq!(
            classify_global("collections", "OrderedDict"),
            Ok(Global::OrderedDict)
        );
        assert_eq!(
            classify_global("torch", "float8_e4m3fn"),
            Ok(Global::DType(ElementType::DType(DType::F8E4M3)))
        );
        assert_eq!(
            classify_global("posix", "system"),
            Err(GlobalRefusal::Forbidden)
        );
        assert_eq!(
            classify_global("torch._utils", "_rebuild_tensor_v2.__globals__"),
            Err(GlobalRefusal::Dotted)
        );
        assert_eq!(
            classify_global("torch.nn.modules.linear", "Linear"),
            Err(GlobalRefusal::WholeModule)
        );
        assert_eq!(
            classify_global("torch.storage", "_load_from_bytes"),
            Err(GlobalRefusal::Forbidden)
        );
    }
}
