//! Rust side of the training-step benchmark (`benches/train_step.py` runs both sides).
//! Needs in Cargo.toml: `[[bench]] name = "train_step" harness = false required-features = ["train"]`.
//! Usage: `cargo bench --features train --bench train_step -- '<json list of BenchSpec>'`.

#[cfg(feature = "train")]
fn main() {
    let arg = std::env::args()
        .skip(1)
        .find(|a| a.trim_start().starts_with('['))
        .expect("json spec list argument");
    let specs: Vec<regionfeat::train::bench::BenchSpec> =
        serde_json::from_str(&arg).expect("bench spec");
    for s in &specs {
        let r = regionfeat::train::bench::run(s).expect("bench run");
        println!("RESULT {}", serde_json::to_string(&r).unwrap());
    }
}

#[cfg(not(feature = "train"))]
fn main() {
    eprintln!("train_step needs --features train");
}
