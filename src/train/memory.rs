//! Will a config fit? An estimate of the training memory on the device — weights, gradients,
//! AdamW moments, activations kept for backward, the contrastive/RWA loss tensors and transient
//! peaks — compared with the device's free memory before training starts.
//!
//! Activations follow the per-layer count of Korthikanti et al. 2022 ("Reducing Activation
//! Recomputation in Large Transformer Models", §4.1), taken in f32 with the attention matrix
//! materialized (the CPU path; CUDA's fused attention needs less, so the estimate errs high).
//! Per layer of `s` tokens, width `h`, `a` heads and MLP width `i`, one sample keeps
//! `4·(8·s·h + 2·s·i) + 2·s·h + 9·a·s²` bytes: the inputs of the four linears, Q/K/V, the
//! LayerNorm inputs, the GELU input and output, two dropout masks, and the softmax output, its
//! dropout mask and output. The RWA loss keeps about ten `[B, B', N, L]` f32 tensors (cosines,
//! masked logits, softmax, refinement, products; B' = videos/texts it contrasts against).

use anyhow::{bail, Result};
use tch::{nn, Device};

use crate::train::config::{MemoryCheck, TrainConfig};
use crate::train::text::TextModelConfig;
use crate::train::video::VideoInput;

const GIB: f64 = (1u64 << 30) as f64;
const MIB: f64 = (1u64 << 20) as f64;

/// Shapes of one micro-batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Workload {
    /// Micro-batch size B.
    pub batch: i64,
    /// Videos/texts each sample is contrasted with (B, or B × world size when negatives are
    /// gathered across processes).
    pub contrast: i64,
    /// Frames per item.
    pub frames: i64,
    /// Regions (or grid patches) per frame in the input, K.
    pub regions_per_frame: i64,
    /// Caption tokens L.
    pub text_len: i64,
    /// Linears run in bf16 (CUDA with `optim.bf16`): bf16 copies of weights and inputs.
    pub bf16: bool,
    /// Data-parallel processes sharing `data.batch_size` (1: none).
    pub processes: i64,
}

impl Workload {
    /// The workload of one of `processes` data-parallel processes running `cfg` on data with
    /// `regions_per_frame` regions (or patches) per frame: `data.batch_size` is the global
    /// micro-batch, so each process holds its share and contrasts it with the whole batch
    /// (negatives are gathered).
    pub fn of(
        cfg: &TrainConfig,
        regions_per_frame: usize,
        device: Device,
        processes: usize,
    ) -> Self {
        Self {
            batch: (cfg.data.batch_size / processes.max(1)).max(1) as i64,
            contrast: cfg.data.batch_size as i64,
            frames: cfg.data.frames as i64,
            regions_per_frame: regions_per_frame as i64,
            text_len: cfg.data.max_text_len as i64,
            bf16: cfg.optim.bf16 && device.is_cuda(),
            processes: processes.max(1) as i64,
        }
    }
}

/// Estimated bytes, by what holds them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Estimate {
    /// Parameters (count).
    pub params: u64,
    /// Trainable parameters (count).
    pub trainable: u64,
    /// f32 weights.
    pub weights: u64,
    /// f32 gradients.
    pub grads: u64,
    /// AdamW's two f32 moments.
    pub optimizer: u64,
    /// Activations kept for backward, both towers (one micro-batch).
    pub activations: u64,
    /// Loss tensors: global similarity and RWA `[B, B', N, L]`.
    pub loss: u64,
    /// Short-lived peaks (RegionLearner's code assignment, bf16 weight copies).
    pub transient: u64,
}

impl Estimate {
    /// Total bytes.
    pub fn total(&self) -> u64 {
        self.weights + self.grads + self.optimizer + self.activations + self.loss + self.transient
    }
}

