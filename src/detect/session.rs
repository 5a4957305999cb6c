//! One ONNX Runtime session per device: opening (with contract checks), running batches.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use half::f16;
use ort::session::Session;
use ort::value::{TensorElementType, TensorRef};

use super::contract::{names, ContractError, DetectorInfo};
use super::preprocess::Batch;
use crate::shard::ModelKind;

/// Where a detector session runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    /// ONNX Runtime's CPU execution provider.
    Cpu,
    /// The CUDA execution provider on GPU `n`; never falls back to CPU.
    Cuda(i32),
}

impl std::str::FromStr for Device {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s == "cpu" {
            return Ok(Self::Cpu);
        }
        if s == "cuda" {
            return Ok(Self::Cuda(0));
        }
        s.strip_prefix("cuda:")
            .and_then(|n| n.parse().ok())
            .map(Self::Cuda)
            .ok_or_else(|| format!("device {s:?}: use cpu, cuda or cuda:N"))
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cpu => write!(f, "cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// Errors opening or running a detector.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// ONNX Runtime's shared library could not be found or loaded.
    #[error("ONNX Runtime library: {0}")]
    Runtime(String),
    /// The model file cannot be read or parsed.
    #[error("cannot load detector model {path}: {reason}")]
    Model {
        /// Model path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The model breaks the contract.
    #[error(transparent)]
    Contract(#[from] ContractError),
    /// The requested execution provider could not be registered.
    #[error(
        "cannot use {device}: {reason} (no silent CPU fallback; use --device cpu to run on CPU)"
    )]
    Device {
        /// Requested device.
        device: Device,
        /// Why.
        reason: String,
    },
    /// Inference failed.
    #[error("inference failed: {0}")]
    Run(String),
}

/// Finds `libonnxruntime.so`: `ORT_DYLIB_PATH`, else the onnxruntime wheel inside a `.venv`
/// in the current directory or next to (or above) the executable, as `scripts/setup.sh` makes.
pub fn find_runtime_library() -> Result<PathBuf, DetectError> {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(DetectError::Runtime(format!(
                "ORT_DYLIB_PATH={} is not a file",
                p.display()
            )))
        };
    }
    let mut bases: Vec<PathBuf> = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        bases.push(cwd);
    }
    if let Ok(exe) = std::env::current_exe() {
        bases.extend(exe.ancestors().skip(1).map(Path::to_path_buf));
    }
    for base in bases {
        let lib = base.join(".venv/lib");
        let Ok(pythons) = std::fs::read_dir(&lib) else {
            continue;
        };
        for py in pythons.flatten() {
            let capi = py.path().join("site-packages/onnxruntime/capi");
            let Ok(files) = std::fs::read_dir(&capi) else {
                continue;
            };
            let mut libs: Vec<PathBuf> = files
                .flatten()
                .map(|f| f.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("libonnxruntime.so.1"))
                })
                .collect();
            libs.sort();
            if let Some(found) = libs.pop() {
                return Ok(found);
            }
        }
    }
    Err(DetectError::Runtime(
        "libonnxruntime.so not found: run scripts/setup.sh (installs onnxruntime into .venv) or set ORT_DYLIB_PATH".into(),
    ))
}

/// The process-wide ONNX Runtime environment (the dynamic library is loaded once).
fn environment() -> Result<&'static ort::environment::Environment, DetectError> {
    static ENV: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let lib = find_runtime_library().map_err(|e| e.to_string())?;
        let builder =
            ort::init_from(&lib).map_err(|e| format!("loading {}: {e}", lib.display()))?;
        builder
            .with_name("regionfeat")
            .build()
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| DetectError::Runtime(e.clone()))
}

/// sha256 of a file, hex.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    use sha2::Digest;
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Candidate regions of one frame, straight from the model.
#[derive(Debug, Clone)]
pub struct Candidates {
    /// `R` boxes `x1,y1,x2,y2` in resized-image pixels.
    pub boxes: Vec<[f32; 4]>,
    /// `R × (C+1)` class probabilities, background first.
    pub class_scores: Vec<f32>,
    /// `R × (A+1)` attribute probabilities, "none" first.
    pub attr_scores: Vec<f32>,
    /// `R × D` features.
    pub features: Vec<f32>,
}

impl Candidates {
    /// Number of candidate regions R.
    pub fn len(&self) -> usize {
        self.boxes.len()
    }

    /// Whether there is no candidate.
    pub fn is_empty(&self) -> bool {
        self.boxes.is_empty()
    }

