//! What ships (SPEC §9): the Kubernetes manifests in `deploy/kubernetes`, played by a pretend
//! kubelet. The ConfigMap's and the Secret's files come from the kustomization, are laid out at
//! the Deployment's mount paths in the kubelet's `..data` layout, and the real binary is started
//! with the Deployment's `GEMINI_ROTATOR_CONFIG`; then both volumes are swapped the way the kubelet
//! updates them and the running process must follow. Also: the manifests, the Dockerfile and
//! Compose agree with the configs they ship (the Redis component's and the Compose `redis`
//! profile's configs are the base ones but `[state]`, and mount or name the Redis they use), and
//! `--healthcheck` (the image's HEALTHCHECK) tells a live server from a dead one. Every wait is a
//! bounded poll.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::proxy::BIN;
use support::*;

/// Leave headroom over SPEC §3's 2 s for a loaded CI machine.
const APPLY: Duration = Duration::from_secs(6);

// ---- the manifests ---------------------------------------------------------------------------

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The YAML our manifests use: block maps, block lists, plain or quoted scalars, comments. No
/// anchors, flow collections or block scalars (the test fails loudly if one shows up).
#[derive(Clone, Debug, PartialEq)]
enum Yaml {
    Map(Vec<(String, Yaml)>),
    List(Vec<Yaml>),
    Str(String),
}

impl Yaml {
    fn parse(text: &str) -> Yaml {
        let mut lines: Vec<(usize, String)> = text
            .lines()
            .filter_map(|l| {
                let body = strip_comment(l);
                let trimmed = body.trim_start();
                (!trimmed.is_empty() && trimmed != "---")
                    .then(|| (body.len() - trimmed.len(), trimmed.trim_end().to_string()))
            })
            .collect();
        let mut i = 0;
        let indent = lines.first().map_or(0, |l| l.0);
        let doc = block(&mut lines, &mut i, indent);
        assert_eq!(i, lines.len(), "unparsed YAML from: {:?}", lines.get(i));
        doc
    }

    fn get(&self, key: &str) -> &Yaml {
        match self {
            Yaml::Map(entries) => entries
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v)
                .unwrap_or_else(|| panic!("no `{key}` in {self:?}")),
            _ => panic!("`{key}` asked of a non-map {self:?}"),
        }
    }

    fn has(&self, key: &str) -> bool {
        matches!(self, Yaml::Map(entries) if entries.iter().any(|(k, _)| k == key))
    }

    /// `a.b.c` through maps.
    fn at(&self, path: &str) -> &Yaml {
        path.split('.').fold(self, |node, key| node.get(key))
    }

    fn str(&self) -> &str {
        match self {
            Yaml::Str(s) => s,
            _ => panic!("expected a scalar, got {self:?}"),
        }
    }

    fn list(&self) -> &[Yaml] {
        match self {
            Yaml::List(items) => items,
            _ => panic!("expected a list, got {self:?}"),
        }
    }

    fn num(&self) -> u64 {
        self.str()
            .parse()
            .unwrap_or_else(|_| panic!("not a number: {self:?}"))
    }
}

fn strip_comment(line: &str) -> &str {
    let mut quote = None;
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '#') if i == 0 || line[..i].ends_with(' ') => return &line[..i],
            _ => {}
        }
    }
    line
}

