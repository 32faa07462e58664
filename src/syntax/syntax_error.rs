//! Turning a pest parse failure into a diagnostic a person can act on:
//! "expected `)`, found `loss`" with the unclosed `(` labelled, the whole
//! offending word underlined, and a hint for the usual slips (a misspelt
//! statement keyword, a keyword used as a name, a malformed number, an
//! unterminated string, an extra comma).

use super::parse::Rule;
use crate::diag::{Diagnostic, FileId, Span};
use pest::error::{ErrorVariant, InputLocation};

/// Words the grammar reserves: never names.
const KEYWORDS: &[&str] = &[
    "model", "block", "train", "use", "if", "else", "recur", "repeat", "in", "from", "as", "true",
    "false", "and", "or", "not",
];

/// Statement keywords of a model body, for "did you mean" on a misspelt one.
const STATEMENTS: &[&str] = &["input", "labels", "param", "output"];

/// Builds the diagnostic for a failed parse of `text`. `attempts` re-runs the
/// parse with pest's detailed tracking, which knows the literal tokens (`)`,
/// `}`, `=`) the rule-level error leaves out: it gives the position where
/// they were expected and the tokens as text.
pub(super) fn syntax_error(
    file: FileId,
    text: &str,
    e: pest::error::Error<Rule>,
    attempts: impl FnOnce() -> Option<(usize, Vec<String>)>,
) -> Diagnostic {
    let rule_pos = match e.location {
        InputLocation::Pos(p) | InputLocation::Span((p, _)) => p,
    }
    .min(text.len());
    let positives = match &e.variant {
        ErrorVariant::ParsingError { positives, .. } => positives.clone(),
        ErrorVariant::CustomError { message } => {
            let end = token_end(text, rule_pos);
            return Diagnostic::error(Span::new(file, rule_pos, end), message.clone())
                .label("syntax error");
        }
    };

    // A malformed number (`0.5.1`, `12abc`), an unclosed string or a
    // character outside the language says so directly.
    if let Some(d) = bad_number(file, text, rule_pos) {
        return d;
    }
    if text[rule_pos..].starts_with('"')
        && !text[rule_pos + 1..]
            .lines()
            .next()
            .unwrap_or("")
            .contains('"')
    {
        let end = rule_pos + text[rule_pos..].find('\n').unwrap_or(text.len() - rule_pos);
        return Diagnostic::error(
            Span::new(file, rule_pos, end),
            "this string is never closed",
        )
        .label("unclosed string")
        .help("end the string with `\"` on the same line");
    }
    if let Found::Char(c) = Found::at(text, rule_pos)
        && !LANGUAGE_CHARS.contains(c)
        && !c.is_whitespace()
    {
        let end = token_end(text, rule_pos);
        return Diagnostic::error(
            Span::new(file, rule_pos, end),
            format!("unexpected character {}", Found::Char(c).describe()),
        )
        .label("not part of the .nn language");
    }

    // What the grammar wanted, in words, from the rules it tried.
    let mut wanted: Vec<&'static str> = Vec::new();
    let strong: Vec<&'static str> = positives
        .iter()
        .filter_map(|r| rule_name(*r))
        .filter(|(_, weak)| !weak)
        .map(|(n, _)| n)
        .collect();
    if strong.is_empty() {
        wanted.extend(
            positives
                .iter()
                .filter_map(|r| rule_name(*r))
                .map(|(n, _)| n),
        );
    } else {
        wanted.extend(strong);
    }
    let mut keywords: Vec<&'static str> = positives.iter().filter_map(|r| keyword(*r)).collect();
    if wanted.contains(&"a statement") {
        keywords.extend(STATEMENTS);
    }

    // The literal tokens from the detailed attempts. When they got further
    // than the rules (`input x [B, 4]` wants `:` after `x`), point there,
    // unless the word at the rules' position is a misspelt keyword.
    let mut pos = rule_pos;
    let found_here = Found::at(text, rule_pos);
    let misspelt = match &found_here {
        Found::Word(w) => suggest(w, &keywords),
        _ => None,
    };
    if let Some((at, tokens)) = attempts() {
        let (punct, open) = punctuation(&tokens);
        let at = skip_space(text, at.min(text.len()));
        if at == rule_pos {
            wanted.extend(punct);
            if open && wanted.is_empty() {
                wanted.push("`(`");
            }
        } else if at > rule_pos && misspelt.is_none() && (open || !punct.is_empty()) {
            pos = at;
            wanted = punct;
            if open && wanted.is_empty() {
                wanted.push("`(`");
            }
            keywords.clear();
        }
    }
    wanted.sort_by_key(|w| ORDER.iter().position(|o| o == w).unwrap_or(ORDER.len()));
    wanted.dedup();
    // A statement starts with a name; saying both is noise.
    let named_wanted = wanted.contains(&"a name") || wanted.contains(&"a statement");
    if wanted.contains(&"a statement") {
        wanted.retain(|w| *w != "a name");
    }

    let found = Found::at(text, pos);
    let found_text = found.describe();
    let message = match (wanted.as_slice(), &found) {
        ([], Found::End) => "the file ends too early".to_string(),
        ([], _) => format!("unexpected {found_text}"),
        ([one], _) => format!("expected {one}, found {found_text}"),
        ([rest @ .., last], _) => {
            format!("expected {} or {last}, found {found_text}", rest.join(", "))
        }
    };
    let label = match &found {
        Found::End => "the file ends here",
        _ => "unexpected here",
    };
    let mut d = Diagnostic::error(Span::new(file, pos, found.end(text, pos)), message).label(label);

    // The bracket a missing closer belongs to.
    if let Some((open, at)) = unclosed_bracket(text, pos)
        && wanted.contains(&closer(open))
    {
        d = d.with(
            Span::new(file, at, at + 1),
            format!("this `{open}` is never closed"),
        );
    }

    if let Found::Word(w) = &found {
        let w = w.as_str();
        if KEYWORDS.contains(&w) && named_wanted {
            d = d.help(format!("`{w}` is a keyword; choose another name"));
        } else if let Some(s) = suggest(w, &keywords) {
            d = d.help(format!("did you mean `{s}`?"));
        }
    }
    match found {
        Found::Char(',') if text[..pos].trim_end().ends_with(',') => {
            d = d.help("remove the extra `,`");
        }
        Found::Char(')' | ']') if text[..pos].trim_end().ends_with(',') => {
            d = d.help("remove the trailing comma");
        }
        Found::Char('=') => {
            if let Some((start, w)) = word_before(text, pos)
                && first_on_line(text, start)
            {
                d = d.help(format!(
                    "the line before is incomplete, so `{w}` was read as its continuation; is a value missing there?"
                ));
            }
        }
        Found::Char(c @ (')' | ']' | '}')) if unmatched_closer(text, pos) => {
            d = d.help(format!("this `{c}` has no opening bracket; remove it"));
        }
        _ => {}
    }
    d
}