impl std::fmt::Display for Estimate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // MiB below 1 GiB, so a small config's terms do not all print as 0.00.
        let (unit, div) = if (self.total() as f64) < GIB {
            ("MiB", MIB)
        } else {
            ("GiB", GIB)
        };
        let g = |b: u64| b as f64 / div;
        write!(
            f,
            "{:.2} {unit} (weights {:.2} [{:.1}M parameters], gradients {:.2}, AdamW {:.2}, \
             activations {:.2}, loss {:.2}, transient {:.2})",
            g(self.total()),
            g(self.weights),
            self.params as f64 / 1e6,
            g(self.grads),
            g(self.optimizer),
            g(self.activations),
            g(self.loss),
            g(self.transient)
        )
    }
}

/// The measured counterpart of an [`Estimate`] on the CPU: resident memory of this process when
/// training memory starts to be allocated, and the peak above it since.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Resident {
    /// `VmRSS` at the start, bytes.
    pub start: u64,
    /// Whether the kernel reset `VmHWM` at the start; when not, the peak may be one from before.
    pub peak_reset: bool,
}

/// A `/proc/self/status` field in bytes.
fn status_bytes(key: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix(key))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

impl Resident {
    /// Resets the peak (`5` to `/proc/self/clear_refs`, Linux ≥ 4.0) and reads `VmRSS`; None
    /// without procfs.
    pub fn start() -> Option<Self> {
        let peak_reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
        Some(Self {
            start: status_bytes("VmRSS:")?,
            peak_reset,
        })
    }

    /// Peak resident bytes (`VmHWM`) above the start.
    pub fn peak_growth(&self) -> Option<u64> {
        Some(status_bytes("VmHWM:")?.saturating_sub(self.start))
    }

    /// One line comparing the peak growth with `est`.
    pub fn report(&self, est: &Estimate) -> Option<String> {
        let grown = self.peak_growth()?;
        Some(format!(
            "memory: peak resident {:.1} MiB above the {:.1} MiB at start{} (estimate {:.1} MiB, \
             {:.2}x the measured)",
            grown as f64 / MIB,
            self.start as f64 / MIB,
            if self.peak_reset {
                ""
            } else {
                ", peak not reset: may include start-up"
            },
            est.total() as f64 / MIB,
            est.total() as f64 / grown.max(1) as f64
        ))
    }
}

/// Activation bytes kept per sample by one transformer layer (module docs).
pub fn layer_bytes(tokens: i64, width: i64, heads: i64, mlp: i64) -> u64 {
    let (s, h, a, i) = (tokens as u64, width as u64, heads as u64, mlp as u64);
    4 * (8 * s * h + 2 * s * i) + 2 * s * h + 9 * a * s * s
}

fn text_dims(t: &TextModelConfig) -> (i64, i64, i64, i64) {
    match t {
        TextModelConfig::Bert(c) => (
            c.num_hidden_layers,
            c.hidden_size,
            c.num_attention_heads,
            c.intermediate_size,
        ),
        TextModelConfig::DistilBert(c) => (c.n_layers, c.dim, c.n_heads, c.hidden_dim),
    }
}

/// Estimates the training memory of `cfg` with the variables of `vs` on workload `w`.
pub fn estimate(
    cfg: &TrainConfig,
    text: &TextModelConfig,
    vs: &nn::VarStore,
    w: &Workload,
) -> Estimate {
    let (mut params, mut trainable) = (0u64, 0u64);
    for (_, t) in vs.variables() {
        let n = t.numel() as u64;
        params += n;
        if t.requires_grad() {
            trainable += n;
        }
    }
    estimate_with(cfg, text, params, trainable, w)
}

