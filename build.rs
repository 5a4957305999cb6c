//! Build script: only does something for the `train` feature.
//!
//! tch links libtorch dynamically; without an rpath the binary fails at start with
//! `libtorch_cpu.so: cannot open shared object file`. torch-sys (a direct optional dependency,
//! `links = "tch"`) exports the library directory as `DEP_TCH_LIBTORCH_LIB`; we bake it in as an
//! rpath. With `cuda`, libtorch_cuda is linked explicitly because `--as-needed` would otherwise
//! drop it (no symbol of it is referenced directly) and tch would never see a GPU.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if std::env::var_os("CARGO_FEATURE_TRAIN").is_none() {
        return;
    }
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
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
}