    /// Names the first output holding NaN or infinity (`"NaN/Inf boxes"`, ...): such a frame
    /// must fail its item rather than reach a shard.
    pub fn non_finite(&self) -> Option<&'static str> {
        let bad = |v: &[f32]| v.iter().any(|x| !x.is_finite());
        if self.boxes.iter().any(|b| bad(b)) {
            Some("NaN/Inf boxes")
        } else if bad(&self.class_scores) {
            Some("NaN/Inf class scores")
        } else if bad(&self.attr_scores) {
            Some("NaN/Inf attribute scores")
        } else if bad(&self.features) {
            Some("NaN/Inf features")
        } else {
            None
        }
    }
}

/// An open detector session.
pub struct Detector {
    pub(super) session: Session,
    pub(super) info: DetectorInfo,
    device: Device,
    /// The model declares the optional `image_scales` input.
    feeds_scales: bool,
}

impl Detector {
    /// Opens `model` on `device`, checks the contract, and runs one dry batch to check the
    /// output shapes against the metadata.
    pub fn open(model: &Path, device: Device, intra_threads: usize) -> Result<Self, DetectError> {
        let model_err = |reason: String| DetectError::Model {
            path: model.to_path_buf(),
            reason,
        };
        if !model.is_file() {
            return Err(model_err("no such file".into()));
        }
        let sha256 = sha256_file(model).map_err(|e| model_err(e.to_string()))?;
        let env = environment()?;
        let mut builder = Session::builder(env).map_err(|e| DetectError::Runtime(e.to_string()))?;
        if intra_threads > 0 {
            builder = builder
                .with_intra_threads(intra_threads)
                .map_err(|e| DetectError::Runtime(e.to_string()))?;
        }
        if let Device::Cuda(id) = device {
            builder = builder
                .with_execution_providers([ort::ep::CUDA::default()
                    .with_device_id(id)
                    .build()
                    .error_on_failure()])
                .map_err(|e| DetectError::Device {
                    device,
                    reason: e.to_string(),
                })?;
        }
        let session = builder
            .commit_from_file(model)
            .map_err(|e| model_err(e.to_string()))?;
        let meta = session.metadata().map_err(|e| model_err(e.to_string()))?;
        let mut map = HashMap::new();
        for key in meta.custom_keys().map_err(|e| model_err(e.to_string()))? {
            if let Some(v) = meta.custom(&key) {
                map.insert(key, v);
            }
        }
        drop(meta);
        let kind = super::grid::kind_of(&session, &map)?;
        let info = match kind {
            ModelKind::Regions => {
                let info = DetectorInfo::from_metadata(&map, sha256)?;
                check_io(&session)?;
                info
            }
            ModelKind::Grid => {
                let info = super::grid::info_from_metadata(&map, sha256)?;
                super::grid::check_io(&session)?;
                info
            }
        };
        let feeds_scales = session
            .inputs()
            .iter()
            .any(|i| i.name() == names::IMAGE_SCALES);
        let mut detector = Self {
            session,
            info,
            device,
            feeds_scales,
        };
        detector.dry_run()?;
        Ok(detector)
    }

    /// What the model declares.
    pub fn info(&self) -> &DetectorInfo {
        &self.info
    }

    /// The device the session runs on.
    pub fn device(&self) -> Device {
        self.device
    }

    fn dry_run(&mut self) -> Result<(), DetectError> {
        let s = self
            .info
            .preprocess
            .shorter_side
            .min(self.info.preprocess.max_side) as usize;
        let frame = crate::decode::RgbFrame {
            time: 0.0,
            frame_time: 0.0,
            width: s as u32,
            height: s as u32,
            scale: 1.0,
            rgb: vec![0; 3 * s * s],
        };
        let batch = super::preprocess::batch_from_rgb(&[&frame], &self.info.preprocess);
        let result = match self.info.kind {
            ModelKind::Regions => self.run(&batch).map(|_| ()),
            ModelKind::Grid => self.grid_dry_run(&batch),
        };
        result.map_err(|e| match e {
            DetectError::Run(r) => DetectError::Contract(ContractError(format!(
                "a dry run on a {s}x{s} frame failed: {r}"
            ))),
            other => other,
        })
    }

