//! What every fuzz target that can reach the PyTorch reader checks (the pickle target through
//! legacy files, the zip target through archives), written once so the two cannot drift apart.
//! Both targets also include `alloc.rs` (the counting allocator) at their root.

use tantra_formats::detect::{detect_bytes, Detected, DETECT_PREFIX};
use tantra_formats::pytorch::{scan_bytes, PytorchFile};
use tantra_formats::{Format, TensorSource};

/// Scans `data` as `tantra scan` would (it must not panic, and a PyTorch file it calls safe
/// must open) and, when it opens as a PyTorch
/// file, checks that every tensor is served at its declared size and that streaming it gives
/// the same bytes as `tensor_bytes`.
pub fn check_pytorch_file(data: &[u8]) {
    let report = crate::alloc::within_budget("scan_bytes", data.len(), || scan_bytes(data));
    // Opening flattens the pickle: its budget has flattening's larger constant.
    let opened = crate::alloc::within(
        "PytorchFile::from_bytes",
        data.len(),
        crate::alloc::FLATTEN_FIXED,
        || PytorchFile::from_bytes(data.to_vec()),
    );
    // `scan` goes through the same container parse as `open`: a PyTorch file that does not
    // open is never `safe`.
    let head = &data[..data.len().min(DETECT_PREFIX)];
    let container = matches!(
        detect_bytes(head),
        Detected::Weights(Format::PytorchZip | Format::PytorchLegacy)
    );
    if let (true, Ok(r), Err(e)) = (container, &report, &opened) {
        assert!(!r.is_safe(), "scan says safe, open refuses: {e}");
    }
    let Ok(f) = opened else {
        return;
    };
    for (i, t) in f.tensors().iter().enumerate() {
        let b = f
            .tensor_bytes(i)
            .expect("an opened file serves its tensors");
        assert_eq!(Some(b.len() as u64), t.byte_len(), "{}", t.name);
        let mut streamed = Vec::new();
        f.stream_tensor(i, &mut |c| {
            streamed.extend_from_slice(c);
            Ok(())
        })
        .expect("streams");
        assert!(streamed == b.as_ref());
    }
}
