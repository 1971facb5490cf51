//! Ollama's model-management endpoints: `/api/show`, `/api/pull`, `/api/delete`,
//! `/api/copy`. The store work is blocking, so it runs on tokio's blocking threads; a pull
//! streams its progress as NDJSON while it runs.

use crate::error::{ApiError, OllamaError};
use crate::models::{CreateFrom, CreateSpec, ModelShow, PullProgress, Pulled};
use crate::params::parse_body;
use crate::AppState;
use axum::body::Body;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/show", post(show))
        .route("/api/pull", post(pull))
        .route("/api/delete", delete(remove))
        .route("/api/copy", post(copy))
        .route("/api/create", post(create))
        .route("/api/blobs/{digest}", post(upload_blob).head(has_blob))
}

/// Space an upload leaves free on the store's disk.
const UPLOAD_RESERVE: u64 = 512 << 20;

/// Metadata arrays longer than this (the tokenizer's tokens, merges and token types) are
/// shown as `null` unless `verbose` is set, as Ollama does.
const MAX_SHOWN_ARRAY: usize = 16;
/// At most this many progress lines a second per transfer.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

/// `model`, or the older `name`.
fn required_name(model: Option<String>, name: Option<String>) -> Result<String, ApiError> {
    model
        .filter(|m| !m.is_empty())
        .or(name.filter(|n| !n.is_empty()))
        .ok_or_else(|| ApiError::invalid("model", "model is required (the model's name)"))
}

/// Runs blocking store work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("the store task failed: {e}")))?
}

#[derive(Debug, Deserialize)]
struct ShowRequest {
    model: Option<String>,
    name: Option<String>,
    #[serde(default)]
    verbose: bool,
}

async fn show(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OllamaError> {
    let req: ShowRequest = parse_body(body)?;
    let name = required_name(req.model, req.name)?;
    let inner = Arc::clone(&state.inner);
    let verbose = req.verbose;
    let v = blocking(move || {
        let m = inner.models.show(&name)?;
        let file = gguf::GgufFile::open(&m.path)
            .map_err(|e| crate::models::unreadable_model(&m.name, &e))?;
        Ok(show_json(&m, &file, verbose))
    })
    .await?;
    Ok(Json(v).into_response())
}

/// Ollama's `/api/show` answer.
fn show_json(m: &ModelShow, file: &gguf::GgufFile, verbose: bool) -> Value {
    let info = store::ModelInfo::of(file);
    let license = m
        .license
        .clone()
        .or(info.license.clone())
        .unwrap_or_default();
    let template = info.chat_template.clone().unwrap_or_default();
    let family = info.architecture.clone().unwrap_or_default();
    let parameter_size = info
        .size_label
        .clone()
        .unwrap_or_else(|| info.parameters_human());
    let parameters = parameter_lines(&m.params);
    let mut model_info = Map::new();
    for (k, v) in file.metadata() {
        model_info.insert(k.clone(), metadata_json(v, verbose));
    }
    model_info
        .entry("general.parameter_count")
        .or_insert(json!(info.parameters));
    let mut out = json!({
        "license": license,
        "modelfile": modelfile(m, &template, &parameters, &license),
        "parameters": parameters.join("\n"),
        "template": template,
        "system": m.system.clone().unwrap_or_default(),
        "details": {
            "parent_model": m.base.clone().unwrap_or_default(),
            "format": "gguf",
            "family": family,
            "families": info.architecture.as_ref().map(|a| vec![a.clone()]),
            "parameter_size": parameter_size,
            "quantization_level": info.quantization.clone().unwrap_or_default(),
            // hearth's own: `base` models continue text and refuse chat.
            "kind": model_kind(&info, m.digest.as_deref()),
        },
        "model_info": model_info,
        "capabilities": [capability(file)],
        "modified_at": m.modified,
    });
    if verbose {
        out["tensors"] = file
            .tensors()
            .iter()
            .map(|t| json!({"name": t.name, "type": t.ty.name(), "shape": t.dims}))
            .collect();
    }
    out
}

/// What the model does, as Ollama tells it: a model that names its pooling
/// (`<arch>.pooling_type`) makes embeddings; the others complete text.
fn capability(file: &gguf::GgufFile) -> &'static str {
    let arch = file.get_str("general.architecture").ok().flatten();
    let key = arch.map(|a| format!("{a}.pooling_type"));
    match key.is_some_and(|k| file.metadata().iter().any(|(m, _)| *m == k)) {
        true => "embedding",
        false => "completion",
    }
}