fn scalar(s: &str) -> Yaml {
    assert!(
        !s.starts_with(['[', '{', '|', '>', '&', '*']),
        "YAML this test does not read: {s}"
    );
    let unquoted = s
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .or_else(|| s.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')))
        .unwrap_or(s);
    Yaml::Str(unquoted.to_string())
}

/// A list item: `- x` or a lone `-` (not a scalar like `--flag`).
fn is_item(line: &str) -> bool {
    line == "-" || line.starts_with("- ")
}

/// `key: value` or `key:` (a scalar such as `"7860:7860"` or `http://x` is not).
fn is_entry(line: &str) -> bool {
    !line.starts_with(['"', '\'']) && (line.contains(": ") || line.ends_with(':'))
}

/// The block starting at line `i`, whose lines are indented by `indent`.
fn block(lines: &mut [(usize, String)], i: &mut usize, indent: usize) -> Yaml {
    if is_item(&lines[*i].1) {
        let mut items = Vec::new();
        while *i < lines.len() && lines[*i].0 == indent && is_item(&lines[*i].1) {
            let rest = lines[*i].1[1..].trim_start().to_string();
            if rest.is_empty() {
                *i += 1;
                let inner = lines[*i].0;
                assert!(inner > indent, "empty list item at {:?}", lines[*i]);
                items.push(block(lines, i, inner));
            } else if !is_item(&rest) && !is_entry(&rest) {
                items.push(scalar(&rest));
                *i += 1;
            } else {
                // `- key: value` opens a map whose later keys line up with `key`.
                let inner = indent + (lines[*i].1.len() - rest.len());
                lines[*i] = (inner, rest);
                items.push(block(lines, i, inner));
            }
        }
        return Yaml::List(items);
    }
    let mut entries = Vec::new();
    while *i < lines.len() && lines[*i].0 == indent && !is_item(&lines[*i].1) {
        let line = lines[*i].1.clone();
        let (key, value) = line
            .split_once(':')
            .filter(|(_, v)| v.is_empty() || v.starts_with(' '))
            .unwrap_or_else(|| panic!("not `key: value`: {line}"));
        let key = match scalar(key.trim()) {
            Yaml::Str(k) => k,
            _ => unreachable!(),
        };
        *i += 1;
        let value = value.trim();
        let node = if !value.is_empty() {
            scalar(value)
        } else if *i < lines.len()
            && (lines[*i].0 > indent || (lines[*i].0 == indent && is_item(&lines[*i].1)))
        {
            let inner = lines[*i].0;
            block(lines, i, inner)
        } else {
            Yaml::Str(String::new())
        };
        entries.push((key, node));
    }
    Yaml::Map(entries)
}

#[test]
fn the_yaml_reader_reads_what_the_manifests_use() {
    let doc = Yaml::parse(
        "# head\na: 1\nb:\n  c: \"x # y\" # note\n  d:\n  - e: 2\n    f: '3'\n  - g\nh:\n  - - i\n",
    );
    assert_eq!(doc.at("a").str(), "1");
    assert_eq!(doc.at("b.c").str(), "x # y");
    let d = doc.at("b.d").list();
    assert_eq!((d[0].at("e").str(), d[0].at("f").str()), ("2", "3"));
    assert_eq!(d[1].str(), "g");
    assert_eq!(doc.at("h").list()[0].list()[0].str(), "i");
}

/// What the kubelet puts into the pod, as the manifests say.
struct Pod {
    /// The config path given to the container (`GEMINI_ROTATOR_CONFIG`), absolute in the pod.
    config: String,
    /// Each ConfigMap/Secret volume: its mount path and the files the kustomization puts in it.
    volumes: Vec<Volume>,
}

struct Volume {
    mount_path: String,
    kind: &'static str,
    files: Vec<(String, String)>,
}

impl Volume {
    fn file(&self, name: &str) -> &str {
        self.files
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c.as_str())
            .unwrap_or_else(|| panic!("no {name} in the {} volume", self.kind))
    }

    fn with(&self, name: &str, contents: String) -> Vec<(&str, String)> {
        self.files
            .iter()
            .map(|(n, c)| {
                let c = if n == name {
                    contents.clone()
                } else {
                    c.clone()
                };
                (n.as_str(), c)
            })
            .collect()
    }

    fn root(&self, pod_root: &Path) -> PathBuf {
        pod_root.join(self.mount_path.trim_start_matches('/'))
    }
}

fn k8s(name: &str) -> Yaml {
    Yaml::parse(&read(&repo(&format!("deploy/kubernetes/{name}"))))
}

fn container(deployment: &Yaml) -> &Yaml {
    let containers = deployment.at("spec.template.spec.containers").list();
    assert_eq!(containers.len(), 1, "one container");
    &containers[0]
}

/// The generated ConfigMap or Secret called `name`: its files, read from deploy/kubernetes.
fn generated(kustomization: &Yaml, generator: &str, name: &str) -> Vec<(String, String)> {
    generated_in("deploy/kubernetes", kustomization, generator, name)
}

/// The same for the kustomization in the repo's folder `dir`.
fn generated_in(
    dir: &str,
    kustomization: &Yaml,
    generator: &str,
    name: &str,
) -> Vec<(String, String)> {
    let generator = kustomization
        .get(generator)
        .list()
        .iter()
        .find(|g| g.get("name").str() == name)
        .unwrap_or_else(|| panic!("kustomization.yaml generates no {name}"));
    generator
        .get("files")
        .list()
        .iter()
        .map(|f| {
            // `files` entries are `path` or `key=path`.
            let entry = f.str();
            let (key, path) = entry.split_once('=').unwrap_or_else(|| {
                let base = entry.rsplit('/').next().unwrap_or(entry);
                (base, entry)
            });
            let path = repo(&format!("{dir}/{path}"));
            (key.to_string(), read(&path))
        })
        .collect()
}

