//! Chat prompts: renders the model's `tokenizer.chat_template` (a Jinja template) with minijinja,
//! sandboxed and bounded, or a built-in format when the file has none.

use minijinja::{context, Environment, Error as JinjaError, ErrorKind};

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: &str, content: &str) -> Message {
        Message {
            role: role.to_string(),
            content: content.to_string(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("the model's chat template is invalid: {0}")]
    Syntax(String),
    #[error("the model's chat template failed to render: {0}")]
    Render(String),
    #[error("the rendered prompt exceeds {MAX_OUTPUT} bytes")]
    TooLong,
}

/// Bounds on template work: no template of a real model needs more.
const FUEL: u64 = 5_000_000;
const MAX_OUTPUT: usize = 16 << 20;

/// Gemma's turn format, used when a Gemma file carries no template.
const GEMMA_TEMPLATE: &str = "{{ bos_token }}{% for message in messages %}\
{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}\
{% if role == 'system' %}{% set role = 'user' %}{% endif %}\
{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}\
{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}";

/// ChatML, the most common format, for files without a template.
const CHATML_TEMPLATE: &str = "{% for message in messages %}\
{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}\
{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// A chat template ready to render.
pub struct ChatTemplate {
    source: String,
    bos: String,
    eos: String,
}

impl ChatTemplate {
    /// The file's template, or a built-in one chosen by architecture when it has none.
    pub fn new(template: Option<&str>, arch: &str, bos: &str, eos: &str) -> ChatTemplate {
        let source = match template {
            Some(t) => t.to_string(),
            None if arch.starts_with("gemma") => GEMMA_TEMPLATE.to_string(),
            None => CHATML_TEMPLATE.to_string(),
        };
        ChatTemplate {
            source,
            bos: bos.to_string(),
            eos: eos.to_string(),
        }
    }

    /// Renders `messages`, ending with the assistant's turn opened when `add_generation_prompt`.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, ChatError> {
        let mut env = Environment::new();
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.set_fuel(Some(FUEL));
        env.add_function(
            "raise_exception",
            |msg: String| -> Result<String, JinjaError> {
                Err(JinjaError::new(ErrorKind::InvalidOperation, msg))
            },
        );
        env.add_template("chat", &self.source)
            .map_err(|e| ChatError::Syntax(e.to_string()))?;
        let tmpl = env
            .get_template("chat")
            .map_err(|e| ChatError::Syntax(e.to_string()))?;
        let msgs: Vec<_> = messages
            .iter()
            .map(|m| context! { role => m.role, content => m.content })
            .collect();
        let out = tmpl
            .render(context! {
                messages => msgs,
                add_generation_prompt => add_generation_prompt,
                bos_token => self.bos,
                eos_token => self.eos,
            })
            .map_err(|e| ChatError::Render(e.to_string()))?;
        if out.len() > MAX_OUTPUT {
            return Err(ChatError::TooLong);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMOL: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn renders_smollm_template() {
        let t = ChatTemplate::new(Some(SMOL), "llama", "<|im_start|>", "<|im_end|>");
        let out = t.render(&[Message::new("user", "Hi")], true).unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn gemma_builtin() {
        let t = ChatTemplate::new(None, "gemma3", "<bos>", "<eos>");
        let out = t
            .render(
                &[
                    Message::new("user", "Hi "),
                    Message::new("assistant", "Hello"),
                    Message::new("user", "Bye"),
                ],
                true,
            )
            .unwrap();
        assert_eq!(
            out,
            "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\nHello<end_of_turn>\n<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"
        );
    }

    #[test]
    fn bad_templates_are_errors_not_hangs() {
        let t = ChatTemplate::new(Some("{% for x in messages %}"), "llama", "", "");
        assert!(matches!(t.render(&[], true), Err(ChatError::Syntax(_))));
        let t = ChatTemplate::new(
            Some("{{ raise_exception('no system role') }}"),
            "llama",
            "",
            "",
        );
        let e = t.render(&[], true).unwrap_err().to_string();
        assert!(e.contains("no system role"), "{e}");
        let t = ChatTemplate::new(
            Some(
                "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
            ),
            "llama",
            "",
            "",
        );
        assert!(matches!(t.render(&[], true), Err(ChatError::Render(_))));
    }
}
