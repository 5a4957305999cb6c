//! Several captions per item: what a training step sees under each `data.captions` mode.

use std::collections::HashSet;
use std::sync::Arc;

use crate::train::config::CaptionSampling;
use crate::train::data::{FrameBlock, MemoryItem, MemorySource, Mixture, RegionSource};

fn source() -> Arc<dyn RegionSource> {
    let item = |id: &str, caps: &[&str]| MemoryItem {
        id: id.into(),
        caption: caps.first().map(|c| c.to_string()).unwrap_or_default(),
        extra_captions: caps.iter().skip(1).map(|c| c.to_string()).collect(),
        frames: FrameBlock {
            features: vec![0.0; 2].into(),
            locations: vec![0.0; 7],
            num_boxes: vec![1],
        },
    };
    Arc::new(MemorySource {
        feature_dim: 2,
        max_boxes: 1,
        grid_hw: None,
        items: vec![
            item("a", &["a0", "a1", "a2"]),
            item("b", &["b0"]),
            item("none", &[]),
        ],
    })
}

#[test]
fn random_mode_draws_every_caption_across_epochs_and_is_seeded() {
    let mix = Mixture::new(vec![source()], true).unwrap();
    assert_eq!(mix.len(), 2, "the caption-less item is dropped");
    assert_eq!(mix.captions(0), ["a0", "a1", "a2"]);
    let seen: HashSet<String> = (0..40).map(|e| mix.step_caption(0, 7, e)).collect();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(mix.step_caption(0, 7, 3), mix.step_caption(0, 7, 3));
    assert_eq!(mix.step_caption(1, 7, 3), "b0");
}

#[test]
fn first_and_all_modes() {
    let first = Mixture::new(vec![source()], true)
        .unwrap()
        .with_caption_sampling(CaptionSampling::First);
    assert!((0..10).all(|e| first.step_caption(0, 1, e) == "a0"));
    let all = Mixture::new(vec![source()], true)
        .unwrap()
        .with_caption_sampling(CaptionSampling::All);
    assert_eq!(all.len(), 4);
    let pairs: Vec<(String, String)> = (0..all.len())
        .map(|i| (all.item_id(i), all.step_caption(i, 1, 0)))
        .collect();
    let want: Vec<(String, String)> = [("a", "a0"), ("a", "a1"), ("a", "a2"), ("b", "b0")]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(pairs, want);
}

#[test]
fn benchmark_example_configs_parse_with_the_protocol() {
    use crate::train::config::{FrameSampling, TrainConfig};
    for name in ["msrvtt", "msvd", "didemo", "lsmdc"] {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples")
            .join(format!("finetune-{name}.toml"));
        let text = std::fs::read_to_string(&p).unwrap();
        let cfg: TrainConfig = toml::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(cfg.data.frames, 8, "{name}");
        assert_eq!(cfg.data.frame_sampling, FrameSampling::Uniform, "{name}");
        assert_eq!(cfg.data.captions, CaptionSampling::Random, "{name}");
        assert_eq!(cfg.eval.as_ref().unwrap().frames, 8, "{name}");
        assert!(text.contains(&format!("--format {name}")), "{name}");
    }
}
