//! Fuzzing of every parser that sees untrusted bytes: MJPEG and YUYV frames, safetensors and GGUF weight files,
//! the TOML config. Each target mutates the seed files of `tests/fuzz-corpus/<target>/` (overwrite a run of
//! bytes, truncate, insert, splice from another seed) and asserts the parser returns `Ok` with consistent sizes
//! or an `Err`, never a panic.
//!
//! Cases per target come from `SACCADE_FUZZ_CASES` (default 300, what CI runs); the long runs recorded in
//! `tests/fuzz-corpus/README.md` used `SACCADE_FUZZ_CASES=20000`. A failing input proptest finds is saved by
//! proptest under `tests/it/fuzz.proptest-regressions` and replayed first on every later run; inputs that
//! once broke a parser are also kept as files in the corpus, which [`corpus_files_never_panic`] replays.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::Device;
use proptest::prelude::*;
use saccade_runtime::capture::convert::{mjpeg_to_rgb, yuyv_to_rgb};
use saccade_tools::config::Config;

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz-corpus")
        .join(target)
}

/// The seed files of one target, sorted by name.
fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(corpus_dir(target))
        .unwrap_or_else(|e| panic!("reading corpus {target}: {e}"))
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.file_name().is_some_and(|n| n != "README.md"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "corpus {target} is empty");
    out
}

