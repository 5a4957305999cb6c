//! The shard schema (`schemas/shard-v1.md`, `schemas/shard-v2.md`): every dataset and
//! attribute name lives here and nowhere else.

/// Value of the `schema` attribute.
pub const SCHEMA_NAME: &str = "regionfeat-shard";
/// Value of the `schema_version` attribute written by this build.
pub const SCHEMA_VERSION: u32 = 2;
/// Versions this build reads (v1: region shards without `model_kind`).
pub const READABLE_VERSIONS: [u32; 2] = [1, 2];

/// Item datasets (length N).
pub mod item {
    /// Manifest id.
    pub const ID: &str = "item_id";
    /// Caption (the first when the item has several).
    pub const CAPTION: &str = "caption";
    /// All captions of the item, a JSON list of strings (absent in shards written before it:
    /// readers then take `caption`).
    pub const CAPTIONS: &str = "captions";
    /// Media path.
    pub const SOURCE: &str = "source";
    /// 0 video, 1 image.
    pub const KIND: &str = "kind";
    /// Manifest row.
    pub const MANIFEST_INDEX: &str = "manifest_index";
    /// First frame row.
    pub const FRAME_START: &str = "frame_start";
    /// Frame rows.
    pub const NUM_FRAMES: &str = "num_frames";
    /// `(h, w)` of the upright original.
    pub const IMAGE_HW: &str = "image_hw";
    /// Sampling duration, seconds.
    pub const DURATION: &str = "duration";
}

/// Frame datasets (length T).
pub mod frame {
    /// Owning item row.
    pub const ITEM: &str = "frame_item";
    /// Sample time.
    pub const TIMESTAMPS: &str = "timestamps";
    /// Presentation time of the frame taken.
    pub const FRAME_TIMES: &str = "frame_times";
    /// Valid regions.
    pub const NUM_BOXES: &str = "num_boxes";
    /// `[T,K,4]` pixels.
    pub const BOXES: &str = "boxes";
    /// `[T,K,7]`.
    pub const LOCATIONS: &str = "locations";
    /// `[T,K]`.
    pub const SCORES: &str = "scores";
    /// `[T,K]`.
    pub const CLASSES: &str = "classes";
    /// `[T,K]`.
    pub const ATTRIBUTES: &str = "attributes";
    /// `[T,K]`.
    pub const ATTR_SCORES: &str = "attr_scores";
    /// `[T,K,D]`.
    pub const FEATURES: &str = "features";
    /// Grid shards (v2): `[T, Hg*Wg, D]`, rows over (y, x).
    pub const GRID_FEATURES: &str = "grid_features";
    /// The per-frame datasets only region shards have.
    pub const REGION_ONLY: [&str; 8] = [
        NUM_BOXES,
        BOXES,
        LOCATIONS,
        SCORES,
        CLASSES,
        ATTRIBUTES,
        ATTR_SCORES,
        FEATURES,
    ];
}

/// Root attributes.
pub mod attr {
    /// `"regionfeat-shard"`.
    pub const SCHEMA: &str = "schema";
    /// Schema version.
    pub const SCHEMA_VERSION: &str = "schema_version";
    /// Tool version.
    pub const TOOL_VERSION: &str = "tool_version";
    /// Shard number.
    pub const SHARD_ID: &str = "shard_id";
    /// Detector name.
    pub const DETECTOR_NAME: &str = "detector_name";
    /// Detector sha256.
    pub const DETECTOR_SHA256: &str = "detector_sha256";
    /// JSON list.
    pub const CLASS_NAMES: &str = "class_names";
    /// JSON list.
    pub const ATTRIBUTE_NAMES: &str = "attribute_names";
    /// D.
    pub const FEATURE_DIM: &str = "feature_dim";
    /// K.
    pub const MAX_BOXES: &str = "max_boxes";
    /// Extraction config JSON.
    pub const CONFIG: &str = "config";
    /// v2: `"regions"` or `"grid"` (absent in v1 = regions).
    pub const MODEL_KIND: &str = "model_kind";
    /// v2 grid shards: u32 `[Hg, Wg]`.
    pub const GRID_HW: &str = "grid_hw";
}

/// Rows per chunk of the small per-frame datasets.
pub const SMALL_CHUNK_ROWS: usize = 64;

/// File name of shard `id`.
pub fn shard_file_name(id: u64) -> String {
    format!("shard-{id:06}.h5")
}

/// File name of shard `id`'s done-record.
pub fn done_file_name(id: u64) -> String {
    format!("shard-{id:06}.done.json")
}