/// `instruct` or `base`: the catalog's word for a known file (by its `sha256:…` digest), else
/// whether the file has a chat template.
pub(crate) fn model_kind(info: &store::ModelInfo, digest: Option<&str>) -> &'static str {
    let digest = digest.and_then(|d| store::Digest::parse(d).ok());
    store::ModelKind::of(info, digest.as_ref()).as_str()
}

/// A preset's options as Ollama writes them: `temperature                    0.7`.
fn parameter_lines(p: &store::Params) -> Vec<String> {
    p.entries()
        .iter()
        .map(|e| match e.split_once('=') {
            Some((k, v)) => format!("{k:<30} {v}"),
            None => e.clone(),
        })
        .collect()
}

/// A Modelfile describing the model, in Ollama's syntax (for reading: hearth makes presets
/// with `hearth create`).
fn modelfile(m: &ModelShow, template: &str, parameters: &[String], license: &str) -> String {
    let quoted = |s: &str| format!("\"\"\"{}\"\"\"", s.replace("\"\"\"", "\\\"\\\"\\\""));
    let mut out = format!(
        "# Modelfile generated by hearth for {}\n# To build a preset from it: hearth create NAME --from {}\n\nFROM {}\n",
        m.name,
        m.base.as_deref().unwrap_or(&m.name),
        m.path.display()
    );
    if !template.is_empty() {
        out.push_str(&format!("TEMPLATE {}\n", quoted(template)));
    }
    if let Some(s) = &m.system {
        out.push_str(&format!("SYSTEM {}\n", quoted(s)));
    }
    for p in parameters {
        out.push_str(&format!("PARAMETER {p}\n"));
    }
    if !license.is_empty() {
        out.push_str(&format!("LICENSE {}\n", quoted(license)));
    }
    out
}

/// A GGUF metadata value as JSON; long arrays are `null` unless `verbose`.
fn metadata_json(v: &gguf::Value, verbose: bool) -> Value {
    use gguf::Value as G;
    match v {
        G::U8(x) => json!(x),
        G::I8(x) => json!(x),
        G::U16(x) => json!(x),
        G::I16(x) => json!(x),
        G::U32(x) => json!(x),
        G::I32(x) => json!(x),
        G::U64(x) => json!(x),
        G::I64(x) => json!(x),
        // Through its shortest decimal form, so 0.1f32 reads 0.1 (non-finite: null).
        G::F32(x) => Value::from(x.to_string().parse::<f64>().unwrap_or(f64::NAN)),
        G::F64(x) => Value::from(*x),
        G::Bool(x) => json!(x),
        G::String(s) => json!(s),
        G::Array(items) if !verbose && items.len() > MAX_SHOWN_ARRAY => Value::Null,
        G::Array(items) => items.iter().map(|i| metadata_json(i, verbose)).collect(),
    }
}

/// Ollama's clients also send `insecure`; it is ignored: where models come from is the
/// server's setting (HF_ENDPOINT, HEARTH_SOURCE, the package index), not the request's.
#[derive(Debug, Deserialize)]
struct PullRequest {
    model: Option<String>,
    name: Option<String>,
    stream: Option<bool>,
}

/// What the pulling thread tells the handler.
enum PullEvent {
    Line(Value),
    Done(Result<Pulled, ApiError>),
}

/// The current transfer, for throttling.
#[derive(Default)]
struct Transfer {
    status: String,
    digest: Option<String>,
    total: Option<u64>,
    /// The last `completed` sent, and when.
    sent: Option<(u64, Instant)>,
    /// The latest `completed` heard.
    done: u64,
}

