//! The node's modules call downward only, and `proto` keeps its promises.
//!
//! Following a request should never mean jumping back to a file already left, so the
//! `crate::NAME` references between node's top-level modules must form no cycle (unit tests at
//! the bottom of a file may reach anywhere and are not counted). A new upward import fails here
//! with the modules of the loop named. The same check as `shared/tools/modcycles.py`, kept in
//! the test suite so CI holds it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level module -> the modules it references.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut files = Vec::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    for path in files {
        let rel = path.strip_prefix(src).unwrap();
        let top = rel.components().next().unwrap().as_os_str().to_string_lossy().trim_end_matches(".rs").to_string();
        if top == "lib" || top == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let text = match text.find("#[cfg(test)]\nmod tests") {
            Some(i) => &text[..i],
            None => &text[..],
        };
        let refs = graph.entry(top.clone()).or_default();
        for (i, _) in text.match_indices("crate::") {
            let rest = &text[i + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                // `use crate::{a, b::C};`
                let group = &group[..group.find('}').unwrap_or(group.len())];
                for item in group.split(',') {
                    let name: String = item.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                    refs.insert(name);
                }
            } else {
                refs.insert(rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect());
            }
        }
        refs.remove(&top);
    }
    let names: BTreeSet<String> = graph.keys().cloned().collect();
    for refs in graph.values_mut() {
        refs.retain(|r| names.contains(r));
    }
    graph
}

/// Groups of two or more modules that reach each other (Tarjan's strongly connected components).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct Walk<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(w: &mut Walk<'a>, v: &'a str) {
        let n = w.index.len();
        w.index.insert(v, n);
        w.low.insert(v, n);
        w.stack.push(v);
        for next in &w.graph[v] {
            let next = next.as_str();
            if !w.index.contains_key(next) {
                visit(w, next);
                let l = w.low[v].min(w.low[next]);
                w.low.insert(v, l);
            } else if w.stack.contains(&next) {
                let l = w.low[v].min(w.index[next]);
                w.low.insert(v, l);
            }
        }
        if w.low[v] == w.index[v] {
            let mut group = Vec::new();
            while let Some(m) = w.stack.pop() {
                group.push(m.to_string());
                if m == v {
                    break;
                }
            }
            if group.len() > 1 {
                group.sort();
                w.found.push(group);
            }
        }
    }
    let mut w = Walk { graph, index: BTreeMap::new(), low: BTreeMap::new(), stack: Vec::new(), found: Vec::new() };
    for v in graph.keys() {
        if !w.index.contains_key(v.as_str()) {
            visit(&mut w, v);
        }
    }
    w.found
}

#[test]
fn every_crates_modules_import_in_one_direction() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (krate, src, at_least) in [
        ("node", root.join("src"), 10),
        ("proto", root.join("../proto/src"), 10),
        ("cache", root.join("../cache/src"), 4),
    ] {
        let graph = module_graph(&src);
        assert!(graph.len() >= at_least, "found only {} modules in {}", graph.len(), src.display());
        let found = cycles(&graph);
        assert!(found.is_empty(), "import cycles between {krate}'s modules (calls must go down only): {found:?}");
    }
}

#[test]
fn the_cycle_finder_finds_cycles() {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (a, b) in [("conn", "object"), ("object", "mirror"), ("mirror", "object"), ("mirror", "reply")] {
        g.entry(a.into()).or_default().insert(b.into());
        g.entry(b.into()).or_default();
    }
    assert_eq!(cycles(&g), vec![vec!["mirror".to_string(), "object".to_string()]]);
    g.get_mut("mirror").unwrap().remove("object");
    assert!(cycles(&g).is_empty());
}

#[test]
fn proto_forbids_unsafe_and_keeps_fuzz_out_of_its_api() {
    let lib = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto/src/lib.rs")).unwrap();
    assert!(lib.contains("#![forbid(unsafe_code)]"), "proto must forbid unsafe code");
    assert!(
        lib.contains("#[cfg(feature = \"fuzzing\")]\npub mod fuzz;"),
        "proto::fuzz must exist only with the `fuzzing` feature"
    );
}
