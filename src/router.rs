//! Maps `(method, path)` to a `Route`. Pure and allocation-light: no I/O, no config.
//!
//! Each route knows its `Dialect` (which error shape its clients understand) and who may call
//! it (`Gate`). Unknown paths are `NotFound` and known paths with the wrong method are
//! `MethodNotAllowed`, both in the dialect of the path's prefix.

use http::Method;

/// Which API's conventions (error shape, credentials) a route follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    OpenAi,
    Google,
    /// Anthropic's Messages API (`/v1/messages`, issue #17): its error shape, `x-api-key`.
    Anthropic,
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Anyone, and IP rules do not apply (the kubelet's probes, `/livez` and `/readyz`).
    Probe,
    /// Anyone the IP rules allow, without a token (`/health`, the dashboard page, public
    /// metrics).
    Open,
    /// A client token (or anyone with `auth.open`), after IP rules.
    Client,
    /// An admin token (or, when none are configured, a client on this machine asking directly:
    /// `access::Origin::local`), after IP rules.
    Admin,
}

/// A native Gemini method on `/v1beta/models/{model}:{action}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GeminiAction {
    GenerateContent,
    StreamGenerateContent,
    CountTokens,
    EmbedContent,
    BatchEmbedContents,
}

impl GeminiAction {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "generateContent" => GeminiAction::GenerateContent,
            "streamGenerateContent" => GeminiAction::StreamGenerateContent,
            "countTokens" => GeminiAction::CountTokens,
            "embedContent" => GeminiAction::EmbedContent,
            "batchEmbedContents" => GeminiAction::BatchEmbedContents,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            GeminiAction::GenerateContent => "generateContent",
            GeminiAction::StreamGenerateContent => "streamGenerateContent",
            GeminiAction::CountTokens => "countTokens",
            GeminiAction::EmbedContent => "embedContent",
            GeminiAction::BatchEmbedContents => "batchEmbedContents",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    ChatCompletions,
    // --- Responses API (issue #17) ---
    /// `POST /v1/responses`.
    Responses,
    /// `POST /v1/responses/input_tokens`.
    ResponsesInputTokens,
    /// `GET` (`delete: false`) or `DELETE` `/v1/responses/{id}`.
    StoredResponse {
        id: String,
        delete: bool,
    },
    /// `GET /v1/responses/{id}/input_items`.
    ResponseInputItems(String),
    // --- end Responses API ---
    ListModels,
    GetModel(String),
    /// `GET /v1/models[/{id}]` from an Anthropic client (`anthropic-version` sent): the same
    /// catalogue in Anthropic's shape.
    AnthropicListModels,
    AnthropicGetModel(String),
    Embeddings,
    /// `POST /v1/images/generations` (OpenAI Images API).
    ImageGenerations,
    GeminiListModels,
    GeminiGetModel(String),
    GeminiCall {
        model: String,
        action: GeminiAction,
        /// Asked on `/v1alpha` (Google's preview surface), and sent there; else `/v1beta`.
        alpha: bool,
    },
    /// Any other Gemini-native call (`/v1beta/**`, `/v1alpha/**`, the native `/v1/…` routes, uploads under
    /// `/upload/v1beta/**` and `/upload/v1/**`), passed through by `api::native`.
    Native,
    /// `/upload/session/{id}`: a resumable upload session the proxy handed out; its id is the
    /// credential (the SDK sends the chunks without one).
    UploadSession(String),
    /// The Live API's WebSocket (`GET /ws/google.ai.generativelanguage.{version}.GenerativeService.
    /// BidiGenerateContent`), tunnelled by `api::live`; `constrained`: the
    /// `BidiGenerateContentConstrained` method, whose credential is an ephemeral token the proxy
    /// minted (checked by the handler, not the gate).
    Live {
        version: LiveVersion,
        constrained: bool,
    },
    /// `POST /v1alpha/auth_tokens`: an ephemeral token for the Live API, minted on a pool key.
    AuthTokens,
    RunGemini,
    /// `GET /`: what this is and where to go (a browser, a load balancer's default check).
    Root,
    Health,
    Livez,
    Readyz,
    Status,
    Explain,
    AdminReload,
    Stats,
    ResetKeys,
    ResetKeyHealth,
    Recommendations,
    IpConfig,
    TestIp,
    Metrics,
    /// `GET /dashboard` and `GET /dashboard/{asset}` (the asset name, empty for the page).
    Dashboard(String),
    /// `GET /dashboard/api/state`: what the page shows, as JSON (admin).
    DashboardState,
    DashboardLogin,
    DashboardLogout,
    /// `POST /v1/messages` (Anthropic, issue #17).
    Messages,
    /// `POST /v1/messages/count_tokens` (Anthropic, issue #17).
    CountTokens,
    NotFound(Dialect),
    MethodNotAllowed(Dialect),
}

