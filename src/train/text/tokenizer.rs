//! Caption tokenization with the `tokenizers` crate: an HF `tokenizer.json` as published, or
//! the BERT pipeline (BertNormalizer → BertPreTokenizer → WordPiece → `[CLS] … [SEP]`) around a
//! bare `vocab.txt`. Padding is done by the batcher; truncation keeps `[SEP]`.

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{Tokenizer, TruncationParams};

/// One tokenized caption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    /// Token ids, with special tokens.
    pub ids: Vec<i64>,
    /// 1 for ordinary words, 0 for special tokens (`[CLS]`, `[SEP]`): the RWA word mask.
    pub word: Vec<u8>,
}

/// Thread-safe tokenizer.
pub struct TextTokenizer {
    inner: Tokenizer,
    /// Id used for padding.
    pub pad_id: i64,
}

impl TextTokenizer {
    /// Loads `tokenizer.json` (any other file name is taken as a WordPiece `vocab.txt`).
    pub fn from_file(path: &Path, max_len: usize, lowercase: bool) -> Result<Self> {
        let is_json = path.extension().is_some_and(|e| e == "json");
        let mut inner = if is_json {
            Tokenizer::from_file(path)
                .map_err(|e| anyhow!("cannot load tokenizer {}: {e}", path.display()))?
        } else {
            let vocab = path.to_str().context("vocab path is not UTF-8")?;
            if !path.exists() {
                anyhow::bail!("vocab file {} does not exist", path.display());
            }
            let wp = WordPiece::from_file(vocab)
                .unk_token("[UNK]".into())
                .build()
                .map_err(|e| anyhow!("cannot load vocab {}: {e}", path.display()))?;
            let mut t = Tokenizer::new(wp);
            let cls = t.token_to_id("[CLS]").context("vocab lacks [CLS]")?;
            let sep = t.token_to_id("[SEP]").context("vocab lacks [SEP]")?;
            t.with_normalizer(Some(BertNormalizer::new(true, true, None, lowercase)))
                .map_err(|e| anyhow!("{e}"))?;
            t.with_pre_tokenizer(Some(BertPreTokenizer));
            t.with_post_processor(Some(BertProcessing::new(
                ("[SEP]".into(), sep),
                ("[CLS]".into(), cls),
            )));
            t
        };
        inner.with_padding(None);
        inner
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                ..Default::default()
            }))
            .map_err(|e| anyhow!("{e}"))?;
        let pad_id = inner.token_to_id("[PAD]").unwrap_or(0) as i64;
        Ok(Self { inner, pad_id })
    }

    /// Tokenizes one caption.
    pub fn encode(&self, text: &str) -> Result<Tokens> {
        let e = self
            .inner
            .encode(text, true)
            .map_err(|e| anyhow!("tokenize {text:?}: {e}"))?;
        Ok(Tokens {
            ids: e.get_ids().iter().map(|&i| i as i64).collect(),
            word: e
                .get_special_tokens_mask()
                .iter()
                .map(|&s| u8::from(s == 0))
                .collect(),
        })
    }

    /// Vocabulary size (with added tokens).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}