    /// Runs one padded batch; returns the candidates of each frame.
    pub fn run(&mut self, batch: &Batch) -> Result<Vec<Candidates>, DetectError> {
        let run_err = |e: ort::Error| DetectError::Run(e.to_string());
        // Views, not copies: the padded batch can be tens of MB.
        let images = TensorRef::from_array_view((
            [batch.len, 3, batch.height, batch.width],
            &batch.images[..],
        ))
        .map_err(run_err)?;
        let sizes = TensorRef::from_array_view(([batch.len, 2], &batch.image_sizes[..]))
            .map_err(run_err)?;
        let mut inputs = ort::inputs! { names::IMAGES => images, names::IMAGE_SIZES => sizes };
        if self.feeds_scales {
            let scales = TensorRef::from_array_view(([batch.len], &batch.image_scales[..]))
                .map_err(run_err)?;
            inputs.push((names::IMAGE_SCALES.into(), scales.into()));
        }
        let outputs = self.session.run(inputs).map_err(run_err)?;
        let c1 = self.info.classes.len() + 1;
        let a1 = self.info.attributes.len() + 1;
        let d = self.info.feature_dim;
        let (bshape, boxes) = outputs[names::BOXES]
            .try_extract_tensor::<f32>()
            .map_err(run_err)?;
        let (cshape, cls) = outputs[names::CLASS_SCORES]
            .try_extract_tensor::<f32>()
            .map_err(run_err)?;
        let (ashape, attr) = outputs[names::ATTR_SCORES]
            .try_extract_tensor::<f32>()
            .map_err(run_err)?;
        let feat_value = &outputs[names::FEATURES];
        let (fshape, feats): (Vec<i64>, Vec<f32>) = match feat_value.try_extract_tensor::<f32>() {
            Ok((s, v)) => (s.to_vec(), v.to_vec()),
            Err(_) => {
                let (s, v) = feat_value.try_extract_tensor::<f16>().map_err(run_err)?;
                (s.to_vec(), v.iter().map(|x| x.to_f32()).collect())
            }
        };
        let b = batch.len as i64;
        let r = bshape.first().copied().map(|_| bshape[1]).unwrap_or(0);
        let expect = |name: &str, got: &[i64], want: [i64; 3]| -> Result<(), DetectError> {
            if got != want {
                return Err(DetectError::Run(format!(
                    "output {name:?} has shape {got:?}, expected {want:?} from the metadata"
                )));
            }
            Ok(())
        };
        expect(names::BOXES, bshape, [b, r, 4])?;
        expect(names::CLASS_SCORES, cshape, [b, r, c1 as i64])?;
        expect(names::ATTR_SCORES, ashape, [b, r, a1 as i64])?;
        expect(names::FEATURES, &fshape, [b, r, d as i64])?;
        let r = r as usize;
        Ok((0..batch.len)
            .map(|i| Candidates {
                boxes: boxes[i * r * 4..(i + 1) * r * 4]
                    .chunks_exact(4)
                    .map(|c| [c[0], c[1], c[2], c[3]])
                    .collect(),
                class_scores: cls[i * r * c1..(i + 1) * r * c1].to_vec(),
                attr_scores: attr[i * r * a1..(i + 1) * r * a1].to_vec(),
                features: feats[i * r * d..(i + 1) * r * d].to_vec(),
            })
            .collect())
    }
}

fn check_io(session: &Session) -> Result<(), ContractError> {
    let inputs: Vec<&str> = session.inputs().iter().map(|o| o.name()).collect();
    for want in [names::IMAGES, names::IMAGE_SIZES] {
        if !inputs.contains(&want) {
            return Err(ContractError(format!(
                "input {want:?} is missing (model inputs: {inputs:?})"
            )));
        }
    }
    for input in session.inputs() {
        if input.dtype().tensor_type() != Some(TensorElementType::Float32) {
            return Err(ContractError(format!(
                "input {:?} must be float32",
                input.name()
            )));
        }
    }
    let outputs: Vec<&str> = session.outputs().iter().map(|o| o.name()).collect();
    for want in [
        names::BOXES,
        names::CLASS_SCORES,
        names::ATTR_SCORES,
        names::FEATURES,
    ] {
        if !outputs.contains(&want) {
            return Err(ContractError(format!(
                "output {want:?} is missing (model outputs: {outputs:?})"
            )));
        }
    }
    for o in session.outputs() {
        let ok = match o.dtype().tensor_type() {
            Some(TensorElementType::Float32) => true,
            Some(TensorElementType::Float16) => o.name() == names::FEATURES,
            _ => false,
        };
        if !ok {
            return Err(ContractError(format!(
                "output {:?} has type {:?}; boxes/scores must be float32, features float32 or float16",
                o.name(),
                o.dtype().tensor_type()
            )));
        }
    }
    Ok(())
}
