//! The docs are normative and every guarantee in `docs/threat-model.md` names the test that
//! shows it: every test a document names (a snake_case name of five words or more in
//! backticks, alone or as the last part of `crate::file::name`) must exist as a function in
//! the tree, so that renaming or merging a test cannot leave a guarantee pointing at nothing.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Names of five or more lowercase words joined by `_`, the way the tests are named.
fn looks_like_a_test_name(s: &str) -> bool {
    s.split('_').count() >= 5
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !s.split('_').any(str::is_empty)
}

/// The test names a Markdown text names in code spans.
fn named_tests(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, span) in text.split('`').enumerate() {
        if i % 2 == 0 {
            continue; // outside a code span
        }
        for word in span.split(|c: char| c.is_whitespace() || c == ',') {
            let last = word
                .rsplit("::")
                .next()
                .unwrap_or("")
                .trim_matches(|c: char| "(),.…".contains(c));
            // Metric names (`bulwark_job_…`) are named in the docs too; they are no tests.
            if looks_like_a_test_name(last) && !last.starts_with("bulwark_") {
                out.insert(last.to_string());
            }
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n != "target") {
                rust_files(&p, out);
            }
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Every `fn NAME` in the Rust files under `dirs`.
fn functions(root: &Path, dirs: &[&str]) -> BTreeSet<String> {
    let mut files = Vec::new();
    for d in dirs {
        rust_files(&root.join(d), &mut files);
    }
    let mut out = BTreeSet::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for piece in text.split("fn ").skip(1) {
            let name: String = piece
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            out.insert(name);
        }
    }
    out
}

#[test]
fn every_test_the_docs_name_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let fns = functions(&root, &["crates", "fuzz", "bench"]);
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.push(root.join("README.md"));
    let mut named = 0;
    let mut missing = Vec::new();
    for doc in &docs {
        for name in named_tests(&std::fs::read_to_string(doc).unwrap()) {
            named += 1;
            if !fns.contains(&name) {
                missing.push(format!("{}: {name}", doc.display()));
            }
        }
    }
    assert!(named > 100, "found only {named} test names in {docs:?}");
    assert!(
        missing.is_empty(),
        "the docs name tests that do not exist (renamed or merged? update the docs): {missing:#?}"
    );
}

#[test]
fn test_names_are_found_in_code_spans_only() {
    let text = "see `a::b::one_two_three_four_five` and `x, six_seven_eight_nine_ten (root)`; \
                not nine_eight_seven_six_five outside, nor `bulwark_job_points_of_a_day_x`, \
                nor `two_words`";
    let got: Vec<String> = named_tests(text).into_iter().collect();
    assert_eq!(got, ["one_two_three_four_five", "six_seven_eight_nine_ten"]);
}