/// [`estimate`] from parameter counts.
pub fn estimate_with(
    cfg: &TrainConfig,
    text: &TextModelConfig,
    params: u64,
    trainable: u64,
    w: &Workload,
) -> Estimate {
    let v = &cfg.model.video;
    let (b, f, k, l) = (w.batch, w.frames, w.regions_per_frame, w.text_len);
    // Video tokens after the embedding, and the region tokens the RWA loss sees.
    let rl = cfg.model.video.region_learner.as_ref();
    let per_frame = match (v.input, rl) {
        (VideoInput::Regions, _) => k,
        (VideoInput::Grid, Some(r)) => r.regions,
        (VideoInput::Grid, None) => 1,
    };
    let n = f * per_frame;
    let sv = 1 + n;
    let hv = v.hidden_size;
    let mlp_v = (v.mlp_ratio * hv as f64) as i64;
    let mut per_sample = v.num_layers as u64 * layer_bytes(sv, hv, v.num_heads, mlp_v);
    // Input features and their embedding (linear input, sum, LayerNorm, dropout).
    per_sample += (f * k * (v.feature_dim + 7) * 4 * 2) as u64 + (sv * hv * 4 * 3) as u64;
    let mut transient = 0u64;
    if let (VideoInput::Grid, Some(r)) = (v.input, rl) {
        // Patch projection, soft masks and pooled regions, and the interaction layers.
        per_sample += (f * k * hv * 4 * 3) as u64 + (f * r.regions * k * 4 * 2) as u64;
        per_sample += r.interaction_depth as u64
            * layer_bytes(f * r.regions, hv, r.interaction_heads, 4 * hv);
        // Code assignment: distances, one-hot and argmin over [B·F·P, codes] at once.
        transient += (3 * b * f * k * r.codebook_size * 4) as u64;
    }
    let (tl, th, ta, ti) = text_dims(text);
    per_sample += tl as u64 * layer_bytes(l, th, ta, ti) + (l * th * 4 * 3) as u64;
    // Projections to the joint space and their normalization.
    per_sample += ((sv + l) * cfg.model.embed_dim as i64 * 4 * 3) as u64;
    let mut activations = per_sample * b as u64;
    if w.bf16 {
        // bf16 copies of the linear inputs, and of the weights for each forward.
        activations = activations * 5 / 4;
        transient += params * 2;
    }
    let c = w.contrast;
    let mut loss = (b * c * 4 * 4) as u64;
    if cfg.loss.rwa {
        loss += (10 * b * c * n * l * 4) as u64;
    }
    Estimate {
        params,
        trainable,
        weights: params * 4,
        grads: trainable * 4,
        optimizer: trainable * 8,
        activations,
        loss,
        transient,
    }
}

/// Free memory of a device, and where the number comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct Available {
    /// Bytes.
    pub bytes: u64,
    /// E.g. `MemAvailable in /proc/meminfo`.
    pub source: String,
}

/// `MemAvailable` of `/proc/meminfo` (what the kernel can give without swapping).
pub fn host_available() -> Option<Available> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(Available {
        bytes: kb * 1024,
        source: "MemAvailable in /proc/meminfo".into(),
    })
}

/// Free memory of `device`: the host's for the CPU, `cudaMemGetInfo` for a GPU (None when the
/// CUDA runtime cannot be loaded).
pub fn available(device: Device) -> Option<Available> {
    match device {
        Device::Cuda(i) => crate::train::cudart::mem_info(i).map(|(free, total)| Available {
            bytes: free,
            source: format!(
                "cudaMemGetInfo on cuda:{i}, {:.1} GiB total",
                total as f64 / GIB
            ),
        }),
        _ => host_available(),
    }
}

/// The largest micro-batch (down to 2) whose estimate fits `limit` bytes, with its estimate.
pub fn largest_fitting_batch(
    cfg: &TrainConfig,
    text: &TextModelConfig,
    params: u64,
    trainable: u64,
    w: &Workload,
    limit: u64,
) -> Option<(i64, Estimate)> {
    let scale = w.contrast as f64 / w.batch.max(1) as f64;
    (2..=w.batch).rev().find_map(|b| {
        let wb = Workload {
            batch: b,
            contrast: ((b as f64) * scale).round() as i64,
            ..*w
        };
        let e = estimate_with(cfg, text, params, trainable, &wb);
        (e.total() <= limit).then_some((b, e))
    })
}