/// Turns the store's progress into Ollama's progress lines (at most ten a second per
/// transfer, the last one always sent). A client that went away is not an error: the lines
/// are dropped and the pull finishes, leaving the store complete.
struct Lines {
    tx: mpsc::UnboundedSender<PullEvent>,
    current: Mutex<Transfer>,
    cancel: Arc<AtomicBool>,
}

impl Lines {
    fn send(&self, v: Value) {
        let _ = self.tx.send(PullEvent::Line(v));
    }

    fn progress_line(t: &Transfer, completed: u64) -> Value {
        let mut v = json!({"status": t.status, "completed": completed});
        if let Some(d) = &t.digest {
            v["digest"] = json!(d);
        }
        if let Some(total) = t.total {
            v["total"] = json!(total);
        }
        v
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Transfer> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl PullProgress for Lines {
    fn begin(&self, what: &str, digest: Option<&str>, total: Option<u64>) {
        let mut t = self.lock();
        let status = match digest {
            Some(d) => format!("pulling {}", short_digest(d)),
            None => format!("pulling {what}"),
        };
        *t = Transfer {
            status,
            digest: digest.map(str::to_owned),
            total,
            sent: Some((0, Instant::now())),
            done: 0,
        };
        self.send(Lines::progress_line(&t, 0));
    }

    fn advance_to(&self, done: u64) {
        let mut t = self.lock();
        if t.status.is_empty() {
            return; // no transfer begun
        }
        t.done = done;
        let due = match t.sent {
            Some((_, at)) => at.elapsed() >= PROGRESS_INTERVAL || Some(done) == t.total,
            None => true,
        };
        if due && t.sent.map(|(n, _)| n) != Some(done) {
            t.sent = Some((done, Instant::now()));
            self.send(Lines::progress_line(&t, done));
        }
    }

    fn note(&self, message: &str) {
        self.send(json!({ "status": message }));
    }

    fn finish(&self) {
        let mut t = self.lock();
        if t.status.is_empty() {
            return;
        }
        // The last position, if throttling held it back.
        if t.sent.map(|(n, _)| n) != Some(t.done) {
            let done = t.done;
            t.sent = Some((done, Instant::now()));
            self.send(Lines::progress_line(&t, done));
        }
        *t = Transfer::default();
    }

    fn cancel(&self) -> Option<Arc<AtomicBool>> {
        Some(Arc::clone(&self.cancel))
    }
}

/// A `sha256:<64 hex>` digest from the path, or 400 naming `digest`.
fn parse_digest(d: &str) -> Result<store::Digest, ApiError> {
    store::Digest::parse(d).map_err(|_| {
        ApiError::invalid(
            "digest",
            format!(
                "digest {:?} is not sha256: followed by 64 lowercase hex digits",
                d.chars().take(80).collect::<String>()
            ),
        )
    })
}

/// `HEAD /api/blobs/{digest}`: 200 when the store holds the blob, 404 when not.
async fn has_blob(
    State(state): State<AppState>,
    axum::extract::Path(digest): axum::extract::Path<String>,
) -> Result<Response, OllamaError> {
    let digest = parse_digest(&digest)?;
    let inner = Arc::clone(&state.inner);
    let there = blocking(move || inner.models.has_blob(&digest)).await?;
    Ok(if there {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    }
    .into_response())
}

/// What the request side tells the thread writing an upload.
enum Chunk {
    Data(Bytes),
    /// The body ended: verify and keep it.
    End,
}

/// `POST /api/blobs/{digest}`: the body, streamed to a file in the store's `tmp/` while it
/// is hashed, becomes the blob only when its sha256 is `digest` (else 400, nothing kept).
/// 201 when stored, 200 when the store had it already. The body may be as large as the disk
/// allows, less a reserve (more: 413); a body cut short leaves nothing behind.
async fn upload_blob(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::extract::Path(digest): axum::extract::Path<String>,
    body: Body,
) -> Result<Response, OllamaError> {
    let digest = parse_digest(&digest)?;
    let inner = Arc::clone(&state.inner);
    let d = digest.clone();
    if blocking(move || inner.models.has_blob(&d)).await? {
        return Ok(StatusCode::OK.into_response());
    }
    let inner = Arc::clone(&state.inner);
    let d = digest.clone();
    let (mut upload, free) = blocking(move || inner.models.receive_blob(&d)).await?;
    let room = free.map_or(u64::MAX, |f| f.saturating_sub(UPLOAD_RESERVE));
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the blob does not fit: the store's disk has room for {room} more bytes"),
        )
    };
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > room) {
        return Err(too_large().into());
    }
    // The file is written on a blocking thread; the bytes go there through a short queue.
    let (tx, mut rx) = mpsc::channel::<Chunk>(8);
    let writer = tokio::task::spawn_blocking(move || -> Result<bool, ApiError> {
        while let Some(chunk) = rx.blocking_recv() {
            match chunk {
                Chunk::Data(b) => upload.write(&b).map_err(crate::models::store_error)?,
                Chunk::End => {
                    upload.finish().map_err(crate::models::store_error)?;
                    return Ok(true);
                }
            }
        }
        Ok(false) // the request ended early: the upload's drop removes its file
    });
    let mut stream = body.into_data_stream();
    let mut received = 0u64;
    let mut failure = None;
    use futures_util::StreamExt;
    while let Some(frame) = stream.next().await {
        let bytes = match frame {
            Ok(b) => b,
            Err(e) => {
                failure = Some(ApiError::bad_request(format!(
                    "the upload was cut short: {e}"
                )));
                break;
            }
        };
        received += bytes.len() as u64;
        if received > room {
            failure = Some(too_large());
            break;
        }
        if tx.send(Chunk::Data(bytes)).await.is_err() {
            break; // the writer failed: its result says why
        }
    }
    if failure.is_none() {
        let _ = tx.send(Chunk::End).await;
    }
    drop(tx);
    let written = writer
        .await
        .map_err(|e| ApiError::internal(format!("the upload task failed: {e}")))?;
    if let Some(e) = failure {
        return Err(e.into());
    }
    match written? {
        true => Ok(StatusCode::CREATED.into_response()),
        false => Err(ApiError::internal("the upload ended unexpectedly").into()),
    }
}