impl Route {
    pub fn dialect(&self) -> Dialect {
        match self {
            Route::GeminiListModels
            | Route::GeminiGetModel(_)
            | Route::GeminiCall { .. }
            | Route::Native
            | Route::UploadSession(_)
            | Route::Live { .. }
            | Route::AuthTokens => Dialect::Google,
            Route::NotFound(d) | Route::MethodNotAllowed(d) => *d,
            Route::Messages
            | Route::CountTokens
            | Route::AnthropicListModels
            | Route::AnthropicGetModel(_) => Dialect::Anthropic,
            _ => Dialect::OpenAi,
        }
    }

    pub fn gate(&self) -> Gate {
        match self {
            Route::Livez | Route::Readyz => Gate::Probe,
            Route::Status
            | Route::Explain
            | Route::AdminReload
            | Route::Stats
            | Route::ResetKeys
            | Route::ResetKeyHealth
            | Route::Recommendations
            | Route::IpConfig
            | Route::TestIp
            | Route::DashboardState => Gate::Admin,
            // `/metrics` decides itself (admin, or anyone with `server.metrics_public`); `/health`
            // needs no token but obeys the IP rules; the dashboard page and its login are
            // public, the data it shows is not.
            Route::Metrics
            | Route::Health
            | Route::Root
            | Route::Dashboard(_)
            | Route::DashboardLogin
            | Route::DashboardLogout => Gate::Open,
            // The session id in the path is the credential; `api::native` checks it.
            Route::UploadSession(_) => Gate::Open,
            // An ephemeral token (not a client token) is the credential; `api::live` checks it.
            Route::Live {
                constrained: true, ..
            } => Gate::Open,
            _ => Gate::Client,
        }
    }

    /// The routes a client's own code calls (the dialects, models, the native API, uploads):
    /// the ones `server.cors_origins` opens to web pages. Never admin, dashboard, health or
    /// metrics, nor the Live API's WebSocket (browsers send no preflight for one).
    pub fn is_client_api(&self) -> bool {
        matches!(
            self,
            Route::ChatCompletions
                | Route::Responses
                | Route::ResponsesInputTokens
                | Route::StoredResponse { .. }
                | Route::ResponseInputItems(_)
                | Route::ListModels
                | Route::GetModel(_)
                | Route::AnthropicListModels
                | Route::AnthropicGetModel(_)
                | Route::Embeddings
                | Route::ImageGenerations
                | Route::GeminiListModels
                | Route::GeminiGetModel(_)
                | Route::GeminiCall { .. }
                | Route::Native
                | Route::UploadSession(_)
                | Route::AuthTokens
                | Route::Messages
                | Route::CountTokens
        )
    }

    /// A short, low-cardinality name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Route::ChatCompletions => "chat_completions",
            Route::Responses => "responses",
            Route::ResponsesInputTokens => "responses_input_tokens",
            Route::StoredResponse { .. } | Route::ResponseInputItems(_) => "stored_response",
            Route::ListModels | Route::GetModel(_) => "models",
            Route::AnthropicListModels | Route::AnthropicGetModel(_) => "anthropic_models",
            Route::Embeddings => "embeddings",
            Route::ImageGenerations => "image_generations",
            Route::GeminiListModels | Route::GeminiGetModel(_) => "gemini_models",
            Route::GeminiCall { action, .. } => action.as_str(),
            Route::Native => "native",
            Route::UploadSession(_) => "upload_session",
            Route::Live { .. } => "live",
            Route::AuthTokens => "auth_tokens",
            Route::RunGemini => "run_gemini",
            Route::Explain => "explain",
            Route::AdminReload => "admin_reload",
            Route::Stats => "stats",
            Route::ResetKeys => "reset_keys",
            Route::ResetKeyHealth => "reset_key_health",
            Route::Recommendations => "recommendations",
            Route::IpConfig => "ip_config",
            Route::TestIp => "test_ip",
            Route::Metrics => "metrics",
            Route::Dashboard(_)
            | Route::DashboardState
            | Route::DashboardLogin
            | Route::DashboardLogout => "dashboard",
            Route::Health => "health",
            Route::Root => "root",
            Route::Livez => "livez",
            Route::Readyz => "readyz",
            Route::Status => "status",
            Route::Messages => "messages",
            Route::CountTokens => "count_tokens",
            Route::NotFound(_) => "not_found",
            Route::MethodNotAllowed(_) => "method_not_allowed",
        }
    }
}

