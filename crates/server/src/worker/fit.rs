//! Ollama's way with a prompt too long for the context: cut it rather than refuse it. A chat
//! loses its oldest exchanges first (never a system message nor the newest exchange), then
//! the start of what is left of the newest exchange's first message; a raw prompt loses its
//! first tokens (BOS stays). The OpenAI routes keep their 400 (`context_length_exceeded`).

use super::Budget;
use engine::chat::Message;

/// How many prompt tokens leave room for the answer: the context less the budget, at most
/// half the context (as `hearth run` does with a long conversation).
pub(super) fn prompt_limit(n_ctx: usize, budget: Budget) -> usize {
    let answer = match budget {
        Budget::Exactly(n) | Budget::Default(n) => n,
        Budget::Fill => n_ctx,
    };
    n_ctx - answer.clamp(1, (n_ctx / 2).max(1)).min(n_ctx)
}

/// The tokens of the longest tail of `messages` (see the module) that fits in `limit`, with
/// what `encode` gave for it; the most cut version when none fits (the caller refuses it).
/// `encode` renders and tokenizes a list of messages.
pub(super) fn fit_chat<T, E>(
    messages: &[Message],
    limit: usize,
    mut encode: impl FnMut(&[Message]) -> Result<(T, Vec<u32>), E>,
) -> Result<(T, Vec<u32>), E> {
    let whole = encode(messages)?;
    let starts = exchange_starts(messages);
    if whole.1.len() <= limit || starts.is_empty() {
        return Ok(whole);
    }
    // Fewest exchanges dropped: a binary search, as fewer messages never make more tokens.
    let last = starts.len() - 1;
    let most = without_oldest(messages, &starts, last);
    let mut best = encode(&most)?;
    if best.1.len() <= limit {
        let (mut lo, mut hi) = (0, last);
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            let e = encode(&without_oldest(messages, &starts, mid))?;
            if e.1.len() <= limit {
                (hi, best) = (mid, e);
            } else {
                lo = mid;
            }
        }
        return Ok(best);
    }
    // The newest exchange alone is too long: cut the start of its first message.
    let Some(at) = most.iter().position(|m| m.role != "system") else {
        return Ok(best);
    };
    let chars: Vec<usize> = most[at].content.char_indices().map(|(i, _)| i).collect();
    let cut = |n: usize| {
        let mut m = most.clone();
        let from = chars.get(n).copied().unwrap_or(m[at].content.len());
        m[at].content.drain(..from);
        m
    };
    let empty = encode(&cut(chars.len()))?;
    if empty.1.len() > limit {
        return Ok(empty);
    }
    let (mut lo, mut hi) = (0, chars.len());
    best = empty;
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        let e = encode(&cut(mid))?;
        if e.1.len() <= limit {
            (hi, best) = (mid, e);
        } else {
            lo = mid;
        }
    }
    Ok(best)
}

/// Where each exchange starts: the first non-system message, then each later user message.
fn exchange_starts(messages: &[Message]) -> Vec<usize> {
    let mut starts = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        if m.role != "system" && (starts.is_empty() || m.role == "user") {
            starts.push(i);
        }
    }
    starts
}

/// `messages` without their first `k` exchanges (system messages all stay).
fn without_oldest(messages: &[Message], starts: &[usize], k: usize) -> Vec<Message> {
    let from = starts.get(k).copied().unwrap_or(messages.len());
    messages
        .iter()
        .enumerate()
        .filter(|(i, m)| m.role == "system" || *i >= from)
        .map(|(_, m)| m.clone())
        .collect()
}

/// A raw prompt's last `limit` tokens, its BOS kept first.
pub(super) fn keep_tail(tokens: Vec<u32>, limit: usize, bos: Option<u32>) -> Vec<u32> {
    if tokens.len() <= limit || limit == 0 {
        return tokens;
    }
    let head = usize::from(bos.is_some() && tokens.first() == bos.as_ref());
    let tail = limit.saturating_sub(head);
    let mut out = tokens[..head].to_vec();
    out.extend_from_slice(&tokens[tokens.len() - tail..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One token per character and one per message, like a very simple template; the
    /// contents joined, to see what was kept.
    fn chars(m: &[Message]) -> Result<(String, Vec<u32>), ()> {
        let n: usize = m.iter().map(|m| m.content.chars().count() + 1).sum();
        let text: Vec<&str> = m.iter().map(|m| m.content.as_str()).collect();
        Ok((text.join("|"), vec![0; n]))
    }

    #[test]
    fn drops_oldest_exchanges_then_cuts_the_newest() {
        let msgs = [
            Message::new("system", "sys"),
            Message::new("user", "aaaa"),
            Message::new("assistant", "bbbb"),
            Message::new("user", "cccc"),
            Message::new("assistant", "dddd"),
            Message::new("user", "eeee"),
        ];
        let fitted = |limit| fit_chat(&msgs, limit, chars).unwrap().0;
        assert_eq!(fitted(100), "sys|aaaa|bbbb|cccc|dddd|eeee");
        // 4 + 3 × 5 = 19 for system + the last two exchanges.
        assert_eq!(fitted(19), "sys|cccc|dddd|eeee");
        assert_eq!(fitted(18), "sys|eeee");
        // The newest message loses its start.
        assert_eq!(fitted(7), "sys|ee");
        // Never the system prompt: the most cut version, for the caller to refuse.
        assert_eq!(fitted(3), "sys|");
    }

    #[test]
    fn the_best_fit_is_returned_not_the_last_tried() {
        let msgs = [
            Message::new("user", "aaaa"),
            Message::new("assistant", "bbbb"),
            Message::new("user", "cccc"),
            Message::new("user", "dddd"),
        ];
        let (_, t) = fit_chat(&msgs, 10, chars).unwrap();
        assert_eq!(t.len(), 10);
        let (_, t) = fit_chat(&msgs, 7, chars).unwrap();
        assert_eq!(t.len(), 5);
    }

    #[test]
    fn raw_prompts_keep_bos_and_the_tail() {
        assert_eq!(keep_tail(vec![1, 5, 6, 7, 8], 3, Some(1)), [1, 7, 8]);
        assert_eq!(keep_tail(vec![5, 6, 7, 8], 3, Some(1)), [6, 7, 8]);
        assert_eq!(keep_tail(vec![5, 6], 3, None), [5, 6]);
    }

    #[test]
    fn room_for_the_answer() {
        assert_eq!(prompt_limit(2048, Budget::Default(512)), 1536);
        assert_eq!(prompt_limit(2048, Budget::Exactly(4000)), 1024);
        assert_eq!(prompt_limit(2048, Budget::Fill), 1024);
        assert_eq!(prompt_limit(16, Budget::Exactly(1)), 15);
    }
}
