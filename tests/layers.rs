//! The module graph runs one way: every top-level module of `src/` sits in a layer, and a
//! module may import only from its own layer or the ones below (ARCHITECTURE.md, "Layers").
//! Within a layer imports must not form a cycle. This test reads the crate's own sources (every
//! `crate::…` path outside `#[cfg(test)]` code and comments) and fails naming the file and line
//! of an import that goes up, of a cycle, or of a module no layer lists.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bottom first. A new module goes into the lowest layer whose modules it needs.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "wire types, pure translation, plain helpers",
        &[
            "secret",
            "sse",
            "excerpt",
            "json_syntax",
            "clock",
            "quota_day",
            "translate",
            "admission",
            "body",
            "router",
            "outbox",
            "shard",
        ],
    ),
    (
        "config and small ledgers",
        &[
            "config",
            "usage",
            "timeline",
            "signatures",
            "sessions",
            "lockout",
            "logging",
            "models_cache",
            "retry_budget",
            "reload_state",
            "stored_responses",
            "affinity",
        ],
    ),
    ("key pool", &["pool"]),
    (
        "upstream connector, classify, errors",
        &["upstream", "classify", "error"],
    ),
    ("live state", &["state", "store"]),
    (
        "proxy core",
        &["metrics", "request_log", "media", "proxy", "relay"],
    ),
    ("access and live config", &["access", "cors", "reload"]),
    ("handlers", &["api", "dashboard"]),
    ("HTTP front end", &["server"]),
    ("command line (main.rs)", &["healthcheck"]),
];

/// Files that are the crate's roots, not modules of a layer.
const ROOTS: &[&str] = &["lib", "main"];

struct Import {
    from: String,
    to: String,
    at: String,
}

#[test]
fn modules_import_only_downward_and_without_cycles() {
    let layer_of: BTreeMap<&str, usize> = LAYERS
        .iter()
        .enumerate()
        .flat_map(|(i, (_, mods))| mods.iter().map(move |m| (*m, i)))
        .collect();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let imports = imports(&src);
    let mut problems = Vec::new();

    let mut modules: BTreeSet<String> = BTreeSet::new();
    for file in rust_files(&src) {
        if let Some(m) = top_module(&src, &file) {
            modules.insert(m);
        }
    }
    for m in &modules {
        if !layer_of.contains_key(m.as_str()) {
            problems.push(format!(
                "src/{m}: no layer lists this module; add it to LAYERS in tests/layers.rs and to ARCHITECTURE.md"
            ));
        }
    }
    for i in &imports {
        let (Some(&from), Some(&to)) = (layer_of.get(i.from.as_str()), layer_of.get(i.to.as_str()))
        else {
            continue;
        };
        if to > from {
            problems.push(format!(
                "{}: `{}` ({}) imports `{}` from a layer above ({})",
                i.at, i.from, LAYERS[from].0, i.to, LAYERS[to].0
            ));
        }
    }
    let mut edges: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for i in &imports {
        edges.entry(&i.from).or_default().insert(&i.to);
    }
    for cycle in cycles(&edges) {
        problems.push(format!("modules in one import cycle: {}", cycle.join(", ")));
    }
    assert!(
        problems.is_empty(),
        "the module graph must run one way:\n{}",
        problems.join("\n")
    );
}

/// The checker itself: an upward import and a cycle are found.
#[test]
fn the_checker_finds_cycles() {
    let mut edges: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    edges.entry("a").or_default().insert("b");
    edges.entry("b").or_default().insert("c");
    edges.entry("c").or_default().insert("a");
    edges.entry("c").or_default().insert("d");
    assert_eq!(cycles(&edges).len(), 1);
    edges.remove("c");
    assert!(cycles(&edges).is_empty());
    let names: Vec<String> =
        crate_paths("use crate::{\n    a::{B, C},\n    d,\n};\nlet x = crate::e::f();")
            .into_iter()
            .map(|(_, name)| name)
            .collect();
    assert_eq!(names, ["a", "d", "e"]);
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// `src/pool/cell.rs` -> `pool`; `src/lib.rs` -> None (a root).
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!ROOTS.contains(&name)).then(|| name.to_string())
}

