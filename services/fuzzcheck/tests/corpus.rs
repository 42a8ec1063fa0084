//! Replays the committed fuzz corpus through the fuzz targets' properties on plain stable
//! `cargo test`, so that every seed, and every input that once broke a property, keeps
//! guarding the code in CI where no fuzzer runs. `fuzz/corpus/<target>/` belongs to the
//! target `fuzz/fuzz_targets/<target>.rs`, whose property is `candlepipe_fuzzcheck::TARGETS`'
//! entry of the same name.

use candlepipe_fuzzcheck::{property, TARGETS};
use candlepipe_model::codec;
use std::collections::BTreeSet;
use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// The cargo-fuzz directory at the repo root.
fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// The names of the entries of `dir` (files or directories), with `suffix` removed from
/// those that have it (others are left out).
fn names(dir: &Path, suffix: &str) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|name| name.strip_suffix(suffix).map(str::to_owned))
        .collect()
}

/// The files of one target's corpus, sorted.
fn corpus_files(target: &str) -> Vec<PathBuf> {
    let dir = fuzz_dir().join("corpus").join(target);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_fuzz_target_has_a_property_and_a_corpus() {
    let targets = names(&fuzz_dir().join("fuzz_targets"), ".rs");
    let corpora = names(&fuzz_dir().join("corpus"), "");
    let properties: BTreeSet<String> = TARGETS.iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(
        targets, properties,
        "fuzz/fuzz_targets/*.rs and candlepipe_fuzzcheck::TARGETS must name the same targets"
    );
    assert_eq!(
        corpora, properties,
        "each target needs a corpus directory fuzz/corpus/<target>/, and nothing else lives there"
    );
    for target in &targets {
        assert!(
            !corpus_files(target).is_empty(),
            "fuzz/corpus/{target}/ is empty"
        );
    }
}

#[test]
fn every_corpus_file_holds_its_target_property() {
    let mut replayed = 0;
    let mut broken = Vec::new();
    for &(target, _) in TARGETS {
        let check = property(target).expect("listed in TARGETS");
        for path in corpus_files(target) {
            let bytes = fs::read(&path).unwrap();
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| check(&bytes))) {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                broken.push(format!("{}: {message}", path.display()));
            }
            replayed += 1;
        }
    }
    assert!(
        broken.is_empty(),
        "{} of {replayed} corpus files break their property:\n{}",
        broken.len(),
        broken.join("\n\n")
    );
    println!("replayed {replayed} corpus files");
}

/// The hand-written seed that stands for what the producer sends must be exactly what the
/// encoder writes, or the fuzzer starts from a message no producer makes.
#[test]
fn the_encoder_seed_is_what_encode_writes() {
    let path = fuzz_dir().join("corpus/decode/seed-v1-encoded.json");
    let seed = fs::read(&path).unwrap();
    let candle = codec::decode(&seed).expect("the seed decodes");
    let mut encoded = Vec::new();
    codec::encode(&candle, candle.produced_at.unwrap(), &mut encoded).unwrap();
    assert!(
        encoded == seed,
        "{} is no longer what codec::encode writes; if the encoding changed on purpose, \
         replace the file with:\n{}",
        path.display(),
        String::from_utf8_lossy(&encoded)
    );
}
