//! Word wrapping for answers shown on a terminal: a word that would cross the right edge
//! starts the next line instead of being cut by the terminal. Text arrives in pieces, so the
//! word being written is held back until the space after it (or the end) shows it is whole.

/// The wrapper's state between pieces.
pub struct WordWrap {
    width: usize,
    /// Columns used on the current line.
    col: usize,
    /// The word being written, not yet shown.
    word: String,
    word_width: usize,
}

impl WordWrap {
    /// Wraps at `width` columns (at least 10; narrower terminals are not wrapped).
    pub fn new(width: usize) -> Option<WordWrap> {
        (width >= 10).then_some(WordWrap {
            width,
            col: 0,
            word: String::new(),
            word_width: 0,
        })
    }

    /// Wraps at the width of the terminal on stdout; None when stdout is not one.
    pub fn for_stdout() -> Option<WordWrap> {
        let term = console::Term::stdout();
        if !term.is_term() {
            return None;
        }
        let (_, cols) = term.size_checked()?;
        WordWrap::new(cols as usize)
    }

    /// What to print now for `piece`.
    pub fn push(&mut self, piece: &str) -> String {
        let mut out = String::new();
        for c in piece.chars() {
            match c {
                '\n' => {
                    self.flush_word(&mut out);
                    out.push('\n');
                    self.col = 0;
                }
                ' ' | '\t' => {
                    self.flush_word(&mut out);
                    if self.col >= self.width {
                        // A full line: the space becomes the line break.
                        out.push('\n');
                        self.col = 0;
                    } else {
                        out.push(c);
                        let step = if c == '\t' { 8 - self.col % 8 } else { 1 };
                        self.col = (self.col + step).min(self.width);
                    }
                }
                _ => {
                    let w = char_width(c);
                    // A word longer than a line is broken where the line ends.
                    if self.word_width + w > self.width {
                        self.flush_word(&mut out);
                    }
                    self.word.push(c);
                    self.word_width += w;
                }
            }
        }
        out
    }

    /// The rest: the last word.
    pub fn finish(&mut self) -> String {
        let mut out = String::new();
        self.flush_word(&mut out);
        out
    }

    fn flush_word(&mut self, out: &mut String) {
        if self.word.is_empty() {
            return;
        }
        if self.col > 0 && self.col + self.word_width > self.width {
            // The spaces already printed at the end of the line are invisible.
            out.push('\n');
            self.col = 0;
        }
        out.push_str(&self.word);
        // A line filled to the edge is broken by what comes next (a terminal keeps the
        // cursor on a full line until then, so a line break there adds no blank line).
        self.col += self.word_width;
        self.word.clear();
        self.word_width = 0;
    }
}

fn char_width(c: char) -> usize {
    let mut buf = [0u8; 4];
    console::measure_text_width(c.encode_utf8(&mut buf))
}

#[cfg(test)]
mod tests {
    use super::WordWrap;

    fn wrap(width: usize, pieces: &[&str]) -> String {
        let mut w = WordWrap::new(width).unwrap();
        let mut out: String = pieces.iter().map(|p| w.push(p)).collect();
        out.push_str(&w.finish());
        out
    }

    #[test]
    fn words_that_cross_the_edge_start_a_new_line() {
        let text = wrap(12, &["The", " quick", " brown", " fox", " jumps", " over."]);
        assert_eq!(text, "The quick \nbrown fox \njumps over.");
        for line in text.lines() {
            assert!(line.trim_end().chars().count() <= 12, "{line:?}");
        }
    }

    #[test]
    fn a_word_split_across_pieces_is_kept_whole() {
        assert_eq!(wrap(10, &["abc de", "fgh", "ij k"]), "abc \ndefghij k");
    }

    #[test]
    fn newlines_reset_the_column_and_long_words_break() {
        assert_eq!(wrap(10, &["0123456\n0123 45"]), "0123456\n0123 45");
        assert_eq!(wrap(10, &["x 0123456789abc"]), "x \n0123456789\nabc");
        assert_eq!(wrap(10, &["abcd efghi jk"]), "abcd efghi\njk");
    }

    #[test]
    fn wide_characters_count_twice() {
        assert_eq!(wrap(10, &["ab 日本語です"]), "ab \n日本語です");
    }

    #[test]
    fn narrow_terminals_are_not_wrapped() {
        assert!(WordWrap::new(5).is_none());
    }
}
