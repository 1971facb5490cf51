//! Reads the token usage out of an upstream's answer as it passes, without holding the answer
//! back: a JSON body is kept (up to [`MAX_KEPT`]) and read at its end; a stream of server-sent
//! events is cut into events, each read for a `usage` object. When hearth itself asked for
//! the usage (`stream_options.include_usage`, which the client did not set), the usage-only
//! event the client did not ask for is left out, so the client sees the stream it asked for.

/// The most of a JSON answer kept to read its usage (a larger one passes without a count).
pub const MAX_KEPT: usize = 16 << 20;
/// The longest server-sent event read for usage (a longer one passes unread).
const MAX_EVENT: usize = 1 << 20;

/// Tokens an answer reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tokens {
    pub prompt: u64,
    pub completion: u64,
}

/// Where a stream of events broke off, as the client saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// After a whole event: another can follow.
    Clean,
    /// Inside an event (or a stream too odd to follow).
    MidEvent,
}

/// What the answer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    Json,
    /// Server-sent events; `drop_usage_event`: hearth added `include_usage` and the event
    /// that carries only the usage is not passed on.
    Events {
        drop_usage_event: bool,
    },
}

pub struct Tap {
    shape: Shape,
    /// JSON: the body so far. Events: the bytes after the last complete event.
    kept: Vec<u8>,
    /// Too much to keep: counting gave up.
    overflow: bool,
    tokens: Option<Tokens>,
    /// The stream said it was complete: `data: [DONE]` or a choice's `finish_reason`.
    finished: bool,
}

impl Tap {
    pub fn new(shape: Shape) -> Tap {
        Tap {
            shape,
            kept: Vec::new(),
            overflow: false,
            tokens: None,
            finished: false,
        }
    }

    /// Takes the next bytes of the answer; returns those to pass on now.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<u8> {
        match self.shape {
            Shape::Json => {
                if !self.overflow && self.kept.len() + chunk.len() <= MAX_KEPT {
                    self.kept.extend_from_slice(chunk);
                } else {
                    self.overflow = true;
                    self.kept = Vec::new();
                }
                chunk.to_vec()
            }
            Shape::Events { drop_usage_event } => {
                if self.overflow {
                    return chunk.to_vec();
                }
                self.kept.extend_from_slice(chunk);
                let mut out = Vec::new();
                while let Some(end) = event_end(&self.kept) {
                    let event: Vec<u8> = self.kept.drain(..end).collect();
                    let usage_only = self.read_event(&event);
                    if !(drop_usage_event && usage_only) {
                        out.extend_from_slice(&event);
                    }
                }
                if self.kept.len() > MAX_EVENT {
                    // Not events after all, or one too large to read: pass it all on as is.
                    self.overflow = true;
                    out.append(&mut self.kept);
                }
                if !drop_usage_event {
                    // Nothing is left out: every byte goes on at once; the unfinished event
                    // is kept only to be read when it ends.
                    return chunk.to_vec();
                }
                out
            }
        }
    }

    /// The answer ended: the bytes still held, and the usage it reported (None: none seen).
    pub fn finish(&mut self) -> (Vec<u8>, Option<Tokens>) {
        match self.shape {
            Shape::Json => {
                if !self.overflow {
                    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&self.kept) {
                        self.tokens = usage_of(&v).or(self.tokens);
                    }
                }
                (Vec::new(), self.tokens)
            }
            Shape::Events { drop_usage_event } => {
                let rest = std::mem::take(&mut self.kept);
                let usage_only = !rest.is_empty() && self.read_event(&rest);
                let out = if drop_usage_event && !(usage_only) {
                    rest
                } else {
                    Vec::new()
                };
                (out, self.tokens)
            }
        }
    }

    /// The usage seen so far.
    pub fn tokens(&self) -> Option<Tokens> {
        self.tokens
    }

    /// The upstream closed a stream of events that never said it was complete (no `[DONE]`
    /// and no finish reason): where it broke off, as [`Tap::cut_off`] tells. None for an
    /// answer that finished, or one that is not a stream of events (or too odd to read).
    pub fn unfinished(&mut self) -> Option<Cut> {
        if !matches!(self.shape, Shape::Events { .. }) || self.overflow {
            return None;
        }
        if !self.kept.is_empty() && !self.finished {
            // A last event without its blank line (`data: [DONE]` and the connection closed).
            let rest = std::mem::take(&mut self.kept);
            self.read_event(&rest);
            self.kept = rest;
        }
        if self.finished {
            return None;
        }
        self.cut_off()
    }

    /// The answer broke off: whether the client has seen only whole events (None: not a
    /// stream of events). An unfinished event that was held back is dropped.
    pub fn cut_off(&mut self) -> Option<Cut> {
        match self.shape {
            Shape::Json => None,
            Shape::Events { drop_usage_event } => {
                let passed_partial = !self.kept.is_empty() && !drop_usage_event;
                self.kept.clear();
                Some(if self.overflow || passed_partial {
                    Cut::MidEvent
                } else {
                    Cut::Clean
                })
            }
        }
    }

    /// Reads one event's usage; true when the event carries usage and no choices (the
    /// usage-only event `include_usage` adds).
    fn read_event(&mut self, event: &[u8]) -> bool {
        let Ok(text) = std::str::from_utf8(event) else {
            return false;
        };
        let data: String = text
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(|d| d.strip_prefix(' ').unwrap_or(d))
            .collect::<Vec<_>>()
            .join("\n");
        if data.trim() == "[DONE]" {
            self.finished = true;
            return false;
        }
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&data) else {
            return false;
        };
        let finish = |c: &serde_json::Value| c.get("finish_reason").is_some_and(|f| !f.is_null());
        if v.get("choices")
            .and_then(|c| c.as_array())
            .is_some_and(|c| c.iter().any(finish))
        {
            self.finished = true;
        }
        let Some(t) = usage_of(&v) else {
            return false;
        };
        self.tokens = Some(t);
        v.get("choices")
            .and_then(|c| c.as_array())
            .is_some_and(|c| c.is_empty())
    }
}

