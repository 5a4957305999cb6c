//! Start-up time and resident memory of the trainer's data layer at pre-training scale
//! (`benches/index_scale.sh` drives it; the logic is `regionfeat::train::scale_bench`).
//!
//! Usage:
//!   index_scale gen <root> <webvid items> <cc3m items> <total shards>
//!   index_scale baseline <root>      (main's eager open, for the same-run ratio)
//!   index_scale run <root> <max_open_shards> <batches> <batch size> <concat|sample|alternate> <tokenizer> [block shards]

#[cfg(feature = "train")]
fn main() -> anyhow::Result<()> {
    use regionfeat::train::config::Mixing;
    use regionfeat::train::scale_bench;

    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let arg = |i: usize| -> &str { args.get(i).map(String::as_str).unwrap_or("") };
    let num = |i: usize| -> usize { arg(i).parse().expect("a number argument") };
    let root = scale_bench::dir(arg(1));
    match arg(0) {
        "gen" => {
            let s = scale_bench::generate(&root, num(2), num(3), num(4))?;
            println!("generated in {s:.1} s");
        }
        "run" => {
            let mixing = match arg(5) {
                "concat" => Mixing::Concat,
                "sample" => Mixing::Sample,
                _ => Mixing::Alternate,
            };
            let block = args.get(7).map_or(32, |a| a.parse().expect("block shards"));
            let r = scale_bench::run(
                &root,
                num(2),
                num(3),
                num(4),
                mixing,
                std::path::Path::new(arg(6)),
                block,
            )?;
            println!("RESULT {r}");
        }
        "baseline" => println!("RESULT {}", scale_bench::baseline(&root)?),
        _ => eprintln!("usage: index_scale gen|run|baseline … (see the file header)"),
    }
    Ok(())
}

#[cfg(not(feature = "train"))]
fn main() {
    eprintln!("index_scale needs --features train");
}