fn imports(src: &Path) -> Vec<Import> {
    let mut out = Vec::new();
    for file in rust_files(src) {
        let Some(from) = top_module(src, &file) else {
            continue;
        };
        // Unit tests may reach anywhere: they are not part of the graph.
        if file.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("read a source file");
        let rel = file
            .strip_prefix(src.parent().expect("crate root"))
            .unwrap_or(&file);
        // The code joined again, with each joined line's number in the file.
        let lines = code_lines(&text);
        let code: String = lines.iter().map(|(_, l)| format!("{l}\n")).collect();
        for (offset, to) in crate_paths(&code) {
            if to == from {
                continue;
            }
            let joined_line = code[..offset].matches('\n').count();
            let n = lines.get(joined_line).map_or(0, |(n, _)| *n);
            out.push(Import {
                from: from.clone(),
                to,
                at: format!("{}:{}", rel.display(), n + 1),
            });
        }
    }
    out
}

/// The file's lines without comments, up to its `#[cfg(test)]` module.
fn code_lines(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate().peekable();
    while let Some((n, line)) = lines.next() {
        let t = line.trim_start();
        if t.starts_with("#[cfg(test)]")
            && lines
                .peek()
                .is_some_and(|(_, next)| next.trim_start().starts_with("mod tests"))
        {
            break;
        }
        if t.starts_with("//") {
            continue;
        }
        out.push((n, line.split(" //").next().unwrap_or(line)));
    }
    out
}

/// The top-level modules that `code` names through `crate::`, with the offset of each
/// mention: `crate::a::b`, and each first name inside `crate::{a::{B, C}, d}`.
fn crate_paths(code: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(i) = code[pos..].find("crate::") {
        let at = pos + i;
        pos = at + "crate::".len();
        let before = code[..at].chars().last();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // e.g. `mycrate::`
        }
        let rest = &code[pos..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0usize;
            let mut start = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if start && (c.is_alphanumeric() || c == '_') => {
                        push(&mut out, pos + 1 + j, ident(&group[j..]));
                        start = false;
                    }
                    _ => {}
                }
            }
        } else {
            push(&mut out, at, ident(rest));
        }
    }
    out
}

fn ident(s: &str) -> String {
    s.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

fn push(out: &mut Vec<(usize, String)>, at: usize, name: String) {
    if !name.is_empty() && name != "self" {
        out.push((at, name));
    }
}

/// Every strongly connected group of more than one module (Tarjan), as a path.
fn cycles<'a>(edges: &BTreeMap<&'a str, BTreeSet<&'a str>>) -> Vec<Vec<&'a str>> {
    struct T<'a, 'e> {
        edges: &'e BTreeMap<&'a str, BTreeSet<&'a str>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<Vec<&'a str>>,
    }
    fn visit<'a>(t: &mut T<'a, '_>, v: &'a str) {
        let i = t.index.len();
        t.index.insert(v, i);
        t.low.insert(v, i);
        t.stack.push(v);
        t.on.insert(v);
        let next: Vec<&'a str> = t.edges.get(v).into_iter().flatten().copied().collect();
        for w in next {
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let lv = t.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.index[v] {
            let mut group = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                group.push(w);
                if w == v {
                    break;
                }
            }
            if group.len() > 1 {
                group.reverse();
                t.out.push(group);
            }
        }
    }
    let mut t = T {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    let nodes: BTreeSet<&'a str> = edges
        .iter()
        .flat_map(|(k, vs)| std::iter::once(*k).chain(vs.iter().copied()))
        .collect();
    for v in nodes {
        if !t.index.contains_key(v) {
            visit(&mut t, v);
        }
    }
    t.out
}
