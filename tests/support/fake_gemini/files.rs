//! The Files API and its upload protocol, with Google's shapes: the resumable upload
//! (`X-Goog-Upload-Protocol: resumable`, `-Command: start`, then chunks with `-Command: upload`
//! / `upload, finalize` and `-Offset`, answered with `X-Goog-Upload-Status: active|final`,
//! `X-Goog-Upload-URL`, `X-Goog-Upload-Size-Received`), `File` resources (`name`, `uri`,
//! `sizeBytes` as a string, `sha256Hash`, `createTime` and `expirationTime` 48 h after it, to
//! the microsecond as Google writes them, `state: ACTIVE`), and `files.get` / `files.list` /
//! `files.delete`.
//!
//! Resources belong to the project of the key that created them (`Projects`: each key is its
//! own project unless `FakeGemini::same_project` says otherwise); a key of another project
//! naming one gets Google's 403 PERMISSION_DENIED. Chunks are read as they arrive and never
//! kept: only their length and a running checksum (`FakeGemini::upload_digest`), so a test can
//! push hundreds of MiB through.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::request::Parts;
use http::Response;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{json, Value};

use super::body::{full, json_response, FakeBody, JSON_CT};
use super::errors::google_error;
use super::{lock, FakeGemini, Shared};

/// Where resources live: by name, with the project that owns them.
#[derive(Default)]
pub(super) struct Projects {
    /// Key -> project; a key not listed is its own project.
    pub(super) of_key: HashMap<String, String>,
    pub(super) resources: HashMap<String, (String, Value)>,
    pub(super) uploads: HashMap<String, Upload>,
    /// Bytes and checksum (FNV-1a) of every finished upload, by file name.
    pub(super) digests: HashMap<String, (u64, u64)>,
    /// A stored interaction's stream events, for `get` with `stream=true` (`interactions.rs`).
    pub(super) events: HashMap<String, Vec<Value>>,
}

pub(super) struct Upload {
    project: String,
    total: Option<u64>,
    received: u64,
    digest: u64,
    mime: String,
    display_name: Option<String>,
    name: Option<String>,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0100_0000_01b3;

/// FNV-1a over `bytes`, continuing from `state`.
pub fn fnv1a(mut state: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        state ^= u64::from(b);
        state = state.wrapping_mul(FNV_PRIME);
    }
    state
}

pub const FNV_START: u64 = FNV_OFFSET;

impl Projects {
    pub(super) fn project(&self, key: &str) -> String {
        self.of_key
            .get(key)
            .cloned()
            .unwrap_or_else(|| key.to_string())
    }

    /// The resource `name` as `key` sees it: Google's 403 for another project's (or a missing
    /// one, which Google does not tell apart).
    pub(super) fn get(
        &self,
        key: &str,
        name: &str,
        kind: &str,
    ) -> Result<Value, Box<Response<FakeBody>>> {
        match self.resources.get(name) {
            Some((project, value)) if *project == self.project(key) => Ok(value.clone()),
            _ => Err(Box::new(permission_denied(kind, name))),
        }
    }
}

/// Google's answer for a resource the key's project cannot see.
pub(super) fn permission_denied(kind: &str, name: &str) -> Response<FakeBody> {
    let id = name.rsplit('/').next().unwrap_or(name);
    let message = match kind {
        "File" => {
            format!("You do not have permission to access the File {id} or it may not exist.")
        }
        "Batch" => {
            format!("You do not have permission to access the batch {name} or it may not exist.")
        }
        "Interaction" => format!(
            "You do not have permission to access the interaction {id} or it may not exist."
        ),
        _ => format!("CachedContent not found (or permission denied) for {name}"),
    };
    json_response(
        403,
        &google_error(403, "PERMISSION_DENIED", &message, vec![]),
    )
}