/// `GET /v1/models[/{id}]` is OpenAI's list, unless the caller is a Google or an Anthropic
/// client. One that sends Google's credential (`x-goog-api-key` or `?key=`) and no
/// `Authorization` is google-genai on `api_version="v1"` (its default), which wants Google's
/// list and get; one that sends `anthropic-version` (the anthropic SDKs, Claude Code) wants
/// Anthropic's. Every other route is left as it is.
pub fn for_client(route: Route, headers: &http::HeaderMap, query: Option<&str>) -> Route {
    if !matches!(route, Route::ListModels | Route::GetModel(_)) {
        return route;
    }
    if headers.contains_key("anthropic-version") {
        return match route {
            Route::GetModel(id) => Route::AnthropicGetModel(id),
            _ => Route::AnthropicListModels,
        };
    }
    if headers.contains_key(http::header::AUTHORIZATION) {
        return route;
    }
    let google = headers.contains_key("x-goog-api-key")
        || query.is_some_and(|q| q.split('&').any(|p| p.starts_with("key=")));
    match route {
        Route::ListModels if google => Route::GeminiListModels,
        Route::GetModel(id) if google => Route::GeminiGetModel(id),
        other => other,
    }
}

/// Routes a request. Tolerates a doubled slash (`//models`), which some clients send when
/// their base URL ends with `/`.
pub fn route(method: &Method, path: &str) -> Route {
    let path = normalise(path);
    let dialect = if path.starts_with("/v1beta")
        || path.starts_with("/upload/")
        || path.starts_with("/v1alpha")
        || path.starts_with("/ws/")
    {
        Dialect::Google
    } else if path.starts_with("/v1/messages") {
        Dialect::Anthropic
    } else {
        Dialect::OpenAi
    };
    let get = method == Method::GET || method == Method::HEAD;
    let post = method == Method::POST;
    let expect = |ok: bool, route: Route| {
        if ok {
            route
        } else {
            Route::MethodNotAllowed(dialect)
        }
    };

    match path.as_ref() {
        "/v1/chat/completions" | "/chat/completions" => expect(post, Route::ChatCompletions),
        // Responses API (issue #17).
        "/v1/responses" | "/responses" => expect(post, Route::Responses),
        "/v1/responses/input_tokens" | "/responses/input_tokens" => {
            expect(post, Route::ResponsesInputTokens)
        }
        "/v1/models" | "/models" => expect(get, Route::ListModels),
        "/v1/embeddings" | "/embeddings" => expect(post, Route::Embeddings),
        "/v1/images/generations" | "/images/generations" => expect(post, Route::ImageGenerations),
        // Anthropic (issue #17); Claude Code adds `?beta=true`, which routing never reads.
        "/v1/messages" => expect(post, Route::Messages),
        "/v1/messages/count_tokens" => expect(post, Route::CountTokens),
        "/v1beta/models" => expect(get, Route::GeminiListModels),
        "/health" => expect(get, Route::Health),
        "/" => expect(get, Route::Root),
        "/livez" => expect(get, Route::Livez),
        "/readyz" => expect(get, Route::Readyz),
        "/status" => expect(get, Route::Status),
        "/explain" => expect(get, Route::Explain),
        "/run-gemini" => expect(post, Route::RunGemini),
        "/admin/reload" | "/admin/reload-keys" => expect(post, Route::AdminReload),
        "/stats" => expect(get, Route::Stats),
        "/admin/reset-keys" => expect(post, Route::ResetKeys),
        "/reset-api-key-health" => expect(post, Route::ResetKeyHealth),
        "/api-key-recommendations" => expect(get, Route::Recommendations),
        "/ip-config" => expect(get, Route::IpConfig),
        "/test-ip" => expect(post, Route::TestIp),
        "/metrics" => expect(get, Route::Metrics),
        "/dashboard" => expect(get, Route::Dashboard(String::new())),
        "/dashboard/api/state" => expect(get, Route::DashboardState),
        "/dashboard/login" => expect(post, Route::DashboardLogin),
        "/dashboard/logout" => expect(post, Route::DashboardLogout),
        "/v1alpha/auth_tokens" => expect(post, Route::AuthTokens),
        p => {
            if let Some(rest) = p.strip_prefix("/ws/google.ai.generativelanguage.") {
                return match live(rest) {
                    Some((version, constrained)) => expect(
                        *method == Method::GET,
                        Route::Live {
                            version,
                            constrained,
                        },
                    ),
                    None => Route::NotFound(Dialect::Google),
                };
            }
            if let Some(id) = p.strip_prefix("/upload/session/") {
                return if !post && *method != Method::PUT {
                    Route::MethodNotAllowed(Dialect::Google)
                } else if !id.is_empty() && !id.contains('/') {
                    Route::UploadSession(id.to_string())
                } else {
                    Route::NotFound(Dialect::Google)
                };
            }
            if p.starts_with("/upload/v1beta/")
                || p.starts_with("/upload/v1/")
                || p.starts_with("/upload/v1alpha/")
            {
                return Route::Native;
            }
            // google-genai 3.x calls Google's `v1` by default. OpenAI has no `POST
            // /v1/models/{m}:{action}`, so those are native methods, served as on `/v1beta`.
            if let Some((model, action)) = p
                .strip_prefix("/v1/models/")
                .and_then(|rest| rest.rsplit_once(':'))
                .filter(|(model, _)| !model.is_empty() && !model.contains('/'))
            {
                return match GeminiAction::parse(action) {
                    Some(action) if post => Route::GeminiCall {
                        model: model.to_string(),
                        action,
                        alpha: false,
                    },
                    Some(_) => Route::MethodNotAllowed(Dialect::Google),
                    None => Route::Native,
                };
            }
            if native_v1(p) {
                return Route::Native;
            }
            if let Some(id) = p
                .strip_prefix("/v1/models/")
                .or_else(|| p.strip_prefix("/models/"))
                .filter(|id| !id.is_empty())
            {
                return expect(get, Route::GetModel(id.to_string()));
            }
            // Responses API (issue #17): one stored response, or its input items.
            let stored = p
                .strip_prefix("/v1/responses/")
                .or_else(|| p.strip_prefix("/responses/"));
            if let Some(id) = stored
                .and_then(|rest| rest.strip_suffix("/input_items"))
                .filter(|id| !id.is_empty() && !id.contains('/'))
            {
                return expect(get, Route::ResponseInputItems(id.to_string()));
            }
            if let Some(id) = stored.filter(|id| !id.is_empty() && !id.contains('/')) {
                return match *method {
                    Method::GET => Route::StoredResponse {
                        id: id.to_string(),
                        delete: false,
                    },
                    Method::DELETE => Route::StoredResponse {
                        id: id.to_string(),
                        delete: true,
                    },
                    _ => Route::MethodNotAllowed(dialect),
                };
            }
            if let Some(asset) = p.strip_prefix("/dashboard/") {
                return expect(get, Route::Dashboard(asset.to_string()));
            }
            let models = p
                .strip_prefix("/v1beta/models/")
                .map(|rest| (rest, false))
                .or_else(|| p.strip_prefix("/v1alpha/models/").map(|rest| (rest, true)));
            if let Some((rest, alpha)) = models.filter(|(r, _)| !r.is_empty()) {
                match rest.rsplit_once(':') {
                    Some((model, action)) if !model.is_empty() && !model.contains('/') => {
                        if let Some(action) = GeminiAction::parse(action) {
                            return expect(
                                post,
                                Route::GeminiCall {
                                    model: model.to_string(),
                                    action,
                                    alpha,
                                },
                            );
                        }
                    }
                    None if get && !rest.contains('/') => {
                        return Route::GeminiGetModel(rest.to_string())
                    }
                    _ => {}
                }
            }
            if p == "/v1alpha/models" {
                return expect(get, Route::GeminiListModels);
            }
            if p.starts_with("/v1beta/") || p.starts_with("/v1alpha/") {
                return Route::Native;
            }
            Route::NotFound(dialect)
        }
    }
}

