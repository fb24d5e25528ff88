//! What every fuzz target that can reach the PyTorch reader checks (the pickle target through
//! legacy files, the zip target through archives), written once so the two cannot drift apart.

use tantra_formats::pytorch::{scan_bytes, PytorchFile};
use tantra_formats::TensorSource;

/// Scans `data` as `tantra scan` would (it must not panic) and, when it opens as a PyTorch
/// file, checks that every tensor is served at its declared size and that streaming it gives
/// the same bytes as `tensor_bytes`.
pub fn check_pytorch_file(data: &[u8]) {
    let _ = scan_bytes(data);
    let Ok(f) = PytorchFile::from_bytes(data.to_vec()) else {
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
