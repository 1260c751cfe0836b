//! The house rules of the source tree (ARCHITECTURE.md), read from the files themselves: no import circles
//! between the files of a crate, and no file over 700 lines outside its tests.
//!
//! A file's imports are its `crate::…` and `super::…` paths outside `#[cfg(test)]` modules, each resolved
//! to the longest module path that is a file of the crate (`a/b.rs` and `a/b/mod.rs` are `a::b`). A
//! module's `mod child;` and `pub use child::…` lines are its declaration, not an import, so a parent that
//! re-exports its children is not a circle; a child that imports its parent is an edge like any other.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const CRATES: [&str; 3] = ["models", "runtime", "tools"];
const MAX_CODE_LINES: usize = 700;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `a/b.rs` → `["a", "b"]`, `a/mod.rs` → `["a"]`, `lib.rs` → `[]`.
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// Whether a file holds only tests: `tests.rs`, `testutil.rs`, `*_tests.rs`, or anything under a `tests/`.
fn is_test_file(src: &Path, file: &Path) -> bool {
    let rel = file.strip_prefix(src).unwrap();
    let name = rel.file_stem().unwrap().to_string_lossy();
    name == "tests"
        || name == "testutil"
        || name.ends_with("_tests")
        || rel.components().any(|c| c.as_os_str() == "tests")
}

/// The file's text without its `#[cfg(test)]` items (a module or function after the attribute, to its
/// closing brace at the same indentation, or a `mod x;` line).
fn without_tests(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]") || trimmed.starts_with("#[cfg(all(test") {
            let indent = line.len() - trimmed.len();
            // Skip further attributes, then the item.
            let mut item = lines.next().unwrap_or_default();
            while item.trim_start().starts_with("#[") {
                item = lines.next().unwrap_or_default();
            }
            if item.trim_end().ends_with(';') {
                continue;
            }
            let closing = format!("{}}}", " ".repeat(indent));
            for rest in lines.by_ref() {
                if rest.trim_end() == closing {
                    break;
                }
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Lines, blank and comment lines included (a file's length as an editor shows it).
fn code_lines(text: &str) -> usize {
    text.lines().count()
}

/// `crate::a::b::C` and `super::x::Y` paths in the code of `text` (comments left out), use-trees
/// (`crate::{a, b::{c, d}}`) expanded.
fn import_paths(text: &str, module: &[String]) -> Vec<Vec<String>> {
    let code: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let bytes = code.as_bytes();
    let mut paths = Vec::new();
    for start in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(i) = code[from..].find(start) {
            let at = from + i;
            from = at + start.len();
            // A whole word: not `saccade_crate::`, `$crate::` or the second `super::` of a chain.
            if at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || b"_$:".contains(&bytes[at - 1]))
            {
                continue;
            }
            let mut base: Vec<String> = if start == "crate::" {
                Vec::new()
            } else {
                module[..module.len().saturating_sub(1)].to_vec()
            };
            let mut rest = &code[from..];
            while let Some(r) = rest.strip_prefix("super::") {
                base.pop();
                rest = r;
            }
            use_tree(&mut rest.chars().peekable(), &base, &mut paths);
        }
    }
    paths
}

/// Reads one use-tree (`a::b`, `a::{b, c::d}`, `a::*`) after `base`, pushing every path it names.
fn use_tree(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    base: &[String],
    out: &mut Vec<Vec<String>>,
) {
    let mut path = base.to_vec();
    let mut word = String::new();
    while let Some(&c) = chars.peek() {
        if c.is_ascii_alphanumeric() || c == '_' {
            word.push(c);
            chars.next();
        } else if c == ':' {
            chars.next();
            if !word.is_empty() {
                path.push(std::mem::take(&mut word));
            }
        } else if c == '{' {
            chars.next();
            loop {
                while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
                    chars.next();
                }
                match chars.peek() {
                    Some('}') => {
                        chars.next();
                        return;
                    }
                    None => return,
                    Some(c) if c.is_ascii_alphanumeric() || *c == '_' => {
                        use_tree(chars, &path, out);
                    }
                    // `*`, a comment, anything else: step over it (every turn of the loop moves on).
                    _ => {
                        chars.next();
                    }
                }
            }
        } else {
            break;
        }
    }
    if !word.is_empty() && word != "self" {
        path.push(word);
    }
    out.push(path);
}