/// Characters that can appear outside strings and comments.
const LANGUAGE_CHARS: &str = "_#\"()[]{},:;.=|><!+-*/@";

/// The punctuation among expected tokens, and whether a `(` was among them
/// (almost anything can be followed by a call's `(`: only worth saying when
/// nothing else fits).
fn punctuation(tokens: &[String]) -> (Vec<&'static str>, bool) {
    let mut out = Vec::new();
    let mut open = false;
    for t in tokens {
        if t == "(" {
            open = true;
        } else if let Some(p) = PUNCTUATION.iter().find(|p| p[1..p.len() - 1] == *t) {
            out.push(*p);
        }
    }
    (out, open)
}

/// Skips whitespace, `;` and comments.
fn skip_space(text: &str, mut pos: usize) -> usize {
    loop {
        let rest = &text[pos..];
        let trimmed = rest.trim_start_matches([' ', '\t', '\r', '\n', ';']);
        pos += rest.len() - trimmed.len();
        if trimmed.starts_with('#') {
            pos += trimmed.find('\n').unwrap_or(trimmed.len());
        } else {
            return pos;
        }
    }
}

/// The word a keyword rule matches.
fn keyword(r: Rule) -> Option<&'static str> {
    Some(match r {
        Rule::kw_model => "model",
        Rule::kw_block => "block",
        Rule::kw_train => "train",
        Rule::kw_use => "use",
        Rule::kw_if => "if",
        Rule::kw_else => "else",
        Rule::kw_recur => "recur",
        Rule::kw_repeat => "repeat",
        Rule::kw_in => "in",
        Rule::kw_from => "from",
        Rule::kw_as => "as",
        Rule::kw_input => "input",
        Rule::kw_labels => "labels",
        Rule::kw_param => "param",
        Rule::kw_output => "output",
        Rule::kw_classes => "classes",
        Rule::kw_init => "init",
        Rule::kw_stateful | Rule::stateful => "stateful",
        Rule::kw_truncate | Rule::truncate => "truncate",
        _ => return None,
    })
}

/// Literal tokens worth naming in "expected ...".
const PUNCTUATION: &[&str] = &["`)`", "`]`", "`}`", "`,`", "`=`", "`:`", "`{`", "`..`"];