/// Prints the estimate and refuses (per `memory.check`) when it exceeds the free memory.
pub fn check(
    cfg: &TrainConfig,
    text: &TextModelConfig,
    est: &Estimate,
    w: &Workload,
    device: Device,
    avail: Option<Available>,
) -> Result<()> {
    let limit = match (cfg.memory.limit_gib, avail) {
        (Some(g), _) => Some(Available {
            bytes: (g * GIB) as u64,
            source: "memory.limit_gib".into(),
        }),
        (None, a) => a,
    };
    let dev = format!("{device:?}").to_lowercase();
    let Some(limit) = limit else {
        eprintln!(
            "memory: estimate {est} on {dev}; free memory unknown (no CUDA runtime library \
             found), not checked"
        );
        return Ok(());
    };
    let free = limit.bytes as f64 / GIB;
    eprintln!(
        "memory: estimate {est}; {free:.2} GiB free on {dev} ({})",
        limit.source
    );
    if cfg.memory.check == MemoryCheck::Off || est.total() <= limit.bytes {
        return Ok(());
    }
    let fit = largest_fitting_batch(cfg, text, est.params, est.trainable, w, limit.bytes);
    let accum = cfg.optim.grad_accum;
    let advice = match fit {
        Some((b, e)) => {
            // `b` is one process's share; data.batch_size is the global micro-batch. Keep the
            // optimizer batch: batch_size·accum samples per step.
            let global = b as usize * w.processes as usize;
            let want = cfg.data.batch_size * accum;
            let new_accum = want.div_ceil(global);
            let per = if w.processes > 1 {
                format!(" ({b} per process)")
            } else {
                String::new()
            };
            format!(
                "data.batch_size = {global}{per} fits ({:.2} GiB); with optim.grad_accum = \
                 {new_accum} an optimizer step still sees {} samples (contrastive negatives \
                 come from each micro-batch only)",
                e.total() as f64 / GIB,
                global * new_accum
            )
        }
        None => "even data.batch_size = 2 does not fit: lower data.frames or data.max_text_len, \
                 set loss.rwa = false, or use a smaller model"
            .into(),
    };
    let msg = format!(
        "this config needs about {:.2} GiB but {dev} has {free:.2} GiB free ({}): \
         {advice}. Lower data.frames or data.max_text_len, or set loss.rwa = false, to shrink \
         it further; set [memory] check = \"warn\" to train anyway",
        est.total() as f64 / GIB,
        limit.source
    );
    match cfg.memory.check {
        MemoryCheck::Refuse => bail!("{msg}"),
        _ => {
            eprintln!("warning: {msg}");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resident_peak_counts_memory_touched_after_the_start() {
        // Resident memory is the process's: other tests running in this one allocate, free
        // and reset the peak meanwhile, so the measurement runs alone in a child process.
        const CHILD: &str = "REGIONFEAT_RESIDENT_TEST_CHILD";
        if std::env::var_os(CHILD).is_none() {
            let name = "train::memory::tests::resident_peak_counts_memory_touched_after_the_start";
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", name, "--test-threads=1"])
                .env(CHILD, "1")
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && text.contains("1 passed"),
                "{text}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            return;
        }
        let r = Resident::start().expect("/proc/self/status");
        // 64 MiB of non-zero bytes: every page written, so resident.
        let buf = vec![1u8; 64 << 20];
        std::hint::black_box(&buf);
        let grown = r.peak_growth().unwrap();
        assert!(grown >= 60 << 20, "peak grew {grown} bytes");
        drop(buf);
        // The peak stays after the memory is freed.
        assert!(r.peak_growth().unwrap() >= 60 << 20);
        let line = r.report(&Estimate::default()).unwrap();
        assert!(line.starts_with("memory: peak resident "), "{line}");
    }

    #[test]
    fn estimate_prints_mib_below_one_gib() {
        let small = Estimate {
            weights: 300 << 20,
            ..Default::default()
        };
        assert!(
            small.to_string().starts_with("300.00 MiB (weights 300.00"),
            "{small}"
        );
        let big = Estimate {
            weights: 3 << 30,
            ..Default::default()
        };
        assert!(
            big.to_string().starts_with("3.00 GiB (weights 3.00"),
            "{big}"
        );
    }
}
