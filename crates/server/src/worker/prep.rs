//! The work a job needs before its model can run it, done on a thread of its own beside the
//! decode thread (which would otherwise stop every running stream meanwhile): rendering the
//! chat template, tokenizing, compiling the grammar, checking that the prompt fits.

use super::fit;
use super::{Api, Budget, EmbedInput, Event, Input, Job, PromptInfo, Slot};
use crate::error::ApiError;
use engine::chat::tools::ToolFormat;
use engine::chat::{reasoning, ChatError, ChatTemplate, Message, Sandbox};
use engine::constraint::Constraint;
use engine::Model;
use std::sync::Arc;
use std::time::Duration;

/// A job made ready to run.
pub(super) enum Ready {
    Generate(Box<Plan>, Box<Job>, Slot),
    Embed(Box<EmbedPlan>, Box<Job>, Slot),
    /// It answered for itself (a model task).
    Answered,
    /// It cannot run, and this says why.
    Failed(Box<Job>, ApiError),
}

/// A generation job's prompt, checked to fit its context.
pub(super) struct Plan {
    pub tokens: Vec<u32>,
    pub constraint: Option<Constraint>,
    pub n_ctx: usize,
    pub max_tokens: usize,
    pub load_time: Duration,
}

/// An embedding job's inputs, tokenized, checked and cut to the context.
pub(super) struct EmbedPlan {
    pub inputs: Vec<Vec<u32>>,
    pub n_ctx: usize,
    pub load_time: Duration,
}

/// Gets `job` ready on `model`.
pub(super) fn prepare(
    model: &Model,
    job: Job,
    slot: Slot,
    sandbox: Option<&Arc<dyn Sandbox>>,
    load_time: Duration,
) -> Ready {
    let outcome = match &job.input {
        Input::Task(task) => {
            task.run(model);
            return Ready::Answered;
        }
        Input::Embed { inputs, truncate } => {
            embed_inputs(model, &job, inputs, *truncate).map(|(inputs, n_ctx)| {
                Err(EmbedPlan {
                    inputs,
                    n_ctx,
                    load_time,
                })
            })
        }
        _ => plan(model, &job, sandbox, load_time).map(Ok),
    };
    let job = Box::new(job);
    match outcome {
        Ok(Ok(plan)) => Ready::Generate(Box::new(plan), job, slot),
        Ok(Err(embed)) => Ready::Embed(Box::new(embed), job, slot),
        Err(e) => Ready::Failed(job, e),
    }
}

/// Tokenizes a generation job and checks that it fits its context.
fn plan(
    model: &Model,
    job: &Job,
    sandbox: Option<&Arc<dyn Sandbox>>,
    load_time: Duration,
) -> Result<Plan, ApiError> {
    if model.is_embedding_only() {
        return Err(ApiError::bad_request(format!(
            "model `{}` is an embedding model: it cannot generate text (use /v1/embeddings or /api/embed)",
            job.model.name
        )));
    }
    let n_ctx = job.n_ctx.min(model.config().n_ctx_train.max(1));
    let tokens = tokenize(model, job, sandbox, n_ctx)?;
    let constraint = match &job.grammar {
        None => None,
        Some(g) => Some(Constraint::new(model.tokenizer(), g).map_err(|e| {
            ApiError::invalid(job.grammar_param, format!("{}: {e}", job.grammar_param))
        })?),
    };
    let prompt_param = match &job.input {
        Input::Chat(_) => "messages",
        Input::Tokens { param, .. } => param.as_str(),
        _ => "prompt",
    };
    if tokens.is_empty() {
        return Err(ApiError::invalid(prompt_param, "the prompt is empty"));
    }
    if tokens.len() >= n_ctx {
        return Err(ApiError::invalid(
            prompt_param,
            format!(
                "the prompt has {} tokens but the context holds {n_ctx}",
                tokens.len()
            ),
        )
        .with_code("context_length_exceeded"));
    }
    // A budget past the context is cut to the room left; the answer then ends with
    // finish_reason "length", as llama.cpp and Ollama end it.
    let room = n_ctx - tokens.len();
    let max_tokens = match job.budget {
        Budget::Exactly(n) | Budget::Default(n) => n.min(room),
        Budget::Fill => room,
    };
    Ok(Plan {
        tokens,
        constraint,
        n_ctx,
        max_tokens,
        load_time,
    })
}