#[derive(Debug, Deserialize)]
struct CreateRequest {
    model: Option<String>,
    name: Option<String>,
    from: Option<String>,
    files: Option<std::collections::BTreeMap<String, String>>,
    adapters: Option<Map<String, Value>>,
    system: Option<String>,
    template: Option<String>,
    license: Option<Value>,
    parameters: Option<Map<String, Value>>,
    messages: Option<Vec<Value>>,
    quantize: Option<String>,
    /// The older API's Modelfile text (and `path`, a Modelfile on the server).
    modelfile: Option<String>,
    path: Option<String>,
    stream: Option<bool>,
}

/// A preset's options from Ollama's `parameters` object (numbers, strings, `stop` lists).
fn create_params(map: &Map<String, Value>) -> Result<store::Params, ApiError> {
    let mut params = store::Params::default();
    for (k, v) in map {
        let field = format!("parameters.{k}");
        let texts: Vec<String> = match v {
            Value::Number(n) => vec![n.to_string()],
            Value::String(s) => vec![s.clone()],
            Value::Array(items) if k == "stop" => items
                .iter()
                .map(|i| {
                    i.as_str().map(str::to_owned).ok_or_else(|| {
                        ApiError::invalid(&field, format!("{field} must be a list of strings"))
                    })
                })
                .collect::<Result<_, _>>()?,
            other => {
                return Err(ApiError::invalid(
                    &field,
                    format!("{field} must be a number or a string (got {other})"),
                ))
            }
        };
        for t in texts {
            params
                .set(k, &t)
                .map_err(|e| ApiError::invalid(&field, format!("{field}: {e}")))?;
        }
    }
    Ok(params)
}