/// The API version in a Live route's path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveVersion {
    V1,
    V1Beta,
    V1Alpha,
}

impl LiveVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            LiveVersion::V1 => "v1",
            LiveVersion::V1Beta => "v1beta",
            LiveVersion::V1Alpha => "v1alpha",
        }
    }
}

/// `{version}.GenerativeService.BidiGenerateContent[Constrained]` -> the version and whether it
/// is the constrained (ephemeral token) method.
fn live(rest: &str) -> Option<(LiveVersion, bool)> {
    let (version, method) = rest.split_once(".GenerativeService.")?;
    let version = match version {
        "v1" => LiveVersion::V1,
        "v1beta" => LiveVersion::V1Beta,
        "v1alpha" => LiveVersion::V1Alpha,
        _ => return None,
    };
    match method {
        "BidiGenerateContent" => Some((version, false)),
        "BidiGenerateContentConstrained" => Some((version, true)),
        _ => None,
    }
}

/// Google's collections besides `models` that google-genai reaches on `/v1` (its default API
/// version). None of them is an OpenAI or Anthropic route of this proxy, so a `/v1/` path
/// whose first segment is one of these is native; so is `/v1/models/{m}:{method}` (OpenAI has
/// no `:` methods). Everything else under `/v1/` (chat completions, responses, messages,
/// models, embeddings) keeps its OpenAI or Anthropic meaning.
pub const NATIVE_V1_COLLECTIONS: [&str; 8] = [
    "files",
    "cachedContents",
    "batches",
    "operations",
    "tunedModels",
    "corpora",
    "fileSearchStores",
    "generatedFiles",
];

