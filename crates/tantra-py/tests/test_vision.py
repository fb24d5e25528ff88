"""The image models from Python, on the committed sample weights of the repository's Model/
root (loaded read-only, hash-checked): every image form gives the same result, the image
matters, bad images raise."""

import pathlib
import struct
import zlib

import numpy as np
import pytest

import tantra

ROOT = pathlib.Path(__file__).resolve().parents[3] / "Model"


def png_bytes(rgb: np.ndarray) -> bytes:
    """A minimal RGB PNG (8-bit, no filter), written by hand: no imaging library needed."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def gradient(h=48, w=64):
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 4 % 256, y * 5 % 256, (x + y) % 256], axis=-1).astype(np.uint8)


def test_ocr_same_result_for_every_image_form(tmp_path):
    ocr = tantra.OcrRuntime(root=ROOT)
    img = gradient()
    path = tmp_path / "line.png"
    path.write_bytes(png_bytes(img))
    a = ocr.recognize(img)
    assert a["logits"].dtype == np.float32 and a["logits"].ndim == 2
    assert len(a["frame_classes"]) == a["logits"].shape[0]
    assert a["frame_classes"] == a["logits"].argmax(axis=1).tolist()
    for form in (str(path), path, path.read_bytes()):
        b = ocr.recognize(form)
        assert b["text"] == a["text"]
        assert np.array_equal(b["logits"], a["logits"])
    other = ocr.recognize(255 - img)
    assert not np.array_equal(other["logits"], a["logits"])


def test_multimodal_image_changes_the_output_and_is_deterministic():
    mm = tantra.MultimodalRuntime(root=ROOT)
    img = gradient(64, 64)
    t = mm.image_tokens(img)
    assert t.dtype == np.float32 and t.ndim == 2 and np.isfinite(t).all()
    assert np.array_equal(mm.image_tokens(png_bytes(img)), t)
    a = mm.generate("a ", image=img, max_new_tokens=6)
    assert a == mm.generate("a ", image=img, max_new_tokens=6)
    assert a["prompt_ids"][0] == 257 and len(a["ids"]) <= 6
    assert not np.array_equal(mm.image_tokens(255 - img), t)


def test_bad_images_and_wrong_models_raise(tmp_path):
    ocr = tantra.OcrRuntime(root=ROOT)
    with pytest.raises(tantra.BadFileError, match="not a PNG or JPEG"):
        ocr.recognize(b"hello")
    notpng = tmp_path / "x.png"
    notpng.write_bytes(b"hello")
    with pytest.raises(tantra.TantraError, match="x.png"):
        ocr.recognize(notpng)
    with pytest.raises(ValueError, match="channels"):
        ocr.recognize(np.zeros((4, 4, 2), dtype=np.uint8))
    with pytest.raises(TypeError, match="image must be"):
        ocr.recognize(3.5)
    with pytest.raises(tantra.TantraError, match="not ocr_native"):
        tantra.OcrRuntime("mamba", root=ROOT)
