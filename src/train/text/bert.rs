//! BERT encoder (Devlin et al. 2019), as Hugging Face `modeling_bert.py` builds it
//! (`BertEmbeddings`, `BertSelfAttention`, `BertSelfOutput`, `BertIntermediate`, `BertOutput`,
//! `BertLayer`). Parameter paths follow the HF attribute names so `model.safetensors` loads
//! with no rename table: `embeddings.word_embeddings.weight`,
//! `encoder.layer.N.attention.self.query.weight`, … The pooler is not used.

use serde::{Deserialize, Serialize};
use tch::{nn, Tensor};

use crate::train::layers::{self, Activation, Ctx};

/// `config.json` of a BERT model (HF field names).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BertConfig {
    /// Vocabulary size.
    pub vocab_size: i64,
    /// Hidden size.
    pub hidden_size: i64,
    /// Layers.
    pub num_hidden_layers: i64,
    /// Heads.
    pub num_attention_heads: i64,
    /// FFN size.
    pub intermediate_size: i64,
    /// FFN activation.
    #[serde(default)]
    pub hidden_act: Activation,
    /// Dropout after embeddings, attention output and FFN.
    #[serde(default = "p01")]
    pub hidden_dropout_prob: f64,
    /// Dropout on attention weights.
    #[serde(default = "p01")]
    pub attention_probs_dropout_prob: f64,
    /// Positions.
    #[serde(default = "p512")]
    pub max_position_embeddings: i64,
    /// Segment types.
    #[serde(default = "two")]
    pub type_vocab_size: i64,
    /// LayerNorm ε.
    #[serde(default = "eps12")]
    pub layer_norm_eps: f64,
    /// Padding id.
    #[serde(default)]
    pub pad_token_id: i64,
}

fn p01() -> f64 {
    0.1
}
fn p512() -> i64 {
    512
}
fn two() -> i64 {
    2
}
fn eps12() -> f64 {
    1e-12
}

struct Embeddings {
    word: nn::Embedding,
    position: nn::Embedding,
    token_type: nn::Embedding,
    ln: layers::LayerNorm,
    dropout: f64,
}

impl Embeddings {
    fn new(p: nn::Path, c: &BertConfig) -> Self {
        Self {
            word: layers::embedding(&p / "word_embeddings", c.vocab_size, c.hidden_size),
            position: layers::embedding(
                &p / "position_embeddings",
                c.max_position_embeddings,
                c.hidden_size,
            ),
            token_type: layers::embedding(
                &p / "token_type_embeddings",
                c.type_vocab_size,
                c.hidden_size,
            ),
            ln: layers::layer_norm(&p / "LayerNorm", c.hidden_size, c.layer_norm_eps),
            dropout: c.hidden_dropout_prob,
        }
    }
    fn forward(&self, ids: &Tensor, ctx: Ctx) -> Tensor {
        let l = ids.size()[1];
        let pos = Tensor::arange(l, (tch::Kind::Int64, ids.device()));
        let x = ids.apply(&self.word)
            + pos.apply(&self.position).unsqueeze(0)
            + self.token_type.ws.get(0).view([1, 1, -1]);
        layers::dropout(&layers::apply_ln(&self.ln, &x), self.dropout, ctx)
    }
}

struct Layer {
    query: nn::Linear,
    key: nn::Linear,
    value: nn::Linear,
    attn_out: nn::Linear,
    attn_ln: layers::LayerNorm,
    inter: nn::Linear,
    out: nn::Linear,
    out_ln: layers::LayerNorm,
    heads: i64,
    act: Activation,
    hidden_dropout: f64,
    attn_dropout: f64,
}

impl Layer {
    fn new(p: nn::Path, c: &BertConfig) -> Self {
        let h = c.hidden_size;
        let att = &p / "attention";
        let s = &att / "self";
        let o = &att / "output";
        Self {
            query: layers::linear(&s / "query", h, h),
            key: layers::linear(&s / "key", h, h),
            value: layers::linear(&s / "value", h, h),
            attn_out: layers::linear(&o / "dense", h, h),
            attn_ln: layers::layer_norm(&o / "LayerNorm", h, c.layer_norm_eps),
            inter: layers::linear(&p / "intermediate" / "dense", h, c.intermediate_size),
            out: layers::linear(&p / "output" / "dense", c.intermediate_size, h),
            out_ln: layers::layer_norm(&p / "output" / "LayerNorm", h, c.layer_norm_eps),
            heads: c.num_attention_heads,
            act: c.hidden_act,
            hidden_dropout: c.hidden_dropout_prob,
            attn_dropout: c.attention_probs_dropout_prob,
        }
    }
    fn forward(&self, x: &Tensor, mask: &Tensor, ctx: Ctx) -> Tensor {
        let q = layers::apply_linear(&self.query, x, ctx);
        let k = layers::apply_linear(&self.key, x, ctx);
        let v = layers::apply_linear(&self.value, x, ctx);
        let a = layers::attention(&q, &k, &v, self.heads, mask, self.attn_dropout, ctx);
        let a = layers::dropout(
            &layers::apply_linear(&self.attn_out, &a, ctx),
            self.hidden_dropout,
            ctx,
        );
        let x = layers::apply_ln(&self.attn_ln, &(a + x));
        let h = self.act.apply(&layers::apply_linear(&self.inter, &x, ctx));
        let h = layers::dropout(
            &layers::apply_linear(&self.out, &h, ctx),
            self.hidden_dropout,
            ctx,
        );
        layers::apply_ln(&self.out_ln, &(h + x))
    }
}

/// BERT encoder without pooler.
pub struct BertModel {
    embeddings: Embeddings,
    layers: Vec<Layer>,
    /// The config it was built from.
    pub config: BertConfig,
}

impl BertModel {
    /// Builds the variables under `p` (`p/embeddings/…`, `p/encoder/layer/N/…`).
    pub fn new(p: nn::Path, c: &BertConfig) -> Self {
        let enc = &p / "encoder" / "layer";
        Self {
            embeddings: Embeddings::new(&p / "embeddings", c),
            layers: (0..c.num_hidden_layers)
                .map(|i| Layer::new(&enc / i, c))
                .collect(),
            config: c.clone(),
        }
    }

    /// `ids [B, L]` (int64), `attention_mask [B, L]` (1 = token) → last hidden state `[B, L, H]`.
    pub fn forward(&self, ids: &Tensor, attention_mask: &Tensor, ctx: Ctx) -> Tensor {
        let mask = attention_mask.gt(0).unsqueeze(1).unsqueeze(1); // [B,1,1,L]
        let mut x = self.embeddings.forward(ids, ctx);
        for l in &self.layers {
            x = l.forward(&x, &mask, ctx);
        }
        x
    }
}
