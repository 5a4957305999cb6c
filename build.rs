//! Build script: only does something for the `train` feature.
//!
//! tch links libtorch dynamically; without an rpath the binary fails at start with
//! `libtorch_cpu.so: cannot open shared object file`. torch-sys (a direct optional dependency,
//! `links = "tch"`) exports the library directory as `DEP_TCH_LIBTORCH_LIB`; we bake it in as an
//! rpath. With `cuda`, libtorch_cuda is linked explicitly because `--as-needed` would otherwise
//! drop it (no symbol of it is referenced directly) and tch would never see a GPU.
//!
//! It also compiles `src/train/dist/c10d_shim.cpp`, the C face of libtorch's distributed backend
//! (c10d: TCPStore, Gloo, NCCL) used for data-parallel training, against the same headers and
//! with the same flags torch-sys uses for its own wrapper (`-std=c++17`,
//! `-D_GLIBCXX_USE_CXX11_ABI=$LIBTORCH_CXX11_ABI`, default 1). The NCCL part needs CUDA and NCCL
//! headers and is compiled only with `cuda` when they are found; otherwise asking for NCCL fails
//! at run time with a message saying what to install.

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if std::env::var_os("CARGO_FEATURE_TRAIN").is_none() {
        return;
    }
    let lib_dir = std::env::var("DEP_TCH_LIBTORCH_LIB")
        .ok()
        .map(PathBuf::from);
    if let Some(dir) = &lib_dir {
        let dir = dir.display();
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
        if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
            println!("cargo:rustc-link-search=native={dir}");
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
        }
    } else {
        println!(
            "cargo:warning=DEP_TCH_LIBTORCH_LIB not set by torch-sys; binaries may need LD_LIBRARY_PATH to find libtorch"
        );
    }
    build_c10d_shim(lib_dir.as_deref());
}

fn env_rerun(name: &str) -> Option<String> {
    println!("cargo:rerun-if-env-changed={name}");
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The directory holding libtorch's `include/` (as torch-sys finds it).
fn libtorch_root(lib_dir: Option<&Path>) -> Option<PathBuf> {
    env_rerun("LIBTORCH_INCLUDE")
        .or_else(|| env_rerun("LIBTORCH"))
        .map(PathBuf::from)
        .or_else(|| lib_dir.and_then(|d| d.parent()).map(Path::to_path_buf))
}

fn build_c10d_shim(lib_dir: Option<&Path>) {
    let shim = "src/train/dist/c10d_shim.cpp";
    println!("cargo:rerun-if-changed={shim}");
    println!("cargo:rerun-if-changed=src/train/dist/gloo_decls");
    let Some(root) = libtorch_root(lib_dir) else {
        panic!(
            "cannot find libtorch's headers for the c10d shim: set LIBTORCH (scripts/env.sh does)"
        );
    };
    let include = root.join("include");
    if !include
        .join("torch/csrc/distributed/c10d/ProcessGroupGloo.hpp")
        .exists()
    {
        panic!(
            "{} has no torch/csrc/distributed/c10d headers; the data-parallel trainer needs a \
             libtorch with distributed support (the torch 2.13 wheel has it)",
            include.display()
        );
    }
    let abi = env_rerun("LIBTORCH_CXX11_ABI").unwrap_or_else(|| "1".into());
    let mut b = cc::Build::new();
    b.cpp(true)
        .pic(true)
        .warnings(false)
        .include("src/train/dist/gloo_decls")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .define("USE_C10D_GLOO", None)
        .file(shim);
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        match nccl_includes(&root) {
            Ok(dirs) => {
                b.define("USE_C10D_NCCL", None).define("RF_WITH_NCCL", None);
                for d in dirs {
                    b.include(d);
                }
                // c10::cuda::set_device; ProcessGroupNCCL itself is in libtorch_cuda (above).
                println!("cargo:rustc-link-lib=c10_cuda");
            }
            Err(why) => {
                println!("cargo:warning=NCCL data-parallel training disabled in this build: {why}")
            }
        }
    }
    b.compile("regionfeat_c10d");
}

/// CUDA runtime and NCCL header directories: `CUDA_HOME`/`CUDA_PATH` (a toolkit) or the
/// `nvidia/*` wheels next to torch; `NCCL_INCLUDE_DIR` overrides NCCL's.
fn nccl_includes(torch_root: &Path) -> Result<Vec<PathBuf>, String> {
    let site_nvidia = torch_root.parent().map(|p| p.join("nvidia"));
    let mut cuda_dirs: Vec<PathBuf> = ["CUDA_HOME", "CUDA_PATH"]
        .iter()
        .filter_map(|v| env_rerun(v))
        .map(|p| PathBuf::from(p).join("include"))
        .collect();
    cuda_dirs.push(PathBuf::from("/usr/local/cuda/include"));
    if let Some(n) = &site_nvidia {
        cuda_dirs.push(n.join("cu13/include"));
        cuda_dirs.push(n.join("cuda_runtime/include"));
    }
    // The torch wheel's nvidia/cu13 has cuda_runtime_api.h but not crt/host_config.h or
    // nv/target, which c10's CUDA headers include: a toolkit has all three, and so has the
    // wheel directory once `pip install nvidia-cuda-crt nvidia-cuda-cccl` adds theirs.
    let cuda = cuda_dirs
        .into_iter()
        .find(|d| {
            ["cuda_runtime_api.h", "crt/host_config.h", "nv/target"]
                .iter()
                .all(|f| d.join(f).exists())
        })
        .ok_or(
            "no CUDA headers with crt/host_config.h and nv/target (set CUDA_HOME to a CUDA \
             toolkit, or pip install nvidia-cuda-crt nvidia-cuda-cccl next to torch)",
        )?;
    let mut nccl_dirs: Vec<PathBuf> = env_rerun("NCCL_INCLUDE_DIR")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    nccl_dirs.push(cuda.clone());
    if let Some(n) = &site_nvidia {
        nccl_dirs.push(n.join("nccl/include"));
    }
    let nccl = nccl_dirs
        .into_iter()
        .find(|d| d.join("nccl.h").exists())
        .ok_or("no nccl.h (set NCCL_INCLUDE_DIR)")?;
    Ok(vec![cuda, nccl])
}