/// The order expectations are listed in.
const ORDER: &[&str] = &[
    "`)`",
    "`]`",
    "`}`",
    "`,`",
    "`=`",
    "`:`",
    "`{`",
    "`(`",
    "`..`",
    "a name",
    "a number",
    "a string",
    "an expression",
    "an argument",
    "a statement",
    "a setting like `batch 64`",
    "an operator",
];

/// What is at the error position.
enum Found {
    End,
    Word(String),
    Char(char),
    Op(&'static str),
}

impl Found {
    fn at(text: &str, pos: usize) -> Found {
        let rest = &text[pos..];
        let Some(c) = rest.chars().next() else {
            return Found::End;
        };
        if c.is_alphanumeric() || c == '_' {
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            return Found::Word(rest[..end].to_string());
        }
        for op in ["|>", "==", "!=", "<=", ">=", ".."] {
            if rest.starts_with(op) {
                return Found::Op(op);
            }
        }
        Found::Char(c)
    }

    fn describe(&self) -> String {
        match self {
            Found::End => "the end of the file".into(),
            Found::Word(w) if KEYWORDS.contains(&w.as_str()) => format!("keyword `{w}`"),
            Found::Word(w) => format!("`{w}`"),
            Found::Op(op) => format!("`{op}`"),
            Found::Char('\n') => "the end of the line".into(),
            Found::Char(c) if c.is_control() => format!("the character {c:?}"),
            Found::Char(c) => format!("`{c}`"),
        }
    }

    fn end(&self, text: &str, pos: usize) -> usize {
        match self {
            Found::End => pos,
            Found::Word(w) => pos + w.len(),
            Found::Op(op) => pos + op.len(),
            Found::Char(_) => token_end(text, pos),
        }
    }
}

/// The end of the character at `pos` (or `pos` at the end of the text).
fn token_end(text: &str, pos: usize) -> usize {
    text[pos..]
        .chars()
        .next()
        .map_or(pos, |c| pos + c.len_utf8())
}

/// What a rule is called in "expected ...", and whether it is only a weak
/// expectation (an optional continuation, named only when nothing else is).
fn rule_name(r: Rule) -> Option<(&'static str, bool)> {
    let strong = |s| Some((s, false));
    let weak = |s| Some((s, true));
    match r {
        Rule::expr | Rule::term | Rule::primary | Rule::recur_init => strong("an expression"),
        Rule::ident | Rule::targets | Rule::path | Rule::path_part => strong("a name"),
        Rule::int | Rule::float | Rule::range_end => strong("a number"),
        Rule::string => strong("a string"),
        Rule::list => strong("a shape like `[B, 784]`"),
        Rule::body => strong("`{`"),
        Rule::pipe
        | Rule::add
        | Rule::sub
        | Rule::mul
        | Rule::div
        | Rule::matmul
        | Rule::eq
        | Rule::ne
        | Rule::lt
        | Rule::le
        | Rule::gt
        | Rule::ge
        | Rule::and
        | Rule::or
        | Rule::kw_and
        | Rule::kw_or => strong("an operator"),
        Rule::use_decl
        | Rule::block_def
        | Rule::model_def
        | Rule::train_def
        | Rule::kw_model
        | Rule::kw_block
        | Rule::kw_train
        | Rule::kw_use => strong("`model`, `block`, `train` or `use`"),
        Rule::input_decl
        | Rule::labels_decl
        | Rule::param_decl
        | Rule::output_decl
        | Rule::assign
        | Rule::kw_input
        | Rule::kw_labels
        | Rule::kw_param
        | Rule::kw_output => strong("a statement"),
        Rule::setting => strong("a setting like `batch 64`"),
        Rule::kw_in => strong("`in`"),
        Rule::kw_from => strong("`from`"),
        Rule::range => strong("a range like `0..10`"),
        Rule::arg => strong("an argument"),
        Rule::decl_item => strong("a declaration like `x: [B, 784]`"),
        Rule::param_item => strong("a parameter like `W: [784, 128]`"),
        Rule::block_param | Rule::block_params => strong("a parameter name"),
        Rule::block_inputs => strong("an input name"),
        Rule::EOI => weak("the end of the file"),
        Rule::kw_else => weak("`else`"),
        Rule::kw_classes => weak("`classes`"),
        Rule::kw_init => weak("`init`"),
        Rule::recur_option | Rule::stateful | Rule::truncate => weak("`stateful` or `truncate`"),
        _ => None,
    }
}

/// `0.5.1` or `12abc`: a word that starts like a number but is not one.
fn bad_number(file: FileId, text: &str, pos: usize) -> Option<Diagnostic> {
    let is_part = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '.';
    let start = text[..pos]
        .char_indices()
        .rev()
        .take_while(|&(_, c)| is_part(c))
        .last()
        .map_or(pos, |(i, _)| i);
    let end = pos
        + text[pos..]
            .find(|c: char| !is_part(c))
            .unwrap_or(text.len() - pos);
    let word = &text[start..end];
    if !word.starts_with(|c: char| c.is_ascii_digit()) || word.contains("..") || is_number(word) {
        return None;
    }
    Some(
        Diagnostic::error(
            Span::new(file, start, start + word.len()),
            format!("`{word}` is not a number"),
        )
        .label("invalid number")
        .help("numbers are written like 3, 0.5 or 1e-3; a name cannot start with a digit"),
    )
}

fn closer(open: char) -> &'static str {
    match open {
        '(' => "`)`",
        '[' => "`]`",
        _ => "`}`",
    }
}