/// The prompt's tokens. Ollama's routes cut a prompt too long for `n_ctx` (see `fit`).
fn tokenize(
    model: &Model,
    job: &Job,
    sandbox: Option<&Arc<dyn Sandbox>>,
    n_ctx: usize,
) -> Result<Vec<u32>, ApiError> {
    let tok = model.tokenizer();
    let cut = job.api == Api::Ollama;
    let limit = fit::prompt_limit(n_ctx, job.budget);
    Ok(match &job.input {
        Input::Raw(text) if cut => fit::keep_tail(tok.encode(text, true, true), limit, tok.bos()),
        Input::Raw(text) => tok.encode(text, true, true),
        Input::Chat(messages) => {
            let mut template = ChatTemplate::for_model(model).map_err(|e| match e {
                ChatError::BaseModel => base_model_refusal(&job.model.name),
                e => ApiError::bad_request(e.to_string()),
            })?;
            if let Some(sandbox) = sandbox {
                template = template.with_sandbox(Arc::clone(sandbox));
            }
            let tool_format = ToolFormat::detect(template.source());
            if job.tools.is_some() && tool_format.is_none() {
                return Err(ApiError::invalid(
                    "tools",
                    format!(
                        "{}'s chat template has no tool calls: this model cannot be given tools",
                        job.model.name
                    ),
                ));
            }
            // Messages' text stays text: `<|im_end|>` typed by a user is not the control token.
            let encode = |messages: &[Message]| {
                let prompt = template
                    .render_prompt(tok, messages, job.tools.as_deref(), true)
                    .map_err(|e| ApiError::bad_request(e.to_string()))?;
                let ids = prompt.encode(tok);
                Ok::<_, ApiError>((prompt, ids))
            };
            let (prompt, ids) = if cut {
                fit::fit_chat(messages, limit, encode)?
            } else {
                encode(messages)?
            };
            let _ = job.events.send(Event::Prompt(PromptInfo {
                tool_format,
                thinks: reasoning::template_thinks(template.source()),
                thinking_open: reasoning::prompt_opens_thinking(&prompt.text),
            }));
            ids
        }
        Input::Tokens { ids, param } => {
            check_ids(model, ids, param)?;
            ids.clone()
        }
        Input::Fim { prefix, suffix } => fim_prompt(tok, prefix, suffix).ok_or_else(|| {
            ApiError::invalid(
                "suffix",
                format!(
                    "suffix asks for fill-in-the-middle, but model `{}` has no FIM tokens \
                         (tokenizer.ggml.fim_pre_token_id or <|fim_prefix|>, <|fim_suffix|>, \
                         <|fim_middle|>): use a code model made for it, or leave suffix out",
                    job.model.name
                ),
            )
        })?,
        _ => Vec::new(),
    })
}

/// Tokenizes each input to embed (all must fit the context unless `truncate`, which cuts
/// them); returns them with the context they are evaluated in.
fn embed_inputs(
    model: &Model,
    job: &Job,
    inputs: &[EmbedInput],
    truncate: bool,
) -> Result<(Vec<Vec<u32>>, usize), ApiError> {
    let n_ctx = job.n_ctx.min(model.config().n_ctx_train.max(1));
    let mut out = Vec::with_capacity(inputs.len());
    for (i, input) in inputs.iter().enumerate() {
        let mut tokens = match input {
            EmbedInput::Text(text) => model.tokenizer().encode(text, true, true),
            EmbedInput::Tokens(ids) => {
                check_ids(model, ids, &format!("input[{i}]"))?;
                ids.clone()
            }
        };
        if tokens.len() > n_ctx {
            if !truncate {
                return Err(ApiError::invalid(
                    "input",
                    format!(
                        "input[{i}] has {} tokens but the context holds {n_ctx} (set truncate: true to cut it)",
                        tokens.len()
                    ),
                )
                .with_code("context_length_exceeded"));
            }
            // An encoder's input keeps its closing [SEP].
            let sep = model
                .tokenizer()
                .sep()
                .filter(|_| model.is_embedding_only());
            let closing = sep.filter(|&s| tokens.last() == Some(&s));
            tokens.truncate(n_ctx - usize::from(closing.is_some()));
            tokens.extend(closing);
        }
        if tokens.is_empty() {
            return Err(ApiError::invalid("input", format!("input[{i}] is empty")));
        }
        out.push(tokens);
    }
    Ok((out, n_ctx))
}

/// Refuses ids the model does not have, naming the first: `{param}[{i}]`.
pub(crate) fn check_ids(model: &Model, ids: &[u32], param: &str) -> Result<(), ApiError> {
    let limit = model.tokenizer().n_vocab().min(model.n_vocab());
    match ids.iter().position(|&id| id as usize >= limit) {
        None => Ok(()),
        Some(i) => Err(ApiError::invalid(
            &format!("{param}[{i}]"),
            format!(
                "{param}[{i}] is token id {} but the model's vocabulary has ids 0 to {}",
                ids[i],
                limit.saturating_sub(1)
            ),
        )),
    }
}

/// The fill-in-the-middle prompt: BOS when the model adds one, then the prefix marker and
/// the prefix, the suffix marker and the suffix, and the middle marker, after which the model
/// writes what goes between. The texts are plain text: marker-like text in them is not
/// parsed as control tokens. None when the model has no FIM tokens.
pub(crate) fn fim_prompt(
    tok: &engine::tokenizer::Tokenizer,
    prefix: &str,
    suffix: &str,
) -> Option<Vec<u32>> {
    let (pre, suf, mid) = tok.fim()?;
    let mut out = Vec::new();
    if tok.add_bos() {
        out.extend(tok.bos());
    }
    out.push(pre);
    out.extend(tok.encode(prefix, false, false));
    out.push(suf);
    out.extend(tok.encode(suffix, false, false));
    out.push(mid);
    Some(out)
}

/// Why a chat (or a templated generate) with a base model is refused, and what works instead.
fn base_model_refusal(name: &str) -> ApiError {
    ApiError::invalid(
        "model",
        format!(
            "{name} is a base model: its file has no chat template, so it continues text rather \
             than answering messages. Send the text to continue to /api/generate with \
             \"raw\": true or to /v1/completions, or chat with an instruct model."
        ),
    )
    .with_code("base_model")
}
