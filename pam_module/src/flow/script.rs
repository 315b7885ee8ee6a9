//! A scripted conversation for the flow's tests: each prompt and message must come in
//! the expected order with the expected text, and prompts get the scripted answers.

use std::collections::VecDeque;

use zeroize::Zeroizing;

use crate::conversation::{ConvError, Conversation};

pub(super) type Answer = Box<dyn FnOnce(&[String]) -> Option<String>>;

/// One expected call: its kind, text it must contain, and for prompts the answer,
/// computed from everything shown so far.
pub(super) enum Step {
    Hidden(&'static str, Answer),
    Visible(&'static str, Answer),
    Info(&'static str),
    Error(&'static str),
    Fail,
}

/// A conversation that checks every prompt and message in order, and on drop that
/// none is left over.
pub(super) struct Script {
    steps: VecDeque<Step>,
    shown: Vec<String>,
}

impl Script {
    pub(super) fn new(steps: Vec<Step>) -> Self {
        Self {
            steps: steps.into(),
            shown: Vec::new(),
        }
    }
    fn next(&mut self, kind: &str, text: &str) -> Step {
        self.shown.push(text.to_string());
        self.steps
            .pop_front()
            .unwrap_or_else(|| panic!("unexpected {kind}: {text:?}"))
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            assert!(
                self.steps.is_empty(),
                "{} expected steps never happened",
                self.steps.len()
            );
        }
    }
}

impl Conversation for Script {
    fn ask_hidden(&mut self, prompt: &str) -> Result<Option<Zeroizing<String>>, ConvError> {
        match self.next("hidden prompt", prompt) {
            Step::Hidden(p, answer) => {
                assert_eq!(prompt, p);
                Ok(answer(&self.shown).map(Zeroizing::new))
            }
            Step::Fail => Err(ConvError("hung up".into())),
            _ => panic!("unexpected hidden prompt {prompt:?}"),
        }
    }
    fn ask_visible(&mut self, prompt: &str) -> Result<Option<String>, ConvError> {
        match self.next("visible prompt", prompt) {
            Step::Visible(p, answer) => {
                assert!(prompt.contains(p), "{prompt:?} lacks {p:?}");
                Ok(answer(&self.shown))
            }
            _ => panic!("unexpected visible prompt {prompt:?}"),
        }
    }
    fn info(&mut self, text: &str) -> Result<(), ConvError> {
        match self.next("info", text) {
            Step::Info(want) => assert!(text.contains(want), "info {text:?} lacks {want:?}"),
            _ => panic!("unexpected info {text:?}"),
        }
        Ok(())
    }
    fn error(&mut self, text: &str) -> Result<(), ConvError> {
        match self.next("error", text) {
            Step::Error(want) => assert!(text.contains(want), "error {text:?} lacks {want:?}"),
            _ => panic!("unexpected error {text:?}"),
        }
        Ok(())
    }
}

pub(super) fn say(s: &str) -> Answer {
    let s = s.to_string();
    Box::new(move |_| Some(s))
}

pub(super) fn eof() -> Answer {
    Box::new(|_| None)
}
