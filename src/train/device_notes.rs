//! Options that do not apply to the device a run got are named at start, not silently ignored:
//! `optim.bf16` on the CPU, `optim.bf16` on a GPU without native bf16, and `device = "auto"`
//! falling back to the CPU.

use tch::Device;

use crate::train::config::TrainConfig;

/// One line per option that does not apply to `device` (empty when all do).
pub fn warnings(cfg: &TrainConfig, device: Device) -> Vec<String> {
    let mut out = vec![];
    if cfg.device == "auto" && !device.is_cuda() {
        out.push(
            "device = \"auto\" found no CUDA device (libtorch sees none; a build without \
             --features cuda never does): training on the CPU"
                .into(),
        );
    }
    match device {
        Device::Cuda(i) if cfg.optim.bf16 => {
            if let Some((major, minor)) = crate::train::cudart::compute_capability(i) {
                if major < 8 {
                    out.push(format!(
                        "optim.bf16 = true on cuda:{i}, compute capability {major}.{minor}: \
                         bf16 needs 8.0 (Ampere) or newer to run natively and is emulated, \
                         slowly, here; set optim.bf16 = false"
                    ));
                }
            }
        }
        Device::Cuda(_) => {}
        _ if cfg.optim.bf16 => out.push(
            "optim.bf16 = true has no effect on the CPU: training runs in f32 (bf16 mixed \
             precision is for CUDA); set optim.bf16 = false to silence this"
                .into(),
        ),
        _ => {}
    }
    out
}