fn pod() -> Pod {
    let kustomization = k8s("kustomization.yaml");
    let deployment = k8s("deployment.yaml");
    let container = container(&deployment);
    let config = container
        .get("env")
        .list()
        .iter()
        .find(|e| e.get("name").str() == "GEMINI_ROTATOR_CONFIG")
        .expect("the Deployment sets GEMINI_ROTATOR_CONFIG")
        .get("value")
        .str()
        .to_string();
    let volumes = deployment.at("spec.template.spec.volumes").list();
    let mut mounted = Vec::new();
    for mount in container.get("volumeMounts").list() {
        let volume = volumes
            .iter()
            .find(|v| v.get("name").str() == mount.get("name").str())
            .expect("a mount names a volume of the pod");
        let (kind, files) = if volume.has("configMap") {
            let name = volume.at("configMap.name").str();
            (
                "ConfigMap",
                generated(&kustomization, "configMapGenerator", name),
            )
        } else if volume.has("secret") {
            let name = volume.at("secret.secretName").str();
            ("Secret", generated(&kustomization, "secretGenerator", name))
        } else {
            continue;
        };
        mounted.push(Volume {
            mount_path: mount.get("mountPath").str().to_string(),
            kind,
            files,
        });
    }
    Pod {
        config,
        volumes: mounted,
    }
}

impl Pod {
    fn volume(&self, kind: &str) -> &Volume {
        let found: Vec<&Volume> = self.volumes.iter().filter(|v| v.kind == kind).collect();
        assert_eq!(found.len(), 1, "one {kind} volume");
        found[0]
    }

    /// The ConfigMap's config.toml: the volume mounted where GEMINI_ROTATOR_CONFIG points.
    fn config_volume(&self) -> (&Volume, String) {
        let (dir, name) = self
            .config
            .rsplit_once('/')
            .expect("an absolute config path");
        let volume = self
            .volumes
            .iter()
            .find(|v| v.mount_path.trim_end_matches('/') == dir)
            .expect("GEMINI_ROTATOR_CONFIG is inside a mounted volume");
        assert_eq!(volume.kind, "ConfigMap");
        (volume, name.to_string())
    }
}

/// The lines of a key or token file that are values (not comments or blank).
fn values(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect()
}

/// The shipped config with only what a test on loopback must change: where to listen and where
/// Google is. File paths, tokens, everything else stay as shipped.
fn on_loopback(config: &str, upstream: &str) -> String {
    let mut table: toml::Table = config.parse().expect("the shipped config.toml parses");
    let section = |table: &toml::Table, name: &str| -> toml::Table {
        table
            .get(name)
            .and_then(|v| v.as_table())
            .cloned()
            .unwrap_or_default()
    };
    let mut server = section(&table, "server");
    server.insert("listen".into(), "127.0.0.1:0".into());
    table.insert("server".into(), server.into());
    let mut up = section(&table, "upstream");
    up.insert("base_url".into(), upstream.into());
    table.insert("upstream".into(), up.into());
    let mut models = section(&table, "models");
    models.insert("list".into(), "static".into());
    table.insert("models".into(), models.into());
    toml::to_string(&table).expect("config back to TOML")
}

fn with_alias(config: &str, alias: &str, model: &str) -> String {
    let mut table: toml::Table = config.parse().expect("config parses");
    let models = table
        .entry("models")
        .or_insert_with(|| toml::Table::new().into());
    let aliases = models
        .as_table_mut()
        .expect("[models] is a table")
        .entry("aliases")
        .or_insert_with(|| toml::Table::new().into());
    aliases
        .as_table_mut()
        .expect("[models.aliases] is a table")
        .insert(alias.into(), model.into());
    toml::to_string(&table).expect("config back to TOML")
}

// ---- the pod, played on this machine ---------------------------------------------------------

