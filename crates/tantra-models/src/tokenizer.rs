//! The byte-level tokenizer of the Mamba language models.
//!
//! Why bytes: every string has an encoding, nothing has to be trained or shipped beside the
//! weights, and the embedding stays small (264 x d instead of 50280 x d), which is what lets
//! the sample models fit in under a megabyte of parameters.
//!
//! | ids | tokens |
//! | --- | --- |
//! | `0..=255` | the byte with that value |
//! | `256` | `<pad>` |
//! | `257` | `<bos>` (begin of sequence) |
//! | `258` | `<eos>` (end of sequence) |
//! | `259` | `<image>` (marks where image tokens go in the multimodal model) |
//! | `260..=263` | `<reserved_0>` .. `<reserved_3>`: unused, pad the vocabulary to 264 = 33 x 8 |
//!
//! Encoding is the UTF-8 bytes of the text, nothing else (no normalization, no implicit
//! `<bos>`). Decoding drops special tokens and turns the bytes back into text lossily: invalid
//! UTF-8 becomes U+FFFD, as it must when a model emits half of a multi-byte character.

/// The byte-level tokenizer (stateless).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ByteTokenizer;

impl ByteTokenizer {
    pub const PAD: u32 = 256;
    pub const BOS: u32 = 257;
    pub const EOS: u32 = 258;
    pub const IMAGE: u32 = 259;
    /// First of the reserved (unused) ids.
    pub const RESERVED_START: u32 = 260;
    /// 256 bytes + 4 specials + 4 reserved: a multiple of 8.
    pub const VOCAB_SIZE: usize = 264;

    pub fn new() -> Self {
        ByteTokenizer
    }

    /// The vocabulary size, [`Self::VOCAB_SIZE`].
    pub fn vocab_size(&self) -> usize {
        Self::VOCAB_SIZE
    }

    /// The ids of `text`: its UTF-8 bytes.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        text.bytes().map(u32::from).collect()
    }

    /// `<bos>` followed by the bytes of `text`.
    pub fn encode_with_bos(&self, text: &str) -> Vec<u32> {
        let mut v = Vec::with_capacity(text.len() + 1);
        v.push(Self::BOS);
        v.extend(text.bytes().map(u32::from));
        v
    }

    /// The text of `ids`: byte tokens in order, specials and out-of-range ids skipped, invalid
    /// UTF-8 replaced by U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> = ids.iter().filter_map(|&id| u8::try_from(id).ok()).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// True for ids that are not bytes.
    pub fn is_special(&self, id: u32) -> bool {
        id >= 256
    }

    /// A printable name of one token: the character for printable ASCII, `<0xNN>` for other
    /// bytes, `<pad>`, `<bos>`, ... for specials, `None` outside the vocabulary.
    pub fn token_name(&self, id: u32) -> Option<String> {
        match id {
            0..=255 => {
                let b = id as u8;
                Some(if b.is_ascii_graphic() || b == b' ' {
                    char::from(b).to_string()
                } else {
                    format!("<0x{b:02X}>")
                })
            }
            Self::PAD => Some("<pad>".into()),
            Self::BOS => Some("<bos>".into()),
            Self::EOS => Some("<eos>".into()),
            Self::IMAGE => Some("<image>".into()),
            260..=263 => Some(format!("<reserved_{}>", id - Self::RESERVED_START)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_specials() {
        let t = ByteTokenizer::new();
        let ids = t.encode_with_bos("héllo");
        assert_eq!(ids[0], ByteTokenizer::BOS);
        assert_eq!(ids.len(), 1 + "héllo".len());
        let mut with_eos = ids.clone();
        with_eos.push(ByteTokenizer::EOS);
        assert_eq!(t.decode(&with_eos), "héllo");
        assert_eq!(t.vocab_size() % 8, 0);
    }

    #[test]
    fn decode_is_lossy_on_broken_utf8() {
        let t = ByteTokenizer::new();
        // First byte of "é" only.
        assert_eq!(t.decode(&[0x68, 0xC3]), "h\u{FFFD}");
        assert_eq!(t.decode(&[9999, 0x41]), "A");
    }

    #[test]
    fn names() {
        let t = ByteTokenizer::new();
        assert_eq!(t.token_name(65).as_deref(), Some("A"));
        assert_eq!(t.token_name(10).as_deref(), Some("<0x0A>"));
        assert_eq!(t.token_name(259).as_deref(), Some("<image>"));
        assert_eq!(t.token_name(263).as_deref(), Some("<reserved_3>"));
        assert_eq!(t.token_name(264), None);
    }
}
