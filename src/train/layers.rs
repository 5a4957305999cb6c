//! Small building blocks shared by both towers: a forward context (train/eval, mixed
//! precision), linear/layer-norm constructors with BERT/timm-style init, activations, and
//! multi-head attention on top of `scaled_dot_product_attention`.

use tch::{nn, Kind, Tensor};

/// Forward-pass context.
#[derive(Debug, Clone, Copy)]
pub struct Ctx {
    /// Dropout on.
    pub train: bool,
    /// Reduced precision for matmuls (autocast-style: linears and attention run in this kind,
    /// norms, softmax-based losses and the residual stream stay f32).
    pub mixed: Option<Kind>,
}

impl Ctx {
    /// Evaluation, full precision.
    pub fn eval() -> Self {
        Self {
            train: false,
            mixed: None,
        }
    }
    /// Training, full precision.
    pub fn train() -> Self {
        Self {
            train: true,
            mixed: None,
        }
    }
}

/// Linear layer with HF/timm parameter names (`weight [out, in]`, `bias [out]`), normal(0.02)
/// init and zero bias.
pub fn linear(p: nn::Path, inp: i64, out: i64) -> nn::Linear {
    nn::linear(
        p,
        inp,
        out,
        nn::LinearConfig {
            ws_init: nn::Init::Randn {
                mean: 0.0,
                stdev: 0.02,
            },
            bs_init: Some(nn::Init::Const(0.0)),
            bias: true,
        },
    )
}

/// Applies a linear layer, casting to the mixed-precision kind when on.
pub fn apply_linear(l: &nn::Linear, x: &Tensor, ctx: Ctx) -> Tensor {
    match ctx.mixed {
        Some(k) => x
            .to_kind(k)
            .linear(&l.ws.to_kind(k), l.bs.as_ref().map(|b| b.to_kind(k))),
        None => x.linear(&l.ws, l.bs.as_ref()),
    }
}

/// LayerNorm parameters (`weight`, `bias`) and ε.
pub struct LayerNorm {
    /// Scale.
    pub ws: Tensor,
    /// Shift.
    pub bs: Tensor,
    /// ε.
    pub eps: f64,
}

/// LayerNorm with `weight`/`bias` names.
pub fn layer_norm(p: nn::Path, dim: i64, eps: f64) -> LayerNorm {
    LayerNorm {
        ws: p.var("weight", &[dim], nn::Init::Const(1.0)),
        bs: p.var("bias", &[dim], nn::Init::Const(0.0)),
        eps,
    }
}

/// LayerNorm always computed in f32 (as autocast does).
pub fn apply_ln(ln: &LayerNorm, x: &Tensor) -> Tensor {
    let x = if x.kind() == Kind::Float {
        x.shallow_clone()
    } else {
        x.to_kind(Kind::Float)
    };
    x.layer_norm(
        [x.size()[x.dim() - 1]],
        Some(&ln.ws),
        Some(&ln.bs),
        ln.eps,
        true,
    )
}

/// Embedding table (`weight`), normal(0.02) init.
pub fn embedding(p: nn::Path, n: i64, dim: i64) -> nn::Embedding {
    nn::embedding(
        p,
        n,
        dim,
        nn::EmbeddingConfig {
            ws_init: nn::Init::Randn {
                mean: 0.0,
                stdev: 0.02,
            },
            ..Default::default()
        },
    )
}

/// Activation by HF name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// Exact (erf) GELU.
    #[default]
    Gelu,
    /// tanh approximation.
    #[serde(alias = "gelu_pytorch_tanh", alias = "gelu_fast")]
    GeluNew,
    /// ReLU.
    Relu,
}

impl Activation {
    /// Applies the activation.
    pub fn apply(self, x: &Tensor) -> Tensor {
        match self {
            Activation::Gelu => x.gelu("none"),
            Activation::GeluNew => x.gelu("tanh"),
            Activation::Relu => x.relu(),
        }
    }
}

/// Multi-head attention core: `q, k, v [B, T, H*Dh]` → `[B, T, H*Dh]`.
/// `mask`: bool `[B, 1, Tq, Tk]` or broadcastable, true = may attend.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: i64,
    mask: &Tensor,
    dropout: f64,
    ctx: Ctx,
) -> Tensor {
    let (b, t, d) = q.size3().expect("q [B,T,D]");
    let tk = k.size()[1];
    let dh = d / heads;
    let split = |x: &Tensor, n: i64| x.view([b, n, heads, dh]).transpose(1, 2);
    let p = if ctx.train { dropout } else { 0.0 };
    let y = Tensor::scaled_dot_product_attention(
        &split(q, t),
        &split(k, tk),
        &split(v, tk),
        Some(mask),
        p,
        false,
        None,
        false,
    );
    y.transpose(1, 2).contiguous().view([b, t, d])
}

/// Dropout that is a no-op at evaluation.
pub fn dropout(x: &Tensor, p: f64, ctx: Ctx) -> Tensor {
    if ctx.train && p > 0.0 {
        x.dropout(p, true)
    } else {
        x.shallow_clone()
    }
}
