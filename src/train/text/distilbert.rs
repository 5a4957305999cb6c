//! DistilBERT encoder (Sanh et al. 2019), as Hugging Face `modeling_distilbert.py` builds it
//! (`Embeddings`, `MultiHeadSelfAttention` with `q_lin/k_lin/v_lin/out_lin`, `FFN` with
//! `lin1/lin2`, `TransformerBlock` with `sa_layer_norm`/`output_layer_norm`). Paths follow the
//! published checkpoint (`distilbert.transformer.layer.N.attention.q_lin.weight`, …; the
//! `distilbert.` prefix is stripped by the loader). The MLM head (`vocab_*`) is not used.

use serde::{Deserialize, Serialize};
use tch::{nn, Tensor};

use crate::train::layers::{self, Activation, Ctx};

/// `config.json` of a DistilBERT model (HF field names).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DistilBertConfig {
    /// Vocabulary size.
    pub vocab_size: i64,
    /// Hidden size.
    pub dim: i64,
    /// Layers.
    pub n_layers: i64,
    /// Heads.
    pub n_heads: i64,
    /// FFN size.
    pub hidden_dim: i64,
    /// FFN activation.
    #[serde(default)]
    pub activation: Activation,
    /// Dropout.
    #[serde(default = "p01")]
    pub dropout: f64,
    /// Attention dropout.
    #[serde(default = "p01")]
    pub attention_dropout: f64,
    /// Positions.
    #[serde(default = "p512")]
    pub max_position_embeddings: i64,
    /// Fixed sinusoidal positions (weights are then still stored in the checkpoint).
    #[serde(default)]
    pub sinusoidal_pos_embds: bool,
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

const LN_EPS: f64 = 1e-12;

struct Block {
    q: nn::Linear,
    k: nn::Linear,
    v: nn::Linear,
    o: nn::Linear,
    sa_ln: layers::LayerNorm,
    lin1: nn::Linear,
    lin2: nn::Linear,
    out_ln: layers::LayerNorm,
    heads: i64,
    act: Activation,
    dropout: f64,
    attn_dropout: f64,
}

impl Block {
    fn new(p: nn::Path, c: &DistilBertConfig) -> Self {
        let d = c.dim;
        let a = &p / "attention";
        let f = &p / "ffn";
        Self {
            q: layers::linear(&a / "q_lin", d, d),
            k: layers::linear(&a / "k_lin", d, d),
            v: layers::linear(&a / "v_lin", d, d),
            o: layers::linear(&a / "out_lin", d, d),
            sa_ln: layers::layer_norm(&p / "sa_layer_norm", d, LN_EPS),
            lin1: layers::linear(&f / "lin1", d, c.hidden_dim),
            lin2: layers::linear(&f / "lin2", c.hidden_dim, d),
            out_ln: layers::layer_norm(&p / "output_layer_norm", d, LN_EPS),
            heads: c.n_heads,
            act: c.activation,
            dropout: c.dropout,
            attn_dropout: c.attention_dropout,
        }
    }
    fn forward(&self, x: &Tensor, mask: &Tensor, ctx: Ctx) -> Tensor {
        let q = layers::apply_linear(&self.q, x, ctx);
        let k = layers::apply_linear(&self.k, x, ctx);
        let v = layers::apply_linear(&self.v, x, ctx);
        let a = layers::attention(&q, &k, &v, self.heads, mask, self.attn_dropout, ctx);
        let a = layers::apply_linear(&self.o, &a, ctx);
        let x = layers::apply_ln(&self.sa_ln, &(a + x));
        let h = self.act.apply(&layers::apply_linear(&self.lin1, &x, ctx));
        let h = layers::dropout(
            &layers::apply_linear(&self.lin2, &h, ctx),
            self.dropout,
            ctx,
        );
        layers::apply_ln(&self.out_ln, &(h + x))
    }
}

/// DistilBERT encoder.
pub struct DistilBertModel {
    word: nn::Embedding,
    position: nn::Embedding,
    ln: layers::LayerNorm,
    blocks: Vec<Block>,
    /// The config it was built from.
    pub config: DistilBertConfig,
}

impl DistilBertModel {
    /// Builds the variables under `p` (`p/embeddings/…`, `p/transformer/layer/N/…`).
    pub fn new(p: nn::Path, c: &DistilBertConfig) -> Self {
        let e = &p / "embeddings";
        let t = &p / "transformer" / "layer";
        Self {
            word: layers::embedding(&e / "word_embeddings", c.vocab_size, c.dim),
            position: layers::embedding(
                &e / "position_embeddings",
                c.max_position_embeddings,
                c.dim,
            ),
            ln: layers::layer_norm(&e / "LayerNorm", c.dim, LN_EPS),
            blocks: (0..c.n_layers).map(|i| Block::new(&t / i, c)).collect(),
            config: c.clone(),
        }
    }

    /// `ids [B, L]`, `attention_mask [B, L]` → last hidden state `[B, L, dim]`.
    pub fn forward(&self, ids: &Tensor, attention_mask: &Tensor, ctx: Ctx) -> Tensor {
        let l = ids.size()[1];
        let pos = Tensor::arange(l, (tch::Kind::Int64, ids.device()));
        let x = ids.apply(&self.word) + pos.apply(&self.position).unsqueeze(0);
        let mut x = layers::dropout(&layers::apply_ln(&self.ln, &x), self.config.dropout, ctx);
        let mask = attention_mask.gt(0).unsqueeze(1).unsqueeze(1);
        for b in &self.blocks {
            x = b.forward(&x, &mask, ctx);
        }
        x
    }
}