/// What `/api/create` refuses, and where the bytes come from.
fn create_spec(req: CreateRequest) -> Result<CreateSpec, ApiError> {
    let name = required_name(req.model, req.name)?;
    let unsupported =
        |field: &str, why: &str| Err(ApiError::invalid(field, format!("{field}: {why}")));
    if req.quantize.as_deref().is_some_and(|q| !q.is_empty()) {
        return unsupported(
            "quantize",
            "hearth does not quantize models; create from a GGUF file that is already quantized",
        );
    }
    if req.modelfile.is_some() || req.path.is_some() {
        let field = if req.modelfile.is_some() {
            "modelfile"
        } else {
            "path"
        };
        return unsupported(
            field,
            "the Modelfile form of /api/create is not supported; send from or files, with              system and parameters, as current Ollama clients do",
        );
    }
    if req.template.as_deref().is_some_and(|t| !t.is_empty()) {
        return unsupported(
            "template",
            "hearth renders the model file's own chat template (Jinja) and cannot use an              Ollama (Go) template; leave template out",
        );
    }
    if req.adapters.as_ref().is_some_and(|a| !a.is_empty()) {
        return unsupported("adapters", "LoRA adapters are not supported");
    }
    if req.messages.as_ref().is_some_and(|m| !m.is_empty()) {
        return unsupported("messages", "stored messages are not supported");
    }
    let from = match (req.from.filter(|f| !f.is_empty()), req.files) {
        (Some(_), Some(_)) => return unsupported("files", "give from or files, not both"),
        (None, None) => {
            return Err(ApiError::invalid(
                "from",
                "from (a model or an absolute path to a GGUF file) or files (an uploaded GGUF                  blob) is required",
            ))
        }
        (Some(f), None) if f.starts_with('/') => CreateFrom::File(f.into()),
        (Some(f), None) => CreateFrom::Model(f),
        (None, Some(files)) => {
            let mut it = files.into_iter();
            match (it.next(), it.next()) {
                (Some((file, digest)), None) => {
                    if !file.to_ascii_lowercase().ends_with(".gguf") {
                        return unsupported(
                            "files",
                            &format!("{file:?} is not a .gguf file (only GGUF models are supported)"),
                        );
                    }
                    let d = store::Digest::parse(&digest).map_err(|_| {
                        ApiError::invalid(
                            &format!("files.{file}"),
                            format!("files.{file}: {digest:?} is not sha256: followed by 64 lowercase hex digits"),
                        )
                    })?;
                    CreateFrom::Blob(d)
                }
                _ => return unsupported("files", "give exactly one GGUF file"),
            }
        }
    };
    let license = match req.license {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .map(|i| i.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    ApiError::invalid("license", "license must be text or a list of texts")
                })?
                .join("\n"),
        ),
        Some(_) => return unsupported("license", "license must be text or a list of texts"),
    };
    Ok(CreateSpec {
        name,
        from,
        system: req.system.filter(|s| !s.is_empty()),
        params: create_params(req.parameters.as_ref().unwrap_or(&Map::new()))?,
        license,
    })
}

/// `POST /api/create` (the current API: `from` or `files`, with `system` and `parameters`):
/// `{"status": …}` lines then `{"status": "success"}`, or one object when `stream` is false.
/// The model is made before the answer starts, so a refusal keeps its HTTP status.
async fn create(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OllamaError> {
    let req: CreateRequest = parse_body(body)?;
    let stream = req.stream.unwrap_or(true);
    let spec = create_spec(req)?;
    let mut lines = vec![match &spec.from {
        CreateFrom::Blob(d) => json!({"status": format!("using existing layer {d}")}),
        CreateFrom::File(p) => json!({"status": format!("copying file {}", p.display())}),
        CreateFrom::Model(m) => json!({"status": format!("using model {m}")}),
    }];
    let inner = Arc::clone(&state.inner);
    let (name, digest) = blocking(move || inner.models.create(spec)).await?;
    if !stream {
        return Ok(Json(json!({"status": "success"})).into_response());
    }
    lines.push(json!({"status": "writing manifest", "model": name, "digest": digest}));
    lines.push(json!({"status": "success"}));
    let mut text = String::new();
    for l in lines {
        text.push_str(&l.to_string());
        text.push('\n');
    }
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], text).into_response())
}

