//! Writes the seed corpus, `fuzz/corpus/<target>/`, from Ferry's own encoders and the stream
//! fixtures (`tests/fixtures/*.json`): a few valid inputs per target, each in the shape its
//! target reads (see the targets' first lines). `make fuzz-seeds` runs it; the files are
//! committed, small, and named by what they hold. Running it again rewrites them (an item's
//! attributes come out in hash order, so the bytes may differ, not what they mean).

use base64::Engine;
use ferry_core::buffer::{pack, FORMAT_VERSION};
use ferry_core::codec;
use ferry_core::{AttributeValue as V, ChangeRecord, Item, Version};
use ferry_fuzz::{body_of_payload, B64};
use std::path::{Path, PathBuf};

/// A body written by format-1 enqueues (numbers as text), from the core's own tests.
const FORMAT_1_BODY: &str = "RlJZAZkAAACQAoHQlf+8MQJyAwARggwA5AABAnBrAQItMAUCb2sDDQD/JAF\
    tBQEBbAYDAQIrNQABeAICAAEBbgEGMUUrMTI1Am5zCAMEMC4xMCctMTIzNDU2Nzg5MAoACVEDMWU1g28AcQJyMg\
    JyMoQMALABAQJwawEDMDA3AA==";

fn item(pairs: Vec<(&str, V)>) -> Item {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// Every attribute type, nested, numbers in their odd spellings; a tombstone; a plain record.
fn records() -> Vec<ChangeRecord> {
    let key = item(vec![("pk", V::S("order#1001".into()))]);
    let mut image = key.clone();
    image.extend(item(vec![
        ("total", V::N("129.95".into())),
        (
            "big",
            V::N("-12345678901234567890123456789012345678".into()),
        ),
        ("odd", V::N("1E+125".into())),
        ("ns", V::Ns(vec!["0.10".into(), "-0".into(), "1e5".into()])),
        ("ss", V::Ss(vec!["a".into(), "b".into()])),
        ("bs", V::Bs(vec![vec![0, 1], vec![255]])),
        ("b", V::B(vec![0, 1, 2, 3])),
        ("ok", V::Bool(true)),
        ("none", V::Null(true)),
        (
            "m",
            V::M(item(vec![(
                "l",
                V::L(vec![V::N("+5".into()), V::S("x".into()), V::M(Item::new())]),
            )])),
        ),
        ("ferry_ts", V::N("1732564860456".into())),
        ("ferry_origin", V::S("us-east-1".into())),
    ]));
    let version = Version::new(1_732_564_860_456, "us-east-1");
    let tomb_key = item(vec![("pk", V::N("007".into()))]);
    let mut tomb = tomb_key.clone();
    tomb.insert("ferry_deleted".into(), V::Bool(true));
    tomb.insert("ttl".into(), V::N("1733860860".into()));
    vec![
        ChangeRecord {
            key: key.clone(),
            image,
            tombstone: false,
            version: version.clone(),
            source_region: "us-east-1".into(),
            written_at_ms: 1_732_564_860_500,
        },
        ChangeRecord {
            key: tomb_key,
            image: tomb,
            tombstone: true,
            version: Version::new(1_732_564_861_000, "eu-west-1"),
            source_region: "eu-west-1".into(),
            written_at_ms: 1_732_564_861_001,
        },
        ChangeRecord {
            key: key.clone(),
            image: item(vec![
                ("pk", V::S("order#1001".into())),
                ("n", V::N("3".into())),
            ]),
            tombstone: false,
            version,
            source_region: "us-east-1".into(),
            written_at_ms: 1_732_564_860_457,
        },
    ]
}

/// The body `pack` writes for a few records (none: the framing of an empty payload, which
/// `pack` never sends but `unpack` reads).
fn body(records: &[ChangeRecord]) -> String {
    match pack(records).expect("packs").first() {
        Some(batch) => batch[0].body.clone(),
        None => body_of_payload(&payload(records), FORMAT_VERSION),
    }
}

fn payload(records: &[ChangeRecord]) -> Vec<u8> {
    let mut p = Vec::new();
    codec::put_varint(&mut p, records.len() as u64);
    for r in records {
        codec::put_record(&mut p, r);
    }
    p
}

struct Corpus(PathBuf);

impl Corpus {
    fn put(&self, target: &str, name: &str, mode: Option<u8>, bytes: &[u8]) {
        let dir = self.0.join(target);
        std::fs::create_dir_all(&dir).expect("corpus dir");
        let mut data = mode.map(|m| vec![m]).unwrap_or_default();
        data.extend_from_slice(bytes);
        std::fs::write(dir.join(name), data).expect("seed written");
    }
}

fn main() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR"));
    let corpus = Corpus(fuzz.join("corpus"));
    let records = records();
    let one = &records[..1];

    // unpack: 0 body text, 1 frame, 2 payload (format 2; with 0x80, format 1).
    for (name, rs) in [("one", one), ("three", &records[..]), ("none", &[][..])] {
        let b = body(rs);
        corpus.put("unpack", &format!("body-{name}"), Some(0), b.as_bytes());
        let frame = B64.decode(&b).expect("base64");
        corpus.put("unpack", &format!("frame-{name}"), Some(1), &frame);
        corpus.put("unpack", &format!("payload-{name}"), Some(2), &payload(rs));
    }
    corpus.put("unpack", "body-format-1", Some(0), FORMAT_1_BODY.as_bytes());
    let v1 = B64.decode(FORMAT_1_BODY).expect("base64");
    corpus.put("unpack", "frame-format-1", Some(1), &v1);
    let v1_payload = lz4_flex::block::decompress_size_prepended(&v1[4..]).expect("lz4");
    corpus.put("unpack", "payload-format-1", Some(0x82), &v1_payload);

    // item_codec: 0 an item, 1 a record, 2 bytes a record is built from.
    for (i, r) in records.iter().enumerate() {
        corpus.put(
            "item_codec",
            &format!("item-{i}"),
            Some(0),
            &codec::encode_item(&r.image),
        );
        let mut bytes = Vec::new();
        codec::put_record(&mut bytes, r);
        corpus.put("item_codec", &format!("record-{i}"), Some(1), &bytes);
    }
    let built: Vec<u8> = (0..=255u8).map(|b| b.wrapping_mul(37)).collect();
    corpus.put("item_codec", "built", Some(2), &built);

    // classify: each stream record of the fixtures, as DynamoDB JSON.
    let fixtures = fuzz.join("../tests/fixtures");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&fixtures)
        .expect("tests/fixtures")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    for path in paths {
        let text = std::fs::read_to_string(&path).expect("fixture");
        let event: serde_json::Value = serde_json::from_str(&text).expect("fixture JSON");
        let stem = path
            .file_stem()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let Some(list) = event.get("Records").and_then(|r| r.as_array()) else {
            continue;
        };
        for (i, record) in list.iter().enumerate() {
            let json = serde_json::to_vec_pretty(record).expect("JSON");
            let name = if list.len() == 1 {
                stem.clone()
            } else {
                format!("{stem}-{i}")
            };
            corpus.put("classify", &name, None, &json);
        }
    }

    // checkpoint: a saved backfill, half done (the `cli` feature's target).
    let resume = B64.encode(codec::encode_item(&records[0].key));
    let checkpoint = serde_json::json!({
        "table": "orders",
        "from": "us-east-1",
        "to": ["eu-west-1", "ap-south-1"],
        "segments": 4,
        "merge_mode": "item",
        "finished": [0, 2],
        "resume_after": { "1": resume },
    });
    let text = serde_json::to_vec_pretty(&checkpoint).expect("JSON");
    corpus.put("checkpoint", "half-done", None, &text);
    let mut old = checkpoint.clone();
    old.as_object_mut().expect("object").remove("merge_mode");
    let text = serde_json::to_vec_pretty(&old).expect("JSON");
    corpus.put("checkpoint", "before-merge-modes", None, &text);

    // dlq: attributes, a NUL, the body (the `cli` feature's target).
    let dlq =
        |attributes: &str, body: &str| [attributes.as_bytes(), b"\0", body.as_bytes()].concat();
    let reason = "ferry-records=1\nferry-reason=refused: origin is the destination region\n";
    corpus.put("dlq", "refused", None, &dlq(reason, &body(one)));
    let poison = "ferry-reason=unreadable: not a Ferry buffer message (bad magic)\n";
    corpus.put("dlq", "unreadable", None, &dlq(poison, "{\"Records\":[]}"));
    corpus.put(
        "dlq",
        "redriven",
        None,
        &dlq("ferry-first-sent=1732564860000\n", &body(&records)),
    );
}
