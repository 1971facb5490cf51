#!/usr/bin/env python3
# Run: /work/ref/venv/bin/python scripts/golden/make_tokens.py [--smollm2 PATH] [--gemma3 PATH] [--models smollm2,gemma3]
"""Tokenizer golden data from llama.cpp.

Writes tests/data/golden/tokenizer_corpus.json (the strings below) and, per model,
tests/data/golden/tokens_<model>.json with, for every corpus string (same order):
  plain   : ids of llama_tokenize(text, add_special=False, parse_special=False)
  special : ids of llama_tokenize(text, add_special=False, parse_special=True)
  bos     : ids of llama_tokenize(text, add_special=True,  parse_special=False)
            (add_special follows the model's own tokenizer.ggml.add_bos_token / add_eos_token)
and for each of those, llama_detokenize(ids, remove_special=False, unparse_special=False|True) as
base64 bytes ("d" and "ds"). Models default to the testutil cache (scripts/fetch-test-models).
"""

import argparse
import base64
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def corpus():
    c = []
    add = c.append

    # --- empty, whitespace, control characters ---
    for s in [
        "", " ", "  ", "   ", "    ", "     ", "        ", " " * 16, " " * 33,
        "\t", "\t\t", "\t\t\t\t", " \t ", "\t \t", "\n", "\n\n", "\n\n\n", "\r", "\r\n", "\r\n\r\n",
        "\n \n", " \n ", "\n\t\n", "a\nb", "a\r\nb", "a\rb", "a\n\nb", "a \n b", "a\t\tb",
        " hello", "  hello", "hello ", "hello  ", " hello ", "\thello", "hello\t", "\nhello\n",
        "   leading and trailing   ", "word  two   spaces    four", "x" + " " * 40 + "y",
        "\u00a0non-breaking\u00a0space", "zero\u200bwidth\u200bspace", "\u3000ideographic space",
        "\x00nul", "bell\x07", "\x1b[31mred\x1b[0m", "form\x0cfeed", "vertical\x0btab",
    ]:
        add(s)

    # --- plain English ---
    for s in [
        "Hello", "hello", "HELLO", "Hello, world!", "Hello world", "hello world!!!",
        "The quick brown fox jumps over the lazy dog.",
        "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG.",
        "A man, a plan, a canal: Panama.",
        "It was a bright cold day in April, and the clocks were striking thirteen.",
        "Supercalifragilisticexpialidocious",
        "antidisestablishmentarianism and pneumonoultramicroscopicsilicovolcanoconiosis",
        "e.g. i.e. etc. Mr. Mrs. Dr. St.",
        "Wait... what?! Really?? No!!!",
        "\"quoted\" 'single' `backtick` \u201ccurly\u201d \u2018curly\u2019",
        "semi;colon:colon,comma.period",
        "(parens) [brackets] {braces} <angles>",
        "hyphen-ated em\u2014dash en\u2013dash",
        "snake_case camelCase PascalCase kebab-case SCREAMING_CASE",
        "ALLCAPS lowercase MiXeD CaSe",
        "I", "a", "A", ".", ",", "!", "?", "-", "_", "...", "___", "---", "***", "###", "===",
    ]:
        add(s)

    # --- contractions ---
    for s in [
        "it's", "don't", "they're", "we've", "I'm", "you'll", "he'd",
        "IT'S", "DON'T", "THEY'RE", "WE'VE", "I'M", "YOU'LL", "HE'D",
        "John's book", "JOHN'S BOOK", "It'S", "don'T", "we'Ve",
        "I'd've thought you'd've known", "'s", "'t", "'re", "'ve", "'m", "'ll", "'d",
        "rock 'n' roll", "'tis the season", "o'clock", "the students' papers",
        "can\u2019t won\u2019t shouldn\u2019t", "y'all'd've",
    ]:
        add(s)

    # --- digits and numbers ---
    for s in [
        "1", "12", "123", "1234", "12345", "123456", "1234567", "12345678901234567890",
        "3.14159", "2.718281828", "-42", "+7", "1e10", "6.022e23", "0x1F", "0b1010", "007",
        "1,000,000", "1.000.000,50", "$19.99", "\u20ac5", "50%", "100 km/h", "3/4", "2024-05-17",
        "12:30:45", "v1.2.3", "192.168.0.1", "+1 (555) 123-4567", "2^10 = 1024", "a1b2c3",
        "x86_64", "H2O", "CO2", "1st 2nd 3rd 4th", "MMXXIV", "\u0661\u0662\u0663 \u0967\u0968\u0969",
        "\uff11\uff12\uff13", "\u00bd \u00be \u2153", "\u00b2\u00b3", "99 bottles of beer",
    ]:
        add(s)

    # --- code ---
    for s in [
        "def add(a, b):\n    return a + b\n",
        "import numpy as np\nx = np.zeros((3, 4), dtype=np.float32)\nprint(x.shape)",
        "class Foo:\n    def __init__(self):\n        self.x = 1\n\n    def __repr__(self):\n        return f\"Foo({self.x})\"",
        "for i in range(10):\n\tif i % 2 == 0:\n\t\tprint(i)",
        "fn main() {\n    let v: Vec<u32> = (0..10).collect();\n    println!(\"{:?}\", v);\n}",
        "impl<T: Clone> From<&[T]> for Wrapper<T> {\n    fn from(s: &[T]) -> Self { Self(s.to_vec()) }\n}",
        "#[derive(Debug, Clone, PartialEq)]\npub struct Point { x: f64, y: f64 }",
        "let x = &mut *ptr; // SAFETY: checked above",
        "{\"name\": \"hearth\", \"version\": \"0.1.0\", \"tags\": [\"llm\", \"rust\"], \"ok\": true, \"n\": null}",
        "[{\"a\":1},{\"b\":[2,3]},{\"c\":{\"d\":\"e\"}}]",
        "<!DOCTYPE html>\n<html>\n  <head><title>Test</title></head>\n  <body><p class=\"x\">Hi &amp; bye</p></body>\n</html>",
        "<div id=\"main\"><span>text</span><br/></div>",
        "SELECT id, name FROM users WHERE age >= 18 ORDER BY name;",
        "#include <stdio.h>\nint main(void) { printf(\"%d\\n\", 42); return 0; }",
        "const f = async (x) => { await fetch(`/api/${x}`); };",
        "x := map[string]int{\"a\": 1}\nif v, ok := x[\"a\"]; ok {\n\tfmt.Println(v)\n}",
        "$ cargo build --release && ./target/release/hearth run --model smollm2",
        "if (a != b && c <= d || !e) { x += 1; y -= 2; z *= 3; w /= 4; }",
        "a->b; c::d; e=>f; g|>h; i..=j; k??l; m?.n; o<<=p; q>>>r",
        "// comment\n/* block\n   comment */\n# hash comment\n-- sql comment",
        "    indented four\n        indented eight\n\t\ttabbed",
        "git commit -m \"fix: handle CRLF\" && git push origin main",
        "\\n \\t \\\\ \\\" \\u00e9 \\x41",
        "regex: ^[a-zA-Z0-9._%+-]+@[a-zA-Z0-9.-]+\\.[a-zA-Z]{2,}$",
        "---\ntitle: \"YAML\"\nitems:\n  - one\n  - two\n",
        "| col1 | col2 |\n|------|------|\n| a    | b    |",
    ]:
        add(s)

    # --- URLs and emails ---
    for s in [
        "https://www.example.com/path/to/page?query=1&lang=en#section",
        "http://localhost:8080/api/v1/chat/completions",
        "ftp://files.example.org/pub/file.tar.gz",
        "Visit https://example.com. Or www.example.org!",
        "user@example.com", "first.last+tag@sub.example.co.uk", "mailto:someone@example.net?subject=Hi",
        "file:///home/user/models/model.gguf", "C:\\Users\\Name\\Documents\\file.txt",
        "/usr/local/bin/hearth --help", "@username #hashtag", "ssh://git@github.com:22/org/repo.git",
    ]:
        add(s)

    # --- CJK ---
    for s in [
        "\u4f60\u597d", "\u4f60\u597d\uff0c\u4e16\u754c\uff01", "\u6211\u559c\u6b22\u5403\u82f9\u679c\u3002",
        "\u4eca\u5929\u5929\u6c14\u5f88\u597d\uff0c\u6211\u4eec\u53bb\u516c\u56ed\u6563\u6b65\u5427\u3002",
        "\u4e2d\u534e\u4eba\u6c11\u5171\u548c\u56fd", "\u7e41\u9ad4\u4e2d\u6587\u6e2c\u8a66",
        "\u3053\u3093\u306b\u3061\u306f", "\u30ab\u30bf\u30ab\u30ca", "\u3072\u3089\u304c\u306a\u3068\u30ab\u30bf\u30ab\u30ca\u3068\u6f22\u5b57",
        "\u79c1\u306f\u5b66\u751f\u3067\u3059\u3002\u6771\u4eac\u306b\u4f4f\u3093\u3067\u3044\u307e\u3059\u3002",
        "\uff8a\uff9d\uff76\uff78\uff76\uff80\uff76\uff85", "\u30fc\u30fc\u30fc",
        "\uc548\ub155\ud558\uc138\uc694", "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8\uc785\ub2c8\ub2e4.",
        "\u1100\u1161\u11a8 (conjoining jamo)",
        "\u4f60\u597d world \u3053\u3093\u306b\u3061\u306f \uc548\ub155",
    ]:
        add(s)

    # --- other scripts ---
    for s in [
        "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645",
        "\u0627\u0644\u0644\u063a\u0629 \u0627\u0644\u0639\u0631\u0628\u064a\u0629 \u062c\u0645\u064a\u0644\u0629.",
        "\u0628\u0650\u0633\u0652\u0645\u0650 \u0627\u0644\u0644\u0651\u064e\u0647\u0650",
        "\u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd", "\u05e2\u05b4\u05d1\u05b0\u05e8\u05b4\u05d9\u05ea",
        "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e",
        "\u0939\u093f\u0928\u094d\u0926\u0940 \u092d\u093e\u0937\u093e \u0915\u094d\u0937\u0924\u094d\u0930\u093f\u092f",
        "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35\u0e04\u0e23\u0e31\u0e1a", "\u0e20\u0e32\u0e29\u0e32\u0e44\u0e17\u0e22\u0e07\u0e48\u0e32\u0e22\u0e21\u0e32\u0e01",
        "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440!", "\u0417\u0434\u0440\u0430\u0432\u0441\u0442\u0432\u0443\u0439\u0442\u0435, \u043a\u0430\u043a \u0434\u0435\u043b\u0430?",
        "\u0393\u03b5\u03b9\u03b1 \u03c3\u03bf\u03c5 \u039a\u03cc\u03c3\u03bc\u03b5", "\u0531\u0562\u0563\u0564",
        "\u10d2\u10d0\u10db\u10d0\u10e0\u10ef\u10dd\u10d1\u10d0", "\u0bb5\u0ba3\u0b95\u0bcd\u0b95\u0bae\u0bcd",
        "\u09ac\u09be\u0982\u09b2\u09be", "\u1230\u120b\u121d", "\u0f56\u0f7c\u0f51\u0f0b",
        "Gr\u00fc\u00dfe aus M\u00fcnchen", "\u00c7a va tr\u00e8s bien, \u00e0 bient\u00f4t!",
        "\u00bfQu\u00e9 tal? \u00a1Muy bien!", "\u0141\u00f3d\u017a \u017c\u00f3\u0142\u0107", "\u010ce\u0161tina \u0159\u00ed\u010dn\u00ed",
        "Vi\u1ec7t Nam", "T\u00fcrk\u00e7e \u0131\u0130", "\u00c6sir \u00f8 \u00e5 \u00fe \u00f0",
    ]:
        add(s)

    # --- emoji ---
    for s in [
        "\U0001F600", "\U0001F602\U0001F602\U0001F602", "I \u2764\ufe0f Rust \U0001F980",
        "\U0001F44B\U0001F3FB \U0001F44B\U0001F3FC \U0001F44B\U0001F3FD \U0001F44B\U0001F3FE \U0001F44B\U0001F3FF",
        "\U0001F468\u200d\U0001F469\u200d\U0001F467\u200d\U0001F466",
        "\U0001F469\U0001F3FD\u200d\U0001F4BB", "\U0001F3F3\ufe0f\u200d\U0001F308", "\U0001F9D1\u200d\U0001F91D\u200d\U0001F9D1",
        "\U0001F1FA\U0001F1F8 \U0001F1EF\U0001F1F5 \U0001F1E9\U0001F1EA \U0001F1E7\U0001F1F7",
        "\U0001F3F4\U000E0067\U000E0062\U000E0073\U000E0063\U000E0074\U000E007F",
        "1\ufe0f\u20e3 #\ufe0f\u20e3", "\u2600\ufe0f\u2601\ufe0f\u2614", "\U0001F680 launch \U0001F525\U0001F525",
        "text\U0001F600text", "\U0001FAE0\U0001FAE8",
    ]:
        add(s)

    # --- combining marks, normalization ---
    for s in [
        "e\u0301", "cafe\u0301", "caf\u00e9", "n\u0303", "A\u030a", "\u00c5", "Z\u0351\u036b\u0343\u036a\u0302\u036b\u033d\u034f\u0334\u0319\u0324\u031e\u0349\u035a\u032f\u031e\u0320\u034dalgo",
        "a\u0300\u0301\u0302\u0303\u0304", "\u1e9b\u0323", "\ufb01 ligature \ufb02", "\u2126 \u03a9", "\u212b",
        "Ame\u0301lie", "\u0915\u093f", "\u0644\u0627",
    ]:
        add(s)

    # --- math and symbols ---
    for s in [
        "\u2200x \u2208 \u211d: x\u00b2 \u2265 0", "\u222b\u2080\u00b9 f(x) dx \u2248 \u2211 \u03c0", "a \u2264 b \u2260 c \u2261 d",
        "\u221a2 \u00d7 \u221e \u00f7 \u2202", "E = mc\u00b2", "\u03b1\u03b2\u03b3\u03b4\u03b5 \u0394\u03a3\u03a9",
        "\u2190 \u2192 \u2191 \u2193 \u21d2 \u21d4", "\u00a9 \u00ae \u2122 \u00a7 \u00b6 \u2020 \u2021",
        "\u2022 bullet \u00b7 middot \u2026 ellipsis", "\u2500\u2502\u250c\u2510\u2514\u2518", "\u2605\u2606\u2665\u2666",
        "\U0001D400\U0001D401\U0001D402 \U0001D7D8\U0001D7D9", "\ufffd replacement", "\U0010FFFD private",
    ]:
        add(s)

    # --- special-token text ---
    for s in [
        "<|im_start|>user\nhi<|im_end|>",
        "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
        "<|endoftext|>", "text<|endoftext|>more", "<|im_start|>", "<|im_end|>",
        "<start_of_turn>user", "<start_of_turn>user\nHello<end_of_turn>\n<start_of_turn>model\n",
        "<end_of_turn>", "<bos>", "<eos>", "<pad>", "<unk>", "</s>", "<s>", "<s> </s>", "<s>text</s>",
        "<bos><start_of_turn>user\nhi<end_of_turn>", "< bos >", "<|im_start", "im_start|>",
        "<|unknown_special|>", "<mask>", "[INST] hi [/INST]", "<think>reasoning</think>",
        "<start_of_image>", "<image_soft_token>",
    ]:
        add(s)

    # --- long repeats ---
    for s in [
        "a" * 100, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab", "ab" * 50, "\n" * 20,
        "=" * 64, "-" * 80, "." * 30, "0" * 50, "1234567890" * 5, "\u4e00" * 20, "\U0001F600" * 10,
        "ha" * 30 + "!", "xyz " * 25, "\t" * 12 + "x", "!!!???!!!???",
    ]:
        add(s)

    # --- mixed scripts / sentences ---
    for s in [
        "The word for 'peace' in Arabic is \u0633\u0644\u0627\u0645 and in Hebrew \u05e9\u05dc\u05d5\u05dd.",
        "Tokyo (\u6771\u4eac) and Seoul (\uc11c\uc6b8) are capitals.",
        "Mixing \u0420\u0443\u0441\u0441\u043a\u0438\u0439 with English and \u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac.",
        "\u0928\u092e\u0938\u094d\u0924\u0947 means hello; \u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35 too.",
        "price: \u00a51000 / \u20ac8.50 / \u00a37 / \u20b9650 / \u20a9",
        "\u4f60\u597d\U0001F600hello\u0645\u0631\u062d\u0628\u0627123",
        "Die Stra\u00dfe hei\u00dft \u00bbHauptstra\u00dfe\u00ab.",
        "na\u00efve co\u00f6perate r\u00e9sum\u00e9 fa\u00e7ade",
        "Q: What's 12 + 30?\nA: 42.",
        "User: hi\nAssistant: Hello! How can I help you today?",
        "1. First item\n2. Second item\n3. Third item",
        "- apples\n- bananas\n  - ripe\n  - green",
        "**bold** _italic_ `code` ~~strike~~ [link](http://x.y)",
        "Once upon a time, in a land far, far away, there lived a small dragon who loved to read.",
        "In 1969, Apollo 11 landed on the Moon; Neil Armstrong said: \"That's one small step for man.\"",
        "The mitochondria is the powerhouse of the cell.",
        "Je pense, donc je suis.",
        "To be, or not to be, that is the question:",
        " The", " the", "The ", "the  ", "  the", "\nThe", ".The", "the.", "The.\n\nNext",
        "hello\u00a0world", "end with newline\n", "end with two newlines\n\n", "\n\nstart with newlines",
        "tab\tseparated\tvalues\t1\t2", "a,b,c\n1,2,3\n4,5,6\n",
        "Ll\u00e1mame ma\u00f1ana", "z\u00fcrich Z\u00dcRICH", "\u0130stanbul istanbul ISTANBUL",
    ]:
        add(s)

    return c