async fn health(proxy: &Proxy) -> Value {
    match client().get(format!("{}/health", proxy.url())).send().await {
        Ok(r) => r.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

async fn config_hash(proxy: &Proxy) -> String {
    let status: Value = match proxy.get("/status").send().await {
        Ok(r) => r.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    };
    status["config"]["hash"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn wait_new_hash(proxy: &Proxy, old: &str) {
    let deadline = Instant::now() + APPLY;
    loop {
        let hash = config_hash(proxy).await;
        if !hash.is_empty() && hash != old {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the swap was not picked up; logs:\n{}",
            proxy.logs()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn the_manifests_configmap_and_secret_swaps_reach_the_running_binary() {
    let fake = FakeGemini::start().await;
    let pod = pod();
    let (config_volume, config_name) = pod.config_volume();
    let secret = pod.volume("Secret");
    let shipped_config = config_volume.file(&config_name).to_string();
    let config = on_loopback(&shipped_config, &fake.url());
    let keys = values(secret.file("keys.txt"));
    let tokens = values(secret.file("tokens.txt"));
    assert!(
        !keys.is_empty() && !tokens.is_empty(),
        "the Secret ships keys and tokens"
    );

    // The pod's file system under the proxy's temp dir; the binary gets the Deployment's path.
    let volumes: Vec<(PathBuf, Vec<(String, String)>)> = pod
        .volumes
        .iter()
        .map(|v| {
            let files = if std::ptr::eq(v, config_volume) {
                v.with(&config_name, config.clone())
                    .into_iter()
                    .map(|(n, c)| (n.to_string(), c))
                    .collect()
            } else {
                v.files.clone()
            };
            (PathBuf::from(v.mount_path.trim_start_matches('/')), files)
        })
        .collect();
    let proxy = Proxy::builder()
        .config_path(pod.config.trim_start_matches('/'))
        .prepare(move |dir| {
            for (mount, files) in &volumes {
                let files: Vec<(&str, String)> =
                    files.iter().map(|(n, c)| (n.as_str(), c.clone())).collect();
                kubelet_init(&dir.join(mount), &files);
            }
        })
        .start()
        .await;
    let pod_root = proxy.dir().to_path_buf();

    // As shipped: every key of the Secret in the pool, its token accepted.
    assert_eq!(health(&proxy).await["totalKeys"], keys.len());
    assert_eq!(
        chat_status_as(&proxy, &tokens[0], "gemini-2.5-flash").await,
        200
    );
    assert_eq!(
        chat_status_as(&proxy, "sk-not-in-the-secret-0000001", "gemini-2.5-flash").await,
        401
    );

    // `kubectl apply -k` with a new alias in config.toml: the kubelet swaps the ConfigMap.
    let old = config_hash(&proxy).await;
    let edited = with_alias(&config, "deploy-alias", "gemini-deploy-target");
    kubelet_update(
        &config_volume.root(&pod_root),
        &config_volume.with(&config_name, edited),
        1,
    );
    wait_new_hash(&proxy, &old).await;
    assert_eq!(
        chat_status_as(&proxy, &tokens[0], "deploy-alias").await,
        200
    );
    assert_eq!(
        fake.last_request().and_then(|r| r.model).as_deref(),
        Some("gemini-deploy-target"),
        "the alias from the new ConfigMap is served"
    );

    // A key and a token added to the Secret.
    let (new_key, new_token) = (fake_key(7), "sk-added-to-the-secret-00001");
    let old = config_hash(&proxy).await;
    let keys_txt = format!("{}{new_key}\n", secret.file("keys.txt"));
    let tokens_txt = format!("{}{new_token}\n", secret.file("tokens.txt"));
    let mut files = secret.with("keys.txt", keys_txt);
    for (name, contents) in &mut files {
        if *name == "tokens.txt" {
            *contents = tokens_txt.clone();
        }
    }
    kubelet_update(&secret.root(&pod_root), &files, 1);
    wait_new_hash(&proxy, &old).await;
    assert_eq!(health(&proxy).await["totalKeys"], keys.len() + 1);
    fake.reset_counters();
    for _ in 0..=keys.len() * 2 {
        assert_eq!(
            chat_status_as(&proxy, new_token, "gemini-2.5-flash").await,
            200
        );
        if fake.hits_for_key(&new_key) > 0 {
            break;
        }
    }
    assert!(fake.hits_for_key(&new_key) > 0, "the added key serves");
    assert_eq!(
        chat_status_as(&proxy, &tokens[0], "deploy-alias").await,
        200,
        "the ConfigMap's change outlives the Secret's"
    );
}

// ---- the files agree with each other ---------------------------------------------------------

fn duration_secs(s: &str) -> u64 {
    s.strip_suffix('s')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a duration in seconds expected, got {s}"))
}

fn listen_port(config: &str) -> u16 {
    let table: toml::Table = config.parse().expect("config parses");
    let listen = table["server"]["listen"].as_str().expect("server.listen");
    let (host, port) = listen.rsplit_once(':').expect("host:port");
    assert!(
        host == "0.0.0.0" || host == "[::]",
        "a container must listen on every interface, not {listen}"
    );
    port.parse().expect("a port")
}

fn shutdown_grace(config: &str) -> u64 {
    let table: toml::Table = config.parse().expect("config parses");
    duration_secs(table["server"]["shutdown_grace"].as_str().unwrap_or("30s"))
}

#[test]
fn the_deployment_agrees_with_the_config_it_mounts() {
    let pod = pod();
    let (config_volume, config_name) = pod.config_volume();
    let config = config_volume.file(&config_name);
    let deployment = k8s("deployment.yaml");
    let spec = deployment.at("spec.template.spec");
    let container = container(&deployment);

    assert_eq!(deployment.at("spec.replicas").num(), 2);
    let port = listen_port(config);
    let ports = container.get("ports").list();
    assert_eq!(ports[0].get("containerPort").num(), u64::from(port));
    assert_eq!(container.at("livenessProbe.httpGet.path").str(), "/livez");
    assert_eq!(container.at("readinessProbe.httpGet.path").str(), "/readyz");
    let pre_stop = if container.has("lifecycle") {
        container.at("lifecycle.preStop.sleep.seconds").num()
    } else {
        0
    };
    assert!(
        spec.get("terminationGracePeriodSeconds").num() > pre_stop + shutdown_grace(config),
        "the kubelet must not kill the pod before shutdown_grace ends"
    );
    for mount in container.get("volumeMounts").list() {
        assert!(
            !mount.has("subPath") && !mount.has("subPathExpr"),
            "{mount:?}"
        );
        assert_eq!(mount.get("readOnly").str(), "true");
    }
    let security = container.get("securityContext");
    assert_eq!(security.get("readOnlyRootFilesystem").str(), "true");
    assert_eq!(security.get("allowPrivilegeEscalation").str(), "false");
    assert_eq!(security.at("capabilities.drop").list()[0].str(), "ALL");
    assert_eq!(spec.at("securityContext.runAsNonRoot").str(), "true");
    assert!(container.at("resources.limits").has("memory"));
    assert!(container.at("resources.requests").has("memory"));

    // Every key or token file the config names is in a mounted volume.
    let table: toml::Table = config.parse().expect("config parses");
    let config_dir = Path::new(&pod.config).parent().expect("a folder");
    for (section, field) in [("pool", "key_files"), ("auth", "token_files")] {
        let names = table[section][field].as_array().expect("a list of files");
        for name in names {
            let path = normalize(&config_dir.join(name.as_str().expect("a path")));
            let (dir, file) = (path.parent().expect("a folder"), path.file_name());
            let file = file.and_then(|f| f.to_str()).expect("a file name");
            let volume = pod
                .volumes
                .iter()
                .find(|v| Path::new(&v.mount_path) == dir)
                .unwrap_or_else(|| panic!("{section}.{field}: {} is in no volume", path.display()));
            volume.file(file);
        }
    }
}

/// A config without its `[state]`: what must be the same in a config and its Redis twin.
fn without_state(config: &str, what: &str) -> toml::Table {
    let mut table: toml::Table = config.parse().unwrap_or_else(|e| panic!("{what}: {e}"));
    table.remove("state");
    table
}

/// `deploy/kubernetes-redis`: the base with its config swapped for the base's but `[state]`
/// (`store = "redis"`, the URL from a file of the Secret it makes), and the component that runs
/// the Redis the URL names and mounts that Secret (`components/redis` with `redis-state`). The
/// components make no ConfigMap or Secret: kustomize would let those win over an overlay's own.
#[test]
fn the_redis_kustomization_changes_only_the_state_and_mounts_the_url_it_names() {
    let pod = pod();
    let (config_volume, config_name) = pod.config_volume();
    let redis_dir = "deploy/kubernetes-redis";
    let components = "deploy/kubernetes/components";
    let overlay = Yaml::parse(&read(&repo(&format!("{redis_dir}/kustomization.yaml"))));
    let listed = |field: &str| -> Vec<String> {
        overlay
            .get(field)
            .list()
            .iter()
            .map(|y| y.str().to_string())
            .collect()
    };
    assert_eq!(listed("resources"), ["../kubernetes"]);
    assert_eq!(listed("components"), ["../kubernetes/components/redis"]);
    let component = |name: &str| {
        let k = Yaml::parse(&read(&repo(&format!(
            "{components}/{name}/kustomization.yaml"
        ))));
        assert_eq!(k.get("kind").str(), "Component");
        for generator in ["configMapGenerator", "secretGenerator"] {
            assert!(
                !k.has(generator),
                "components/{name} must not have a {generator}"
            );
        }
        k
    };
    let (redis, state) = (component("redis"), component("redis-state"));

    // The ConfigMap's config file, replacing the base's: the same config but [state].
    let generators = overlay.get("configMapGenerator").list();
    assert_eq!(generators.len(), 1);
    let deployment = k8s("deployment.yaml");
    let config_map = deployment
        .at("spec.template.spec.volumes")
        .list()
        .iter()
        .find_map(|v| v.has("configMap").then(|| v.at("configMap.name").str()))
        .expect("the base mounts a ConfigMap");
    assert_eq!(generators[0].get("name").str(), config_map);
    assert_eq!(generators[0].get("behavior").str(), "replace");
    let files: Vec<&str> = generators[0]
        .get("files")
        .list()
        .iter()
        .map(Yaml::str)
        .collect();
    assert_eq!(files, [config_name.as_str()]);
    let config = read(&repo(&format!("{redis_dir}/{config_name}")));
    assert_eq!(
        without_state(&config, "deploy/kubernetes-redis/config.toml"),
        without_state(config_volume.file(&config_name), "config.toml"),
        "deploy/kubernetes-redis/config.toml must be deploy/kubernetes/config.toml but [state]"
    );
    let table: toml::Table = config.parse().expect("config parses");
    assert_eq!(table["state"]["store"].as_str(), Some("redis"));
    assert!(
        table["state"].get("url").is_none(),
        "the URL comes from the Secret"
    );
    let url_file = table["state"]["url_file"].as_str().expect("state.url_file");

    // redis-state's patch mounts the URL's folder (whole, read-only) from the Secret.
    let included: Vec<&str> = redis
        .get("components")
        .list()
        .iter()
        .map(Yaml::str)
        .collect();
    assert_eq!(included, ["../redis-state"]);
    let patched: Vec<&str> = state
        .get("patches")
        .list()
        .iter()
        .map(|p| p.get("path").str())
        .collect();
    assert_eq!(patched, ["deployment-patch.yaml"]);
    let patch = Yaml::parse(&read(&repo(&format!(
        "{components}/redis-state/deployment-patch.yaml"
    ))));
    assert_eq!(
        patch.at("metadata.name").str(),
        deployment.at("metadata.name").str()
    );
    let mounts = container(&patch).get("volumeMounts").list();
    let volumes = patch.at("spec.template.spec.volumes").list();
    assert_eq!((mounts.len(), volumes.len()), (1, 1));
    let (mount, volume) = (&mounts[0], &volumes[0]);
    assert_eq!(mount.get("name").str(), volume.get("name").str());
    assert!(!mount.has("subPath") && !mount.has("subPathExpr"));
    assert_eq!(mount.get("readOnly").str(), "true");
    let url_path = normalize(
        &Path::new(&pod.config)
            .parent()
            .expect("a folder")
            .join(url_file),
    );
    assert_eq!(
        url_path.parent(),
        Some(Path::new(mount.get("mountPath").str())),
        "state.url_file must be in the mounted Secret"
    );
    assert!(
        pod.volumes
            .iter()
            .all(|v| v.mount_path != mount.get("mountPath").str()),
        "the URL's folder is a mount of its own"
    );
    let secret = volume.at("secret.secretName").str();
    assert_eq!(volume.at("secret.defaultMode").str(), "0440");

    // The overlay makes that Secret, with the URL file and the server's password file.
    let url_name = url_path
        .file_name()
        .and_then(|n| n.to_str())
        .expect("a file name");
    let files = generated_in(redis_dir, &overlay, "secretGenerator", secret);
    let file = |name: &str| {
        files
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c.trim().to_string())
            .unwrap_or_else(|| panic!("the Secret {secret} has no {name}"))
    };
    let url = reqwest::Url::parse(&file(url_name)).expect("a URL");
    let auth = file("redis-auth.conf");
    let required = auth
        .lines()
        .find_map(|l| l.strip_prefix("requirepass "))
        .expect("redis-auth.conf sets requirepass");
    assert_eq!(
        url.password(),
        Some(required.trim()),
        "one password in both"
    );

    // components/redis runs the Redis the URL names, its password file from the same Secret.
    let docs: Vec<Yaml> = read(&repo(&format!("{components}/redis/redis.yaml")))
        .split("\n---\n")
        .map(Yaml::parse)
        .collect();
    let of = |kind: &str| {
        docs.iter()
            .find(|d| d.get("kind").str() == kind)
            .unwrap_or_else(|| panic!("redis.yaml has no {kind}"))
    };
    let service = of("Service");
    assert_eq!(url.scheme(), "redis");
    assert_eq!(url.host_str(), Some(service.at("metadata.name").str()));
    assert_eq!(
        url.port().map(u64::from),
        Some(service.at("spec.ports").list()[0].get("port").num())
    );
    let server = of("Deployment");
    assert_eq!(server.at("spec.replicas").num(), 1);
    let spec = server.at("spec.template.spec");
    assert_eq!(spec.at("securityContext.runAsNonRoot").str(), "true");
    let redis_container = container(server);
    assert!(redis_container.has("readinessProbe"));
    assert!(redis_container.at("resources.limits").has("memory"));
    assert_eq!(
        redis_container
            .at("securityContext.readOnlyRootFilesystem")
            .str(),
        "true"
    );
    let auth_volume = spec
        .get("volumes")
        .list()
        .iter()
        .find(|v| v.has("secret"))
        .expect("the Redis mounts the Secret");
    assert_eq!(auth_volume.at("secret.secretName").str(), secret);
    let auth_mount = redis_container
        .get("volumeMounts")
        .list()
        .iter()
        .find(|m| m.get("name").str() == auth_volume.get("name").str())
        .expect("and mounts it");
    assert!(!auth_mount.has("subPath"));
    let args: Vec<&str> = redis_container
        .get("args")
        .list()
        .iter()
        .map(Yaml::str)
        .collect();
    let conf = format!("{}/redis-auth.conf", auth_mount.get("mountPath").str());
    assert_eq!(args.first(), Some(&conf.as_str()), "{args:?}");
}

/// `a/b/../c` -> `a/c`, without touching the file system (the pod's paths do not exist here).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[test]
fn the_image_and_compose_agree_with_the_docker_config() {
    let config = read(&repo("deploy/docker/config.toml"));
    let port = listen_port(&config);
    let dockerfile = read(&repo("Dockerfile"));
    assert!(dockerfile.contains(&format!("EXPOSE {port}")));
    assert!(dockerfile.contains("ENV GEMINI_ROTATOR_CONFIG=/etc/gemini-rotator/config.toml"));
    // The image's copy holds a placeholder token: readable by the proxy's user only.
    assert!(dockerfile.contains(
        "COPY --chown=65532:65532 --chmod=0600 deploy/docker/config.toml /etc/gemini-rotator/config.toml"
    ));
    // Without a URL, the check knocks where the config (found by GEMINI_ROTATOR_CONFIG) listens.
    let healthcheck = dockerfile
        .lines()
        .skip_while(|l| !l.starts_with("HEALTHCHECK"))
        .take(2)
        .collect::<String>();
    assert!(healthcheck.contains(r#""--healthcheck"]"#), "{healthcheck}");

    let compose = Yaml::parse(&read(&repo("docker-compose.yml")));
    let service = compose.at("services.gemini-rotator");
    let mounts: Vec<&str> = service
        .get("volumes")
        .list()
        .iter()
        .map(Yaml::str)
        .collect();
    assert_eq!(
        mounts,
        ["./deploy/docker:/etc/gemini-rotator:ro"],
        "the folder, read-only"
    );
    let test: Vec<&str> = service
        .at("healthcheck.test")
        .list()
        .iter()
        .map(Yaml::str)
        .collect();
    assert_eq!(
        test,
        ["CMD", "/usr/local/bin/gemini-rotator", "--healthcheck"]
    );
    assert!(duration_secs(service.get("stop_grace_period").str()) > shutdown_grace(&config));
    assert_eq!(service.get("restart").str(), "unless-stopped");
}

/// `--profile redis`: a Redis, and a second proxy like the default one whose config (the Docker
/// config but [state]) keeps its state there. The default service stays without a profile.
#[test]
fn the_compose_redis_profile_runs_the_docker_config_on_redis() {
    let compose = Yaml::parse(&read(&repo("docker-compose.yml")));
    let default = compose.at("services.gemini-rotator");
    assert!(
        !default.has("profiles"),
        "the default service runs without a profile"
    );
    let service = compose.at("services.gemini-rotator-redis");
    let profiles: Vec<&str> = service
        .get("profiles")
        .list()
        .iter()
        .map(Yaml::str)
        .collect();
    assert_eq!(profiles, ["redis"]);
    // The same container as the default service, but for its config and its published port.
    for field in [
        "image",
        "volumes",
        "restart",
        "stop_grace_period",
        "read_only",
        "cap_drop",
        "security_opt",
        "healthcheck",
    ] {
        assert_eq!(service.get(field), default.get(field), "{field}");
    }
    let path = service
        .at("environment.GEMINI_ROTATOR_CONFIG")
        .str()
        .strip_prefix("/etc/gemini-rotator/")
        .expect("a file of the mounted folder");
    let config = read(&repo(&format!("deploy/docker/{path}")));
    assert_eq!(
        without_state(&config, path),
        without_state(&read(&repo("deploy/docker/config.toml")), "config.toml"),
        "deploy/docker/{path} must be deploy/docker/config.toml but [state]"
    );
    let table: toml::Table = config.parse().expect("config parses");
    assert_eq!(table["state"]["store"].as_str(), Some("redis"));
    let url = table["state"]["url"].as_str().expect("state.url");
    let url = reqwest::Url::parse(url).expect("a URL");
    let host = url.host_str().expect("a host");
    let redis = compose.at(&format!("services.{host}"));
    assert_eq!(redis.get("profiles"), service.get("profiles"));
    let depends: Vec<&str> = service
        .get("depends_on")
        .list()
        .iter()
        .map(Yaml::str)
        .collect();
    assert_eq!(depends, [host]);
    assert!(
        !redis.has("ports"),
        "the Redis is reached on the Compose network only"
    );
    assert_eq!(redis.get("read_only").str(), "true");
    assert!(redis.has("healthcheck"));
    let ports = [default, service].map(|s| s.get("ports").list()[0].str().to_string());
    assert_ne!(ports[0], ports[1], "both can run at once");
}

// ---- --healthcheck, the image's HEALTHCHECK --------------------------------------------------

/// Runs `--healthcheck URL` (off the async threads: it blocks); exit code and output.
async fn healthcheck(url: String) -> (i32, String) {
    run_healthcheck(Some(url), None).await
}

/// Runs `--healthcheck [URL]` with `GEMINI_ROTATOR_CONFIG` set to `config` or unset.
async fn run_healthcheck(url: Option<String>, config: Option<PathBuf>) -> (i32, String) {
    tokio::task::spawn_blocking(move || {
        let mut command = Command::new(BIN);
        command.arg("--healthcheck").args(url).stdin(Stdio::null());
        match config {
            Some(path) => command.env("GEMINI_ROTATOR_CONFIG", path),
            None => command.env_remove("GEMINI_ROTATOR_CONFIG"),
        };
        let out = command.output().expect("run --healthcheck");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
    })
    .await
    .expect("join")
}

#[tokio::test]
async fn healthcheck_passes_on_a_live_server_and_fails_otherwise() {
    let fake = FakeGemini::start().await;
    let proxy = start(&fake, &[fake_key(1)], |c| c).await;
    let url = proxy.url();
    let (code, out) = healthcheck(format!("{url}/livez")).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("200"), "{out}");

    let (code, out) = healthcheck(format!("{url}/no-such-probe")).await;
    assert_eq!(code, 1, "a 404 is not healthy: {out}");

    // Nobody listens once the proxy is gone.
    drop(proxy);
    let (code, out) = healthcheck(format!("{url}/livez")).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("unhealthy"), "{out}");
}

#[tokio::test]
async fn healthcheck_without_a_url_knocks_where_the_config_listens() {
    let fake = FakeGemini::start().await;
    let proxy = start(&fake, &[fake_key(1)], |c| c).await;
    let port = proxy.addr().port();
    let dir = tempfile::tempdir().expect("temp dir");
    // Only server.listen is read: the rest of the file need not even be valid config.
    let config = dir.path().join("config.toml");
    let write = |listen: &str| {
        std::fs::write(
            &config,
            format!("[server]\nlisten = \"{listen}\"\n[pool]\nkeys = 7\n"),
        )
        .expect("write config")
    };

    write(&format!("0.0.0.0:{port}"));
    let (code, out) = run_healthcheck(None, Some(config.clone())).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("http://127.0.0.1:{port}/livez")),
        "{out}"
    );

    drop(proxy);
    let (code, out) = run_healthcheck(None, Some(config.clone())).await;
    assert_eq!(code, 1, "nobody listens there any more: {out}");
}

/// The Dockerfile builds dependencies from Cargo.toml with stub sources; Cargo refuses a manifest
/// whose declared targets have no file, so every declared bench, example and extra binary needs
/// a stub there (or must be sent to the build).
#[test]
fn the_dockerfile_stubs_every_declared_target() {
    let manifest: toml::Table = read(&repo("Cargo.toml"))
        .parse()
        .expect("Cargo.toml parses");
    let dockerfile = read(&repo("Dockerfile"));
    let dockerignore = read(&repo(".dockerignore"));
    for (kind, folder) in [
        ("bench", "benches"),
        ("example", "examples"),
        ("bin", "src/bin"),
    ] {
        let Some(targets) = manifest.get(kind).and_then(|t| t.as_array()) else {
            continue;
        };
        for target in targets {
            let name = target["name"].as_str().expect("target name");
            let path = target
                .get("path")
                .and_then(|p| p.as_str())
                .map(str::to_string)
                .unwrap_or_else(|| format!("{folder}/{name}.rs"));
            let sent = dockerignore
                .lines()
                .any(|l| l.trim() == format!("!{path}") || l.trim() == format!("!{folder}/"));
            assert!(
                sent || dockerfile.contains(&format!("> {path}")),
                "Cargo.toml declares {kind} `{name}` at {path}: the Dockerfile's dependency stage \
                 must stub it (or .dockerignore must send it), or `cargo build` there fails"
            );
        }
    }
}