/// `sha256:b179c9523d0e…` → `b179c9523d0e` (Ollama's short form).
fn short_digest(d: &str) -> &str {
    let hex = d.strip_prefix("sha256:").unwrap_or(d);
    hex.get(..12).unwrap_or(hex)
}

/// The lines that end a pull.
fn closing_lines(result: Result<Pulled, ApiError>) -> Vec<Value> {
    match result {
        Ok(p) => vec![
            json!({"status": "verifying sha256 digest", "digest": p.digest}),
            json!({"status": "writing manifest"}),
            json!({"status": "success", "model": p.name, "digest": p.digest, "total": p.size}),
        ],
        Err(e) => vec![json!({ "error": e.message })],
    }
}

/// Sets the flag when dropped: held by whatever reads a pull's events (the handler, then its
/// stream), so a client that goes away stops the pull.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn ended_early() -> ApiError {
    ApiError::internal("the pull stopped unexpectedly; run it again to resume it")
}

async fn pull(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OllamaError> {
    let req: PullRequest = parse_body(body)?;
    let name = required_name(req.model, req.name)?;
    let stream = req.stream.unwrap_or(true);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let inner = Arc::clone(&state.inner);
    // A client that goes away drops `rx` (the handler or the stream): the pull stops, pip
    // is killed, and what was downloaded stays for the next pull to resume, as Ollama does.
    let cancel = Arc::new(AtomicBool::new(false));
    let guard = CancelOnDrop(Arc::clone(&cancel));
    // A panic in the pull drops `tx` without a result: the handler reports it, nothing more.
    tokio::task::spawn_blocking(move || {
        let lines = Lines {
            tx: tx.clone(),
            current: Mutex::new(Transfer::default()),
            cancel: Arc::clone(&cancel),
        };
        let result = if stream {
            inner.models.pull(&name, &lines)
        } else {
            inner.models.pull(&name, &Quiet(cancel))
        };
        let _ = tx.send(PullEvent::Done(result));
    });
    if !stream {
        loop {
            match rx.recv().await {
                Some(PullEvent::Line(_)) => {}
                Some(PullEvent::Done(r)) => {
                    let p = r?;
                    return Ok(Json(json!({"status": "success", "model": p.name, "digest": p.digest, "total": p.size}))
                        .into_response());
                }
                None => return Err(ended_early().into()),
            }
        }
    }
    // Errors found before anything was sent (a bad or unknown name, offline mode) keep
    // their status; later ones become an `{"error": …}` line.
    let first = match rx.recv().await {
        Some(PullEvent::Done(Err(e))) => return Err(e.into()),
        Some(ev) => ev,
        None => return Err(ended_early().into()),
    };
    let mut queue = VecDeque::from([json!({"status": "pulling manifest"})]);
    let mut finished = false;
    match first {
        PullEvent::Line(v) => queue.push_back(v),
        PullEvent::Done(r) => {
            finished = true;
            queue.extend(closing_lines(r));
        }
    }
    let lines = futures_util::stream::unfold(
        (rx, queue, finished, guard),
        |(mut rx, mut queue, mut finished, guard)| async move {
            loop {
                if let Some(v) = queue.pop_front() {
                    let mut line = v.to_string();
                    line.push('\n');
                    return Some((
                        Ok::<_, Infallible>(Bytes::from(line)),
                        (rx, queue, finished, guard),
                    ));
                }
                if finished {
                    return None;
                }
                match rx.recv().await {
                    Some(PullEvent::Line(v)) => queue.push_back(v),
                    Some(PullEvent::Done(r)) => {
                        finished = true;
                        queue.extend(closing_lines(r));
                    }
                    None => {
                        finished = true;
                        queue.push_back(json!({ "error": ended_early().message }));
                    }
                }
            }
        },
    );
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response())
}

/// Progress nobody reads (`stream: false`).
struct Quiet(Arc<AtomicBool>);