/// The end (exclusive) of the first complete event: after a blank line (`\n\n`, `\r\n\r\n`).
fn event_end(buf: &[u8]) -> Option<usize> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// OpenAI's `usage` object (embeddings report only prompt tokens).
fn usage_of(v: &serde_json::Value) -> Option<Tokens> {
    let u = v.get("usage")?.as_object()?;
    let n = |k: &str| u.get(k).and_then(|x| x.as_u64());
    let prompt = n("prompt_tokens")?;
    Some(Tokens {
        prompt,
        completion: n("completion_tokens").unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n\
                          data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":2}}\n\n\
                          data: [DONE]\n\n";

    fn run(shape: Shape, chunks: &[&[u8]]) -> (String, Option<Tokens>) {
        let mut t = Tap::new(shape);
        let mut out = Vec::new();
        for c in chunks {
            out.extend(t.feed(c));
        }
        let (rest, tokens) = t.finish();
        out.extend(rest);
        (String::from_utf8(out).unwrap(), tokens)
    }

    #[test]
    fn events_pass_as_they_are_and_the_usage_is_read() {
        let bytes = STREAM.as_bytes();
        // Cut anywhere, even inside an event.
        for cut in [1, 10, 60, bytes.len() - 3] {
            let (out, tokens) = run(
                Shape::Events {
                    drop_usage_event: false,
                },
                &[&bytes[..cut], &bytes[cut..]],
            );
            assert_eq!(out, STREAM);
            assert_eq!(
                tokens,
                Some(Tokens {
                    prompt: 7,
                    completion: 2
                })
            );
        }
    }

    #[test]
    fn the_usage_event_hearth_asked_for_is_left_out() {
        let bytes = STREAM.as_bytes();
        let (out, tokens) = run(
            Shape::Events {
                drop_usage_event: true,
            },
            &[&bytes[..30], &bytes[30..]],
        );
        assert!(!out.contains("prompt_tokens"), "{out}");
        assert!(
            out.contains("\"Hi\"") && out.ends_with("data: [DONE]\n\n"),
            "{out}"
        );
        assert_eq!(tokens.map(|t| t.prompt), Some(7));
    }

    #[test]
    fn a_cut_is_clean_only_between_events_the_client_saw_whole() {
        let bytes = STREAM.as_bytes();
        for (drop_usage_event, cut, want) in [
            (false, 61, Cut::Clean),
            (false, 30, Cut::MidEvent),
            // Held back, so the client never saw the half event.
            (true, 30, Cut::Clean),
        ] {
            let mut t = Tap::new(Shape::Events { drop_usage_event });
            t.feed(&bytes[..cut]);
            assert_eq!(t.cut_off(), Some(want), "{drop_usage_event} {cut}");
            assert_eq!(t.finish().0, b"");
        }
        assert_eq!(Tap::new(Shape::Json).cut_off(), None);
    }

    #[test]
    fn a_stream_that_ends_without_saying_it_is_done_is_unfinished() {
        let events = Shape::Events {
            drop_usage_event: false,
        };
        let unfinished = |text: &str| {
            let mut t = Tap::new(events);
            t.feed(text.as_bytes());
            t.unfinished()
        };
        let done_at = STREAM.find("data: [DONE]").unwrap();
        // Whole, or closed right after its [DONE] without the blank line.
        assert_eq!(unfinished(STREAM), None);
        assert_eq!(unfinished(STREAM.trim_end()), None);
        // A finish reason says it too (servers that send no [DONE]).
        let finished = "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n";
        assert_eq!(unfinished(finished), None);
        // Closed between events before either: clean; inside an event: not.
        assert_eq!(unfinished(&STREAM[..done_at]), Some(Cut::Clean));
        assert_eq!(unfinished(&STREAM[..30]), Some(Cut::MidEvent));
        // A finish_reason of null is no finish.
        let open =
            "data: {\"choices\":[{\"delta\":{\"content\":\"a\"},\"finish_reason\":null}]}\n\n";
        assert_eq!(unfinished(open), Some(Cut::Clean));
        assert_eq!(Tap::new(Shape::Json).unfinished(), None);
    }

    #[test]
    fn a_json_answer_is_read_at_its_end() {
        let body = br#"{"data":[],"usage":{"prompt_tokens":5,"total_tokens":5}}"#;
        let (out, tokens) = run(Shape::Json, &[&body[..9], &body[9..]]);
        assert_eq!(out.as_bytes(), body);
        assert_eq!(
            tokens,
            Some(Tokens {
                prompt: 5,
                completion: 0
            })
        );
        let (_, none) = run(Shape::Json, &[b"not json"]);
        assert_eq!(none, None);
    }
}