pub(super) fn rfc3339(t: SystemTime) -> String {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() as i64;
    // Microseconds, as Google writes them.
    let micros = since.subsec_micros();
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // civil_from_days (Howard Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn header(parts: &Parts, name: &str) -> Option<String> {
    parts
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn new_id(shared: &Shared) -> String {
    let n = shared.next_id.fetch_add(1, Ordering::SeqCst);
    format!("fake{n:08x}")
}

/// `POST /upload/v1beta/files` with `X-Goog-Upload-Command: start`: a session and its URL.
pub(super) fn start(
    shared: &Shared,
    parts: &Parts,
    key: &str,
    body: Option<&Value>,
) -> Response<FakeBody> {
    let command = header(parts, "x-goog-upload-command").unwrap_or_default();
    let protocol = header(parts, "x-goog-upload-protocol").unwrap_or_default();
    if protocol != "resumable" || command != "start" {
        return json_response(
            400,
            &google_error(
                400,
                "INVALID_ARGUMENT",
                "Only resumable uploads are faked.",
                vec![],
            ),
        );
    }
    let file = body
        .and_then(|b| b.get("file"))
        .cloned()
        .unwrap_or(json!({}));
    // Google reads proto JSON: camelCase or the proto's snake_case names.
    let field = |camel: &str, snake: &str| {
        file.get(camel)
            .or_else(|| file.get(snake))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let total = header(parts, "x-goog-upload-header-content-length").and_then(|v| v.parse().ok());
    let mime = header(parts, "x-goog-upload-header-content-type")
        .or_else(|| {
            file.get("mimeType")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "application/octet-stream".into());
    let id = new_id(shared);
    let mut projects = lock(&shared.projects);
    let project = projects.project(key);
    projects.uploads.insert(
        id.clone(),
        Upload {
            project,
            total,
            received: 0,
            digest: FNV_START,
            mime,
            display_name: field("displayName", "display_name"),
            name: field("name", "name"),
        },
    );
    let url = format!(
        "{}/upload/v1beta/files?upload_id={id}&upload_protocol=resumable",
        shared.base
    );
    full(
        200,
        "text/plain; charset=utf-8",
        Bytes::new(),
        &[
            ("x-goog-upload-url".into(), url),
            ("x-goog-upload-status".into(), "active".into()),
            ("x-goog-upload-chunk-granularity".into(), "262144".into()),
            ("x-guploader-uploadid".into(), id),
        ],
    )
}

/// A request to an upload URL: the body is read as it arrives (counted and hashed, never
/// kept), then the session moves on or finishes with the `File`.
pub(super) async fn chunk(
    shared: &Shared,
    id: &str,
    parts: &Parts,
    body: Incoming,
) -> Response<FakeBody> {
    let command = header(parts, "x-goog-upload-command").unwrap_or_default();
    let offset: Option<u64> = header(parts, "x-goog-upload-offset").and_then(|v| v.parse().ok());
    let key = parts
        .headers
        .get("x-goog-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    {
        let projects = lock(&shared.projects);
        let Some(upload) = projects.uploads.get(id) else {
            return json_response(
                404,
                &google_error(404, "NOT_FOUND", "Upload session not found.", vec![]),
            );
        };
        // The proxy sends the session's key; a key of another project is refused.
        if let Some(key) = &key {
            if projects.project(key) != upload.project {
                return permission_denied("File", "files/upload");
            }
        }
        if command.contains("upload") && offset != Some(upload.received) {
            return full(
                400,
                JSON_CT,
                Bytes::from(
                    google_error(400, "INVALID_ARGUMENT", "Invalid upload offset.", vec![])
                        .to_string(),
                ),
                &[("x-goog-upload-status".into(), "active".into())],
            );
        }
    }
    let mut body = body;
    let mut len = 0u64;
    let mut digest = lock(&shared.projects)
        .uploads
        .get(id)
        .map_or(FNV_START, |u| u.digest);
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return json_response(400, &json!({}));
        };
        if let Ok(data) = frame.into_data() {
            len += data.len() as u64;
            digest = fnv1a(digest, &data);
        }
    }
    shared.uploaded_bytes.fetch_add(len, Ordering::SeqCst);
    let mut projects = lock(&shared.projects);
    let Some(upload) = projects.uploads.get_mut(id) else {
        return json_response(404, &json!({}));
    };
    upload.received += len;
    upload.digest = digest;
    let received = upload.received.to_string();
    if !command.contains("finalize") {
        return full(
            200,
            "text/plain; charset=utf-8",
            Bytes::new(),
            &[
                ("x-goog-upload-status".into(), "active".into()),
                ("x-goog-upload-size-received".into(), received),
            ],
        );
    }
    if upload.total.is_some_and(|t| t != upload.received) {
        return json_response(
            400,
            &google_error(400, "INVALID_ARGUMENT", "Upload size mismatch.", vec![]),
        );
    }
    let Some(upload) = projects.uploads.remove(id) else {
        return json_response(404, &json!({}));
    };
    let name = upload
        .name
        .clone()
        .unwrap_or_else(|| format!("files/{}", new_id(shared)));
    let file_id = name.trim_start_matches("files/").to_string();
    let now = SystemTime::now();
    let mut file = json!({
        "name": name,
        "mimeType": upload.mime,
        "sizeBytes": upload.received.to_string(),
        "createTime": rfc3339(now),
        "updateTime": rfc3339(now),
        "expirationTime": rfc3339(now + Duration::from_secs(48 * 3600)),
        "sha256Hash": "ZmFrZS1zaGEyNTY=",
        "uri": format!("{}/v1beta/files/{file_id}", shared.base),
        "state": "ACTIVE",
        "source": "UPLOADED",
    });
    if let Some(display) = &upload.display_name {
        file["displayName"] = json!(display);
    }
    projects
        .digests
        .insert(name.clone(), (upload.received, upload.digest));
    projects
        .resources
        .insert(name, (upload.project, file.clone()));
    full(
        200,
        JSON_CT,
        Bytes::from(json!({ "file": file }).to_string()),
        &[
            ("x-goog-upload-status".into(), "final".into()),
            ("x-goog-upload-size-received".into(), received),
        ],
    )
}

/// `files.get`, `files.list`, `files.delete` (and 403 for another project's file).
pub(super) fn files(
    shared: &Shared,
    method: &http::Method,
    rest: Option<&str>,
    key: &str,
) -> Response<FakeBody> {
    let mut projects = lock(&shared.projects);
    match (method.as_str(), rest) {
        ("GET", None) => {
            let project = projects.project(key);
            let mut files: Vec<&Value> = projects
                .resources
                .iter()
                .filter(|(n, (p, _))| n.starts_with("files/") && *p == project)
                .map(|(_, (_, v))| v)
                .collect();
            files.sort_by_key(|v| v["name"].as_str().unwrap_or("").to_string());
            json_response(200, &json!({ "files": files }))
        }
        ("GET", Some(id)) if id.ends_with(":download") => {
            // `files/{id}:download?alt=media`: a generated file's bytes (uploads cannot be
            // downloaded, as at Google).
            let name = format!("files/{}", id.trim_end_matches(":download"));
            match projects.get(key, &name, "File") {
                Ok(file) if file["source"] == "GENERATED" => full(
                    200,
                    "application/octet-stream",
                    Bytes::from(format!("{{\"results of\": \"{name}\"}}\n").repeat(1000)),
                    &[],
                ),
                Ok(_) => json_response(
                    400,
                    &google_error(
                        400,
                        "INVALID_ARGUMENT",
                        "Only generated files can be downloaded.",
                        vec![],
                    ),
                ),
                Err(refused) => {
                    shared.permission_denied.fetch_add(1, Ordering::SeqCst);
                    *refused
                }
            }
        }
        ("GET", Some(id)) => {
            let name = format!("files/{}", id.split(':').next().unwrap_or(id));
            match projects.get(key, &name, "File") {
                Ok(file) => json_response(200, &file),
                Err(refused) => {
                    shared.permission_denied.fetch_add(1, Ordering::SeqCst);
                    *refused
                }
            }
        }
        ("DELETE", Some(id)) => {
            let name = format!("files/{id}");
            if let Err(refused) = projects.get(key, &name, "File") {
                shared.permission_denied.fetch_add(1, Ordering::SeqCst);
                return *refused;
            }
            projects.resources.remove(&name);
            json_response(200, &json!({}))
        }
        _ => json_response(
            404,
            &google_error(404, "NOT_FOUND", "Method not found.", vec![]),
        ),
    }
}

/// Every `files/…` a request body names (`fileData.fileUri`, either spelling, or a batch's
/// `fileName`), as `files/{id}`.
pub(super) fn named_files(body: &Value, out: &mut Vec<String>) {
    match body {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("fileName" | "file_name", Value::String(name))
                        if name.starts_with("files/") =>
                    {
                        out.push(name.clone());
                    }
                    // `uri`: an interaction's content block.
                    ("fileUri" | "file_uri" | "uri", Value::String(uri)) => {
                        if let Some(i) = uri.find("files/") {
                            let id = uri[i + 6..].split(['?', '/', ':']).next().unwrap_or("");
                            out.push(format!("files/{id}"));
                        }
                    }
                    _ => named_files(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| named_files(v, out)),
        _ => {}
    }
}

/// A generation (or cache create) that names files or a cache its key's project cannot see:
/// Google's 403.
pub(super) fn refuse_foreign(
    shared: &Shared,
    key: &str,
    body: Option<&Value>,
) -> Option<Response<FakeBody>> {
    let body = body?;
    let mut files = Vec::new();
    named_files(body, &mut files);
    let projects = lock(&shared.projects);
    for name in files {
        if let Err(refused) = projects.get(key, &name, "File") {
            shared.permission_denied.fetch_add(1, Ordering::SeqCst);
            return Some(*refused);
        }
    }
    if let Some(cache) = body.get("cachedContent").and_then(Value::as_str) {
        if let Err(refused) = projects.get(key, cache, "CachedContent") {
            shared.permission_denied.fetch_add(1, Ordering::SeqCst);
            return Some(*refused);
        }
    }
    None
}

impl FakeGemini {
    /// These keys share one Google project (and so each other's files and caches).
    pub fn same_project(&self, keys: &[&str]) {
        let mut projects = lock(&self.shared.projects);
        let project = keys.first().map(|k| k.to_string()).unwrap_or_default();
        for key in keys {
            projects.of_key.insert(key.to_string(), project.clone());
        }
    }

    /// The project (the first key of it) that owns resource `name`, if it exists.
    pub fn owner_of(&self, name: &str) -> Option<String> {
        lock(&self.shared.projects)
            .resources
            .get(name)
            .map(|(p, _)| p.clone())
    }

    /// Bytes and FNV-1a checksum (`fnv1a` from `FNV_START`) of a finished upload.
    pub fn upload_digest(&self, name: &str) -> Option<(u64, u64)> {
        lock(&self.shared.projects).digests.get(name).copied()
    }

    /// Every upload byte received so far.
    pub fn uploaded_bytes(&self) -> u64 {
        self.shared.uploaded_bytes.load(Ordering::SeqCst)
    }

    /// 403 PERMISSION_DENIED answers given for another project's resource.
    pub fn permission_denied(&self) -> u64 {
        self.shared.permission_denied.load(Ordering::SeqCst)
    }

    /// Resource names that exist, of any project.
    pub fn resource_names(&self) -> Vec<String> {
        let mut names: Vec<String> = lock(&self.shared.projects)
            .resources
            .keys()
            .cloned()
            .collect();
        names.sort();
        names
    }
}