/// The strongly connected components with more than one file (Tarjan).
fn circles(edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Vec<Vec<String>> {
    struct State<'a> {
        edges: &'a BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        index: BTreeMap<&'a Vec<String>, usize>,
        low: BTreeMap<&'a Vec<String>, usize>,
        stack: Vec<&'a Vec<String>>,
        on_stack: BTreeSet<&'a Vec<String>>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a Vec<String>) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        if let Some(ws) = s.edges.get(v) {
            for w in ws {
                let w = s.edges.get_key_value(w).map_or(w, |(k, _)| k);
                if !s.index.contains_key(w) {
                    visit(s, w);
                    let low = s.low[v].min(s.low[w]);
                    s.low.insert(v, low);
                } else if s.on_stack.contains(w) {
                    let low = s.low[v].min(s.index[w]);
                    s.low.insert(v, low);
                }
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.join("::"));
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.out.push(component);
            }
        }
    }
    let mut s = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.out
}

/// Each crate's file graph: module path → the modules it imports.
fn graphs() -> BTreeMap<&'static str, BTreeMap<Vec<String>, BTreeSet<Vec<String>>>> {
    let mut out = BTreeMap::new();
    for krate in CRATES {
        let src = root().join(krate).join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        let modules: BTreeMap<Vec<String>, PathBuf> = files
            .iter()
            .filter(|f| !is_test_file(&src, f))
            .map(|f| (module_path(&src, f), f.clone()))
            .collect();
        let mut edges = BTreeMap::new();
        for (module, file) in &modules {
            let text = without_tests(&std::fs::read_to_string(file).unwrap());
            let mut targets = BTreeSet::new();
            for path in import_paths(&text, module) {
                let target = (1..=path.len())
                    .rev()
                    .map(|k| path[..k].to_vec())
                    .find(|p| modules.contains_key(p));
                if let Some(t) = target {
                    if &t != module {
                        targets.insert(t);
                    }
                }
            }
            edges.insert(module.clone(), targets);
        }
        out.insert(krate, edges);
    }
    out
}

#[test]
fn no_import_circles_between_the_files_of_a_crate() {
    let mut found = Vec::new();
    for (krate, edges) in graphs() {
        for component in circles(&edges) {
            found.push(format!("{krate}: {}", component.join(" → ")));
        }
    }
    assert!(
        found.is_empty(),
        "files that import each other (directly or round a circle):\n{}",
        found.join("\n")
    );
}

#[test]
fn no_file_holds_more_than_700_lines_outside_its_tests() {
    let mut long = Vec::new();
    for krate in CRATES {
        let src = root().join(krate).join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        for file in files.iter().filter(|f| !is_test_file(&src, f)) {
            let lines = code_lines(&without_tests(&std::fs::read_to_string(file).unwrap()));
            if lines > MAX_CODE_LINES {
                long.push(format!(
                    "{}: {lines} lines outside tests",
                    file.strip_prefix(root()).unwrap().display()
                ));
            }
        }
    }
    assert!(
        long.is_empty(),
        "over {MAX_CODE_LINES} lines (split by idea; tests may go to a sibling tests.rs):\n{}",
        long.join("\n")
    );
}

/// The checker itself: a circle through `super::` and a `crate::{…}` group is found, a parent's
/// re-export of its child is not an edge, and `#[cfg(test)]` modules are left out.
#[test]
fn the_checker_finds_a_circle_and_ignores_tests_and_re_exports() {
    let a = vec!["focus".to_string(), "a".to_string()];
    let b = vec!["focus".to_string(), "b".to_string()];
    let parent = vec!["focus".to_string()];
    let paths = import_paths(
        "use super::b::Thing;\n/// [`crate::doc::Link`]\nuse crate::{focus::{a, b::{self, C}}, imageops, x::*};",
        &a,
    );
    let s = |p: &[&str]| p.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(
        paths,
        vec![
            s(&["focus", "a"]),
            s(&["focus", "b"]),
            s(&["focus", "b", "C"]),
            s(&["imageops"]),
            s(&["x"]),
            s(&["focus", "b", "Thing"]),
        ]
    );
    let mut edges = BTreeMap::new();
    edges.insert(a.clone(), BTreeSet::from([b.clone()]));
    edges.insert(b.clone(), BTreeSet::from([parent.clone()]));
    edges.insert(parent.clone(), BTreeSet::new());
    assert!(circles(&edges).is_empty());
    edges.insert(parent.clone(), BTreeSet::from([a.clone()]));
    assert_eq!(
        circles(&edges),
        vec![vec![
            "focus".to_string(),
            "focus::a".to_string(),
            "focus::b".to_string()
        ]]
    );
    let text = "fn f() {}\n#[cfg(test)]\nmod tests {\n    use crate::x;\n}\nfn g() {}\n";
    assert_eq!(without_tests(text), "fn f() {}\nfn g() {}\n");
    assert_eq!(code_lines("// c\n\nfn f() {}\n"), 3);
}