fn native_v1(path: &str) -> bool {
    let Some(rest) = path.strip_prefix("/v1/") else {
        return false;
    };
    let first = rest.split(['/', ':']).next().unwrap_or("");
    // `models/{m}/operations/{op}` (a long-running generation) is native too.
    NATIVE_V1_COLLECTIONS.contains(&first) || (first == "models" && rest.split('/').count() > 2)
}

/// Collapses repeated slashes and drops a trailing one, borrowing when nothing changes.
pub fn normalise(path: &str) -> std::borrow::Cow<'_, str> {
    if !path.contains("//") && (path.len() <= 1 || !path.ends_with('/')) {
        return std::borrow::Cow::Borrowed(path);
    }
    let mut out = String::with_capacity(path.len());
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        out.push('/');
        out.push_str(segment);
    }
    if out.is_empty() {
        out.push('/');
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(method: Method, path: &str, expected: Route) {
        assert_eq!(route(&method, path), expected, "{method} {path}");
    }

    #[test]
    fn routes() {
        use Route::*;
        check(Method::POST, "/v1/chat/completions", ChatCompletions);
        check(Method::POST, "/v1//chat/completions", ChatCompletions);
        check(
            Method::GET,
            "/v1/chat/completions",
            MethodNotAllowed(Dialect::OpenAi),
        );
        check(Method::POST, "/v1/responses", Responses);
        check(
            Method::POST,
            "/v1/responses/input_tokens",
            ResponsesInputTokens,
        );
        check(
            Method::GET,
            "/v1/responses/resp_1",
            StoredResponse {
                id: "resp_1".into(),
                delete: false,
            },
        );
        check(
            Method::DELETE,
            "/v1/responses/resp_1",
            StoredResponse {
                id: "resp_1".into(),
                delete: true,
            },
        );
        check(
            Method::GET,
            "/v1/responses/resp_1/input_items",
            ResponseInputItems("resp_1".into()),
        );
        check(
            Method::POST,
            "/v1/responses/resp_1/input_items",
            MethodNotAllowed(Dialect::OpenAi),
        );
        check(
            Method::GET,
            "/v1/responses",
            MethodNotAllowed(Dialect::OpenAi),
        );
        // google-genai on v1 lists and gets models with its own credential: Google's answer.
        let mut google = http::HeaderMap::new();
        google.insert("x-goog-api-key", http::HeaderValue::from_static("t"));
        let mut both = google.clone();
        both.insert("authorization", http::HeaderValue::from_static("Bearer t"));
        let none = http::HeaderMap::new();
        let get = |path: &str| route(&Method::GET, path);
        assert_eq!(
            for_client(get("/v1/models"), &google, None),
            GeminiListModels
        );
        assert_eq!(
            for_client(get("/v1/models/gemini-2.5-pro"), &none, Some("key=t")),
            GeminiGetModel("gemini-2.5-pro".into())
        );
        assert_eq!(for_client(get("/v1/models"), &both, None), ListModels);
        assert_eq!(
            for_client(get("/v1/models"), &none, Some("keys=1")),
            ListModels
        );
        assert_eq!(
            for_client(route(&Method::POST, "/v1/chat/completions"), &google, None),
            ChatCompletions
        );
        // The anthropic SDKs send `anthropic-version`, with `x-api-key` or a bearer token.
        let mut anthropic = http::HeaderMap::new();
        anthropic.insert(
            "anthropic-version",
            http::HeaderValue::from_static("2023-06-01"),
        );
        assert_eq!(
            for_client(get("/v1/models"), &anthropic, None),
            AnthropicListModels
        );
        anthropic.insert("authorization", http::HeaderValue::from_static("Bearer t"));
        assert_eq!(
            for_client(get("/v1/models/claude-x"), &anthropic, None),
            AnthropicGetModel("claude-x".into())
        );
        assert_eq!(
            for_client(route(&Method::POST, "/v1/messages"), &anthropic, None),
            Messages
        );
        check(Method::GET, "/v1/models", ListModels);
        check(Method::GET, "/v1//models", ListModels);
        check(Method::GET, "/v1/models/", ListModels);
        check(
            Method::GET,
            "/v1/models/gemini-2.5-pro",
            GetModel("gemini-2.5-pro".into()),
        );
        check(Method::POST, "/v1/embeddings", Embeddings);
        check(Method::POST, "/v1/images/generations", ImageGenerations);
        check(Method::POST, "/v1/messages", Messages);
        check(Method::POST, "/v1/messages/count_tokens", CountTokens);
        check(
            Method::GET,
            "/v1/messages",
            MethodNotAllowed(Dialect::Anthropic),
        );
        check(
            Method::POST,
            "/v1/messages/batches",
            NotFound(Dialect::Anthropic),
        );
        check(Method::GET, "/v1beta/models", GeminiListModels);
        check(
            Method::GET,
            "/v1beta/models/gemini-2.5-flash",
            GeminiGetModel("gemini-2.5-flash".into()),
        );
        check(
            Method::POST,
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
            GeminiCall {
                model: "gemini-2.5-flash".into(),
                action: GeminiAction::StreamGenerateContent,
                alpha: false,
            },
        );
        // Google's preview surface: the same methods, sent to `/v1alpha`.
        check(
            Method::POST,
            "/v1alpha/models/gemini-2.5-flash:generateContent",
            GeminiCall {
                model: "gemini-2.5-flash".into(),
                action: GeminiAction::GenerateContent,
                alpha: true,
            },
        );
        check(Method::GET, "/v1alpha/models", GeminiListModels);
        check(Method::GET, "/v1alpha/files", Native);
        check(Method::POST, "/upload/v1alpha/files", Native);
        check(Method::POST, "/v1alpha/auth_tokens", AuthTokens);
        check(
            Method::POST,
            "/v1/models/gemini-2.5-flash:generateContent",
            GeminiCall {
                model: "gemini-2.5-flash".into(),
                action: GeminiAction::GenerateContent,
                alpha: false,
            },
        );
        check(
            Method::GET,
            "/v1/models/gemini-2.5-flash:countTokens",
            MethodNotAllowed(Dialect::Google),
        );
        check(
            Method::POST,
            "/v1beta/models/gemini-2.5-flash:predict",
            Native,
        );
        check(Method::POST, "/v1/models/imagen-4:predict", Native);
        check(Method::GET, "/v1beta/files", Native);
        check(Method::DELETE, "/v1beta/files/abc", Native);
        check(Method::POST, "/v1beta/cachedContents", Native);
        check(Method::PATCH, "/v1beta/cachedContents/x", Native);
        check(Method::GET, "/v1/files/abc", Native);
        check(Method::GET, "/v1/cachedContents", Native);
        check(Method::GET, "/v1/batches/b:cancel", Native);
        check(Method::POST, "/upload/v1beta/files", Native);
        check(Method::POST, "/upload/v1/files", Native);
        check(
            Method::POST,
            "/upload/session/abc",
            UploadSession("abc".into()),
        );
        check(
            Method::PUT,
            "/upload/session/abc",
            UploadSession("abc".into()),
        );
        check(
            Method::GET,
            "/upload/session/abc",
            MethodNotAllowed(Dialect::Google),
        );
        check(Method::POST, "/upload/nope", NotFound(Dialect::Google));
        // Our OpenAI dialect keeps its /v1 routes.
        check(Method::POST, "/v1/chat/completions", ChatCompletions);
        check(Method::GET, "/v1/models/files", GetModel("files".into()));
        check(Method::GET, "/v1/filesystem", NotFound(Dialect::OpenAi));
        check(Method::GET, "/v1/models/veo-3/operations/op1", Native);
        check(Method::GET, "/v1/nope", NotFound(Dialect::OpenAi));
        check(
            Method::GET,
            "/v1beta/models/x:generateContent",
            MethodNotAllowed(Dialect::Google),
        );
        check(Method::GET, "/health", Health);
        check(Method::GET, "/livez", Livez);
        check(Method::GET, "/readyz", Readyz);
        check(Method::GET, "/status", Status);
        check(Method::GET, "/stats", Stats);
        check(Method::POST, "/admin/reset-keys", ResetKeys);
        check(Method::POST, "/reset-api-key-health", ResetKeyHealth);
        check(Method::GET, "/api-key-recommendations", Recommendations);
        check(Method::GET, "/ip-config", IpConfig);
        check(Method::POST, "/test-ip", TestIp);
        check(Method::GET, "/metrics", Metrics);
        check(Method::GET, "/dashboard", Dashboard(String::new()));
        check(Method::GET, "/dashboard/app.js", Dashboard("app.js".into()));
        check(Method::GET, "/dashboard/api/state", DashboardState);
        check(Method::POST, "/dashboard/login", DashboardLogin);
        check(Method::POST, "/dashboard/logout", DashboardLogout);
        check(Method::GET, "/explain", Explain);
        check(Method::POST, "/run-gemini", RunGemini);
        check(Method::POST, "/admin/reload", AdminReload);
        check(Method::POST, "/admin/reload-keys", AdminReload);
        check(
            Method::GET,
            "/admin/reload",
            MethodNotAllowed(Dialect::OpenAi),
        );
        check(Method::GET, "/nope", NotFound(Dialect::OpenAi));
        check(Method::GET, "/v1beta/nope", Native);
        check(
            Method::GET,
            "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent",
            Live {
                version: LiveVersion::V1Beta,
                constrained: false,
            },
        );
        check(
            Method::GET,
            "/ws/google.ai.generativelanguage.v1.GenerativeService.BidiGenerateContent",
            Live {
                version: LiveVersion::V1,
                constrained: false,
            },
        );
        check(
            Method::GET,
            "/ws/google.ai.generativelanguage.v1alpha.GenerativeService.BidiGenerateContentConstrained",
            Live {
                version: LiveVersion::V1Alpha,
                constrained: true,
            },
        );
        check(
            Method::POST,
            "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent",
            MethodNotAllowed(Dialect::Google),
        );
        check(
            Method::GET,
            "/ws/google.ai.generativelanguage.v2.GenerativeService.BidiGenerateContent",
            NotFound(Dialect::Google),
        );
        check(Method::POST, "/v1alpha/auth_tokens", AuthTokens);
        check(
            Method::GET,
            "/v1alpha/auth_tokens",
            MethodNotAllowed(Dialect::Google),
        );
    }

    #[test]
    fn gates() {
        assert_eq!(route(&Method::GET, "/livez").gate(), Gate::Probe);
        assert_eq!(route(&Method::GET, "/readyz").gate(), Gate::Probe);
        // IP rules apply to /health like to everything but the kubelet's probes.
        assert_eq!(route(&Method::GET, "/health").gate(), Gate::Open);
        assert_eq!(route(&Method::GET, "/dashboard").gate(), Gate::Open);
        assert_eq!(route(&Method::GET, "/status").gate(), Gate::Admin);
        assert_eq!(
            route(&Method::GET, "/dashboard/api/state").gate(),
            Gate::Admin
        );
        assert_eq!(
            route(&Method::POST, "/v1/chat/completions").gate(),
            Gate::Client
        );
        assert_eq!(
            route(&Method::GET, "/v1beta/models").dialect(),
            Dialect::Google
        );
        let live = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent";
        assert_eq!(route(&Method::GET, live).gate(), Gate::Client);
        assert_eq!(
            route(&Method::GET, &format!("{live}Constrained")).gate(),
            Gate::Open
        );
    }
}
