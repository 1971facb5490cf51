//! An embedding job run as a sequence of the scheduler: its inputs are evaluated a chunk per
//! step, between the steps of the streams that run beside it, so that a long batch of inputs
//! does not stop them (an encoder takes each input whole: its tokens attend both ways).

use super::pace::Pace;
use super::prep::EmbedPlan;
use super::{Event, Job, Slot, Summary};
use crate::error::ApiError;
use engine::SharedBackend;
use engine::{LogitRows, Model, Pooler, SessionState};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(super) struct EmbedTask {
    pub job: Job,
    /// Its place in the worker, freed when the task is dropped.
    _slot: Slot,
    plan: EmbedPlan,
    state: Option<SessionState>,
    /// The input being evaluated, and how much of it is done.
    input: usize,
    offset: usize,
    pooler: Option<Pooler>,
    vectors: Vec<Vec<f32>>,
    eval_time: Duration,
    /// Its speed so far (for the chunk size while others wait).
    pace: Pace,
}

/// What a step of the task came to.
pub(super) enum Progress {
    More,
    /// Finished (its answer or error sent), or its client went away.
    Ended,
}

impl EmbedTask {
    pub fn new(
        model: &Model,
        job: Job,
        slot: Slot,
        plan: EmbedPlan,
        backend: &SharedBackend,
    ) -> EmbedTask {
        let state = model.session(plan.n_ctx, Arc::clone(backend)).into_state();
        EmbedTask {
            job,
            _slot: slot,
            plan,
            state: Some(state),
            input: 0,
            offset: 0,
            pooler: None,
            vectors: Vec::new(),
            eval_time: Duration::ZERO,
            pace: Pace::default(),
        }
    }

    /// Evaluates the next chunk: at most `limit` tokens, and when `shared` (other sequences
    /// wait for this step) no more than its [`Pace`] allows.
    pub fn step(
        &mut self,
        model: &Model,
        backend: &SharedBackend,
        limit: usize,
        shared: bool,
    ) -> Progress {
        if self.job.cancel.load(Ordering::Relaxed) {
            return Progress::Ended;
        }
        let Some(tokens) = self.plan.inputs.get(self.input) else {
            return self.answer();
        };
        let mut take = self.pace.chunk(limit, shared);
        if model.is_embedding_only() {
            take = tokens.len();
        }
        let end = (self.offset + take).min(tokens.len());
        let chunk = &tokens[self.offset..end];
        let Some(mut state) = self.state.take() else {
            return Progress::Ended;
        };
        if self.offset == 0 {
            state.truncate(0);
        }
        let mut session = model.resume(state, Arc::clone(backend));
        let t = Instant::now();
        let pooler = self.pooler.get_or_insert_with(|| Pooler::new(model));
        let result = session
            .eval(chunk, LogitRows::Hidden)
            .map(|h| pooler.add(h));
        let took = t.elapsed();
        self.state = Some(session.into_state());
        if let Err(e) = result {
            self.fail(ApiError::internal(format!("embedding failed: {e}")));
            return Progress::Ended;
        }
        self.eval_time += took;
        self.pace.record(chunk.len(), took);
        self.offset = end;
        if self.offset == tokens.len() {
            if let Some(p) = self.pooler.take() {
                self.vectors.push(p.finish());
            }
            self.input += 1;
            self.offset = 0;
            if self.input == self.plan.inputs.len() {
                return self.answer();
            }
        }
        Progress::More
    }

    pub fn fail(&self, e: ApiError) {
        let _ = self.job.events.send(Event::Error(e));
    }

    fn answer(&mut self) -> Progress {
        let summary = Summary {
            prompt_tokens: self.plan.inputs.iter().map(Vec::len).sum(),
            prompt_time: self.eval_time,
            load_time: self.plan.load_time,
            total_time: self.job.queued.elapsed(),
            ..Summary::default()
        };
        let vectors = std::mem::take(&mut self.vectors);
        let _ = self.job.events.send(Event::Embeddings { vectors, summary });
        Progress::Ended
    }

    /// The cache it holds (for the memory shown by `/api/ps`).
    pub fn state(&self) -> Option<&SessionState> {
        self.state.as_ref()
    }
}