def tokenize(llm, text, add_special, parse_special):
    return llm.tokenize(text.encode("utf-8"), add_bos=add_special, special=parse_special)


def b64(b):
    return base64.b64encode(b).decode("ascii")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_model_args(ap)
    args = ap.parse_args()

    from llama_cpp import Llama

    strings = corpus()
    assert len(strings) == len(set(strings)), "duplicate corpus strings"
    print(f"corpus: {len(strings)} strings")
    common.write_json("tokenizer_corpus.json", {
        "about": "Tokenizer corpus for golden tests; strings written for hearth (scripts/golden/make_tokens.py).",
        "strings": strings,
    })

    for name, path in common.selected_models(args):
        common.check_model(name, path)
        llm = Llama(model_path=path, vocab_only=True, verbose=False)
        entries = []
        for text in strings:
            e = {}
            for key, add_special, parse_special in (
                ("plain", False, False),
                ("special", False, True),
                ("bos", True, False),
            ):
                ids = tokenize(llm, text, add_special, parse_special)
                e[key] = {
                    "ids": ids,
                    "d": b64(common.detokenize(llm, ids, unparse_special=False)),
                    "ds": b64(common.detokenize(llm, ids, unparse_special=True)),
                }
            entries.append(e)
        info = common.model_info(name, path)
        info.update({
            "add_bos": common.add_bos(llm),
            "bos_id": llm.token_bos(),
            "eos_id": llm.token_eos(),
            "n_vocab": llm.n_vocab(),
            "about": "entries[i] belongs to tokenizer_corpus.json strings[i]. plain: add_special=false "
            "parse_special=false; special: add_special=false parse_special=true; bos: add_special=true "
            "parse_special=false. d / ds: base64 of llama_detokenize(ids, remove_special=false, "
            "unparse_special=false / true).",
            "entries": entries,
        })
        common.write_json(f"tokens_{name}.json", info)
        del llm


if __name__ == "__main__":
    main()