/// The seed bytes of a mutation target, read once per test run (not once per case): `mjpeg` and `config`
/// from the corpus, `weights` from the shipped glance net files (small, both formats).
fn seed_bytes(target: &'static str) -> &'static [Vec<u8>] {
    static MJPEG: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    static CONFIG: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    static WEIGHTS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    let from_corpus = || seeds(target).into_iter().map(|(_, b)| b).collect();
    match target {
        "mjpeg" => MJPEG.get_or_init(from_corpus),
        "config" => CONFIG.get_or_init(from_corpus),
        "weights" => WEIGHTS.get_or_init(|| {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/weights");
            ["glancenet.safetensors", "glancenet.q8_0.gguf"]
                .iter()
                .map(|f| std::fs::read(dir.join(f)).unwrap())
                .collect()
        }),
        other => panic!("no fuzz target {other}"),
    }
}

/// Seed `seed` (modulo the number of seeds) of `target` with `edits` applied.
fn mutated(target: &'static str, seed: usize, edits: &[Mutation]) -> Vec<u8> {
    let seeds = seed_bytes(target);
    apply(seeds[seed % seeds.len()].clone(), edits, seeds)
}

fn cases() -> u32 {
    std::env::var("SACCADE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

/// One edit of a byte string.
#[derive(Debug, Clone)]
enum Mutation {
    /// Overwrite `len` bytes at `at` (a fraction of the length) with `value`.
    Overwrite { at: f64, len: usize, value: u8 },
    /// Flip one bit.
    FlipBit { at: f64, bit: u8 },
    /// Keep only the first `fraction` of the bytes.
    Truncate { fraction: f64 },
    /// Insert `bytes` at `at`.
    Insert { at: f64, bytes: Vec<u8> },
    /// Replace everything from `at` with the tail of another seed from `from`.
    Splice { at: f64, other: usize, from: f64 },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (0.0..1.0f64, 1usize..16, any::<u8>()).prop_map(|(at, len, value)| Mutation::Overwrite {
            at,
            len,
            value
        }),
        (0.0..1.0f64, 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit { at, bit }),
        (0.0..1.0f64).prop_map(|fraction| Mutation::Truncate { fraction }),
        (0.0..1.0f64, proptest::collection::vec(any::<u8>(), 1..32))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (0.0..1.0f64, 0usize..8, 0.0..1.0f64).prop_map(|(at, other, from)| Mutation::Splice {
            at,
            other,
            from
        }),
    ]
}

fn pos(len: usize, at: f64) -> usize {
    ((len as f64 * at) as usize).min(len)
}

fn apply(mut bytes: Vec<u8>, mutations: &[Mutation], others: &[Vec<u8>]) -> Vec<u8> {
    for m in mutations {
        match m {
            Mutation::Overwrite { at, len, value } => {
                let start = pos(bytes.len(), *at);
                let end = (start + len).min(bytes.len());
                bytes[start..end].fill(*value);
            }
            Mutation::FlipBit { at, bit } => {
                if !bytes.is_empty() {
                    let i = pos(bytes.len() - 1, *at);
                    bytes[i] ^= 1 << bit;
                }
            }
            Mutation::Truncate { fraction } => {
                let keep = pos(bytes.len(), *fraction);
                bytes.truncate(keep);
            }
            Mutation::Insert { at, bytes: ins } => {
                let i = pos(bytes.len(), *at);
                bytes.splice(i..i, ins.iter().copied());
            }
            Mutation::Splice { at, other, from } => {
                let o = &others[other % others.len()];
                let i = pos(bytes.len(), *at);
                bytes.truncate(i);
                bytes.extend_from_slice(&o[pos(o.len(), *from)..]);
            }
        }
    }
    bytes
}

fn check_mjpeg(bytes: &[u8]) {
    let mut rgb = Vec::new();
    if let Ok((w, h)) = mjpeg_to_rgb(bytes, &mut rgb) {
        assert_eq!(rgb.len(), w as usize * h as usize * 3, "decoded size");
    }
}

fn check_config(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    if let Ok(config) = Config::from_toml(&text, "fuzz.toml") {
        // Whatever parses must pass its own validation again after a round trip.
        let again = toml::to_string(&config).unwrap();
        Config::from_toml(&again, "round trip").unwrap();
    }
}

fn check_weights(bytes: &[u8], dir: &Path) {
    let path = dir.join("w.bin");
    std::fs::write(&path, bytes).unwrap();
    // A flipped weight byte may still load; a panic must never happen.
    let _ = saccade_models::weights::load_any(&path, &Device::Cpu);
    let _ = saccade_models::weights::inspect_file(&path);
}

/// Every corpus file, through the harness of each coverage-guided target (`tests/fuzz-afl/src/lib.rs`, the same
/// functions the `cargo afl` binaries call): the seeds and every crash AFL++ ever found stay checked in CI.
#[test]
fn corpus_files_never_panic() {
    for target in crate::fuzz_afl::TARGETS {
        let files = seeds(crate::fuzz_afl::corpus_folder(target));
        for (name, bytes) in files {
            let run = std::panic::catch_unwind(|| crate::fuzz_afl::run(target, &bytes));
            assert!(
                run.is_ok(),
                "fuzz target {target} panics on corpus file {name}"
            );
        }
    }
    // The hand-made seeds themselves parse: a mutation test over seeds that never parse would test nothing.
    // (Crash inputs kept as regression cases, `crash-*`, and AFL++'s minimised queue, `afl-*`, are often
    // errors by design.)
    let hand_made = |target: &str| {
        seeds(target)
            .into_iter()
            .filter(|(name, _)| !name.starts_with("crash-") && !name.starts_with("afl-"))
    };
    for (name, bytes) in hand_made("mjpeg") {
        let mut rgb = Vec::new();
        mjpeg_to_rgb(&bytes, &mut rgb).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    for (name, bytes) in hand_made("yuyv") {
        // `[width u16 LE][height u16 LE][YUYV bytes]`, as the yuyv target reads them.
        let (w, h) = (
            u16::from_le_bytes([bytes[0], bytes[1]]) as u32,
            u16::from_le_bytes([bytes[2], bytes[3]]) as u32,
        );
        let mut rgb = Vec::new();
        yuyv_to_rgb(&bytes[4..], w, h, &mut rgb).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(rgb.len(), w as usize * h as usize * 3);
    }
    for (name, bytes) in hand_made("config") {
        let text = String::from_utf8(bytes).unwrap();
        Config::from_toml(&text, &name).unwrap_or_else(|e| panic!("{name}: {e:#}"));
    }
    for (name, bytes) in hand_made("uri") {
        let text = String::from_utf8(bytes).unwrap();
        saccade_runtime::capture::parse_source_uri(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    for (name, bytes) in hand_made("weights") {
        if name.starts_with("patchnet") {
            saccade_models::weights::load_bytes(Path::new(&name), &bytes, &Device::Cpu)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn mjpeg_decoder_never_panics(seed in 0usize..8, edits in proptest::collection::vec(mutation(), 1..4)) {
        check_mjpeg(&mutated("mjpeg", seed, &edits));
    }

    #[test]
    fn yuyv_converter_never_panics(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
        width in 0u32..40,
        height in 0u32..20,
    ) {
        let mut rgb = Vec::new();
        match yuyv_to_rgb(&bytes, width, height, &mut rgb) {
            Ok(()) => prop_assert_eq!(rgb.len(), width as usize * height as usize * 3),
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn config_parser_never_panics(seed in 0usize..4, edits in proptest::collection::vec(mutation(), 1..4)) {
        check_config(&mutated("config", seed, &edits));
    }

    #[test]
    fn config_parser_never_panics_on_any_text(text in "[ -~\n]{0,200}") {
        check_config(text.as_bytes());
    }

    #[test]
    fn weight_loaders_never_panic(seed in 0usize..2, edits in proptest::collection::vec(mutation(), 1..3)) {
        let dir = tempfile::tempdir().unwrap();
        check_weights(&mutated("weights", seed, &edits), dir.path());
    }
}
