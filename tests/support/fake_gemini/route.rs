//! Which surface a request names: `Route::parse` over method, path and query (v1beta models
//! and their `:action`s), and the query-string decoding it needs. A new surface adds a variant.

use std::collections::HashMap;

use http::Method;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Route {
    Generate(String),
    Stream {
        model: String,
        sse: bool,
    },
    CountTokens(String),
    Embed(String),
    BatchEmbed(String),
    ListModels,
    GetModel(String),
    /// `POST /upload/v1beta/files` starting a resumable upload (or a one-shot `media` upload).
    UploadStart,
    /// A request to an upload URL the fake handed out (`?upload_id=`): a chunk, `finalize`,
    /// `query`.
    UploadChunk(String),
    /// `/v1beta/files[/{id}[:action]]`, any method.
    Files(Option<String>),
    /// `/v1beta/cachedContents[/{id}]`, any method.
    Caches(Option<String>),
    /// `POST models/{m}:predict` (Imagen).
    Predict(String),
    /// `POST models/{m}:batchGenerateContent`.
    BatchCreate(String),
    /// `/v1beta/batches[/{id}[:action]]`, any method.
    Batches(Option<String>),
    /// `/v1beta/interactions[/{id}[/cancel]]`, any method.
    Interactions(Option<String>),
    /// `POST /v1alpha/auth_tokens`: an ephemeral token for the Live API.
    AuthTokens,
    Unknown,
}

impl Route {
    pub(super) fn parse(method: &Method, path: &str, query: &HashMap<String, String>) -> Route {
        if path == "/v1alpha/auth_tokens" && method == Method::POST {
            return Route::AuthTokens;
        }
        if let Some(rest) = path
            .strip_prefix("/upload/v1beta/")
            .or_else(|| path.strip_prefix("/upload/v1/"))
            .or_else(|| path.strip_prefix("/upload/v1alpha/"))
        {
            return match (rest, query.get("upload_id")) {
                ("files", Some(id)) => Route::UploadChunk(id.clone()),
                ("files", None) if method == Method::POST => Route::UploadStart,
                _ => Route::Unknown,
            };
        }
        let versioned = path
            .strip_prefix("/v1beta/")
            .or_else(|| path.strip_prefix("/v1/"))
            .or_else(|| path.strip_prefix("/v1alpha/"));
        if let Some(rest) = versioned {
            let sub = |rest: &str| rest.strip_prefix('/').map(str::to_owned);
            if let Some(rest) = rest.strip_prefix("files") {
                if rest.is_empty() || rest.starts_with('/') {
                    return Route::Files(sub(rest));
                }
            }
            if let Some(rest) = rest.strip_prefix("cachedContents") {
                if rest.is_empty() || rest.starts_with('/') {
                    return Route::Caches(sub(rest));
                }
            }
            if let Some(rest) = rest.strip_prefix("batches") {
                if rest.is_empty() || rest.starts_with('/') {
                    return Route::Batches(sub(rest));
                }
            }
            if let Some(rest) = rest.strip_prefix("interactions") {
                if rest.is_empty() || rest.starts_with('/') {
                    return Route::Interactions(sub(rest));
                }
            }
        }
        let Some(rest) = path
            .strip_prefix("/v1beta/models")
            .or_else(|| path.strip_prefix("/v1/models"))
            .or_else(|| path.strip_prefix("/v1alpha/models"))
        else {
            return Route::Unknown;
        };
        if rest.is_empty() || rest == "/" {
            return if method == Method::GET {
                Route::ListModels
            } else {
                Route::Unknown
            };
        }
        let Some(rest) = rest.strip_prefix('/') else {
            return Route::Unknown;
        };
        if method == Method::GET {
            return Route::GetModel(rest.to_string());
        }
        if method != Method::POST {
            return Route::Unknown;
        }
        let Some((model, action)) = rest.rsplit_once(':') else {
            return Route::Unknown;
        };
        let model = model.to_string();
        match action {
            "generateContent" => Route::Generate(model),
            "streamGenerateContent" => Route::Stream {
                model,
                sse: query.get("alt").map(String::as_str) == Some("sse"),
            },
            "countTokens" => Route::CountTokens(model),
            "embedContent" => Route::Embed(model),
            "batchEmbedContents" => Route::BatchEmbed(model),
            "batchGenerateContent" => Route::BatchCreate(model),
            "predict" => Route::Predict(model),
            _ => Route::Unknown,
        }
    }

    pub(super) fn model(&self) -> Option<&str> {
        match self {
            Route::Generate(m)
            | Route::Stream { model: m, .. }
            | Route::CountTokens(m)
            | Route::Embed(m)
            | Route::BatchEmbed(m)
            | Route::Predict(m)
            | Route::GetModel(m) => Some(m),
            Route::ListModels
            | Route::UploadStart
            | Route::UploadChunk(_)
            | Route::Files(_)
            | Route::Caches(_)
            | Route::BatchCreate(_)
            | Route::Batches(_)
            | Route::Interactions(_)
            | Route::AuthTokens
            | Route::Unknown => None,
        }
    }
}

pub(super) fn parse_query(query: Option<&str>) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.insert(percent_decode(k), percent_decode(v));
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