/// Open brackets before `pos`, innermost last, with their byte offsets
/// (strings and comments skipped; a closer without an opener is ignored).
fn brackets(text: &str, pos: usize) -> Vec<(char, usize)> {
    let mut stack = Vec::new();
    let mut in_string = false;
    let mut in_comment = false;
    let mut escaped = false;
    for (i, c) in text[..pos].char_indices() {
        if in_comment {
            in_comment = c != '\n';
        } else if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' || c == '\n' {
                in_string = false;
            }
        } else {
            match c {
                '#' => in_comment = true,
                '"' => in_string = true,
                '(' | '[' | '{' => stack.push((c, i)),
                ')' | ']' | '}' => {
                    stack.pop();
                }
                _ => {}
            }
        }
    }
    stack
}

/// The innermost bracket open at `pos` that is never closed in the whole
/// file (a closer of another kind, or the end of the file, comes first).
fn unclosed_bracket(text: &str, pos: usize) -> Option<(char, usize)> {
    let (open, at) = brackets(text, pos).pop()?;
    let mut depth = 0usize;
    let mut in_string = false;
    let mut in_comment = false;
    let mut escaped = false;
    for c in text[at..].chars() {
        if in_comment {
            in_comment = c != '\n';
        } else if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' || c == '\n' {
                in_string = false;
            }
        } else {
            match c {
                '#' => in_comment = true,
                '"' => in_string = true,
                '(' | '[' | '{' => depth += 1,
                ')' | ']' | '}' => {
                    depth -= 1;
                    if depth == 0 {
                        // Closed by its own kind of bracket, or mismatched.
                        return (closer(open)[1..2] != *c.encode_utf8(&mut [0; 4]))
                            .then_some((open, at));
                    }
                }
                _ => {}
            }
        }
    }
    Some((open, at))
}

/// Whether the closer at `pos` has no opener before it.
fn unmatched_closer(text: &str, pos: usize) -> bool {
    brackets(text, pos).is_empty()
}

/// Whether only whitespace precedes `pos` on its line.
fn first_on_line(text: &str, pos: usize) -> bool {
    text[..pos]
        .rsplit('\n')
        .next()
        .is_some_and(|l| l.trim().is_empty())
}

/// The name just before `pos` (whitespace between allowed), with its offset.
fn word_before(text: &str, pos: usize) -> Option<(usize, &str)> {
    let head = text[..pos].trim_end();
    let start = head
        .char_indices()
        .rev()
        .take_while(|&(_, c)| c.is_alphanumeric() || c == '_')
        .last()
        .map(|(i, _)| i)?;
    let w = &head[start..];
    (!w.starts_with(|c: char| c.is_ascii_digit())).then_some((start, w))
}

/// The closest of `known` to a misspelt word: one edit away (two for long
/// words), and never the word itself.
fn suggest(word: &str, known: &[&'static str]) -> Option<&'static str> {
    let limit = if word.len() >= 5 { 2 } else { 1 };
    known
        .iter()
        .map(|k| (strsim::damerau_levenshtein(word, k), *k))
        .filter(|(d, k)| *d >= 1 && *d <= limit && word.len() + 1 >= k.len().min(3))
        .min()
        .map(|(_, k)| k)
}

/// The grammar's numbers: `12`, `0.5`, `1e-3`, `2.5E+4`.
fn is_number(w: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let (mantissa, exponent) = match w.find(['e', 'E']) {
        Some(i) => (&w[..i], Some(&w[i + 1..])),
        None => (w, None),
    };
    let mantissa_ok = match mantissa.split_once('.') {
        Some((a, b)) => digits(a) && digits(b),
        None => digits(mantissa),
    };
    let exponent_ok = exponent.is_none_or(|e| digits(e.strip_prefix(['+', '-']).unwrap_or(e)));
    mantissa_ok && exponent_ok
}