impl PullProgress for Quiet {
    fn begin(&self, _: &str, _: Option<&str>, _: Option<u64>) {}
    fn advance_to(&self, _: u64) {}
    fn note(&self, _: &str) {}
    fn finish(&self) {}
    fn cancel(&self) -> Option<Arc<AtomicBool>> {
        Some(Arc::clone(&self.0))
    }
}

#[derive(Debug, Deserialize)]
struct DeleteRequest {
    model: Option<String>,
    name: Option<String>,
}

/// `DELETE /api/delete`: 200 with an empty body, as Ollama answers.
async fn remove(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OllamaError> {
    let req: DeleteRequest = parse_body(body)?;
    let name = required_name(req.model, req.name)?;
    let inner = Arc::clone(&state.inner);
    blocking(move || inner.models.delete(&name)).await?;
    Ok(StatusCode::OK.into_response())
}

#[derive(Debug, Deserialize)]
struct CopyRequest {
    #[serde(default)]
    source: String,
    #[serde(default)]
    destination: String,
}

/// `POST /api/copy`: 200 with an empty body, as Ollama answers.
async fn copy(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OllamaError> {
    let req: CopyRequest = parse_body(body)?;
    let inner = Arc::clone(&state.inner);
    blocking(move || inner.models.copy(&req.source, &req.destination)).await?;
    Ok(StatusCode::OK.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(rx: &mut mpsc::UnboundedReceiver<PullEvent>) -> Vec<Value> {
        let mut out = Vec::new();
        while let Ok(PullEvent::Line(v)) = rx.try_recv() {
            out.push(v);
        }
        out
    }

    #[test]
    fn progress_is_throttled_and_ends_at_the_last_position() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let lines = Lines {
            tx,
            current: Mutex::new(Transfer::default()),
            cancel: Arc::new(AtomicBool::new(false)),
        };
        let digest = format!("sha256:{}", "ab".repeat(32));
        lines.begin("smollm2:135m", Some(&digest), Some(1000));
        for done in 1..=999 {
            lines.advance_to(done);
        }
        lines.finish();
        let out = collect(&mut rx);
        assert!(out.len() <= 4, "throttled: {out:?}");
        assert_eq!(out[0]["status"], "pulling abababababab");
        assert_eq!(out[0]["digest"], json!(digest));
        assert_eq!(out[0]["completed"], 0);
        assert_eq!(out.last().unwrap()["completed"], 999);
        assert_eq!(out.last().unwrap()["total"], 1000);
        // Reaching the total is always reported at once.
        lines.begin("x", None, Some(10));
        lines.advance_to(10);
        let out = collect(&mut rx);
        assert_eq!(out.last().unwrap()["completed"], 10);
        assert!(out[0].get("digest").is_none());
    }

    #[test]
    fn long_arrays_are_elided_unless_verbose() {
        let long = gguf::Value::Array((0..100).map(gguf::Value::I32).collect());
        assert_eq!(metadata_json(&long, false), Value::Null);
        assert_eq!(metadata_json(&long, true).as_array().unwrap().len(), 100);
        let short = gguf::Value::Array(vec![gguf::Value::F32(0.1), gguf::Value::Bool(true)]);
        assert_eq!(metadata_json(&short, false), json!([0.1, true]));
        assert_eq!(
            metadata_json(&gguf::Value::F32(f32::NAN), false),
            Value::Null
        );
    }

    #[test]
    fn embedding_models_say_so() {
        let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data");
        let open = |p: &str| gguf::GgufFile::open(data.join(p)).expect(p);
        assert_eq!(capability(&open("arch/bert_mean.gguf")), "embedding");
        assert_eq!(capability(&open("synthetic/llama_q8_0.gguf")), "completion");
    }

    #[test]
    fn names() {
        assert_eq!(required_name(Some("a".into()), None).unwrap(), "a");
        assert_eq!(
            required_name(Some(String::new()), Some("b".into())).unwrap(),
            "b"
        );
        let e = required_name(None, None).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("model"));
        assert_eq!(short_digest("sha256:0123456789abcdef"), "0123456789ab");
    }
}
