//! Bounds on a GraphQL document, checked before anything recurses over it.
//!
//! async-graphql's parser descends once per nesting level of a value literal
//! (`[[[…]]]`, `{a:{a:…}}`), and its depth and complexity checks expand every fragment
//! spread where it stands. A document of a few kilobytes can therefore overflow a
//! worker's stack (aborting the process) or expand exponentially (`fragment F0 {...F1
//! ...F1}`, `F1 {...F2 ...F2}`, …). So, in this order, before async-graphql parses or
//! validates:
//!
//! 1. [`nesting_depth`] scans the text once, counting brackets and braces outside
//!    strings and comments: deeper than [`MAX_NESTING`] is refused unparsed;
//! 2. the document is parsed (now safe) and [`expanded_size`] counts what validation
//!    would walk, each fragment once (memoised): more than [`MAX_EXPANDED_NODES`] is
//!    refused.
//!
//! [`DocumentLimits`] runs both as a schema extension, so they apply to `POST
//! /graphql` and to WebSocket `subscribe` alike.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::Positioned;
use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextPrepareRequest,
};
use async_graphql::parser::types::{Directive, ExecutableDocument, Selection, SelectionSet};
use async_graphql::{Request, ServerError, ServerResult};
use async_graphql_value::Value;

use crate::domain::echo::echo;

/// Longest document text accepted (bytes). The app's largest query is a few KiB.
pub const MAX_DOCUMENT_BYTES: usize = 64 * 1024;

/// Deepest nesting of `{`, `[` and `(` accepted. A query may be 10 selections deep
/// (`MAX_DEPTH` in `graphql/mod.rs`), plus its operation and a few levels of argument
/// values; async-graphql's parser uses a few KiB of stack per level.
pub const MAX_NESTING: usize = 32;

/// Most nodes (fields, arguments, directives, variable definitions, with every fragment
/// spread counted as the fragment's own size) a document may expand to. The complexity
/// limit (1000, each field at least 1) refuses anything near this anyway; this bound is
/// what keeps computing that limit cheap.
pub const MAX_EXPANDED_NODES: u64 = 2_000;

/// Why a document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocumentError {
    #[error("the document is {0} bytes; at most {MAX_DOCUMENT_BYTES} are accepted")]
    TooLong(usize),
    #[error(
        "the document nests deeper than {MAX_NESTING} (brackets and braces, or selections through fragment spreads)"
    )]
    TooDeep,
    #[error(
        "the document expands (fragments included) to more than {MAX_EXPANDED_NODES} fields, arguments and directives"
    )]
    TooLarge,
    #[error("fragment {0:?} spreads itself")]
    FragmentCycle(String),
    #[error("fragment {0:?} is not defined")]
    UnknownFragment(String),
    #[error("a block string (\"\"\") is not closed")]
    UnclosedBlockString,
}

/// The deepest nesting of `{`, `[` and `(` in `text`, outside strings, block strings and
/// comments; stops counting once past `limit` (returns `limit + 1`). One pass, no
/// recursion, no allocation: safe on any input. Unbalanced text and unterminated plain
/// strings are left for the parser to refuse; a block string that is never closed is
/// refused here (a syntax error that the parser would read as `""` and go on: counting
/// it that way could rescan the rest of the text once per quote).
pub fn nesting_depth(text: &str, limit: usize) -> Result<usize, DocumentError> {
    let bytes = text.as_bytes();
    let (mut depth, mut deepest) = (0usize, 0usize);
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'#' => {
                // A comment runs to the end of its line.
                while i < bytes.len() && bytes[i] != b'\n' && bytes[i] != b'\r' {
                    i += 1;
                }
            }
            b'"' if bytes[i..].starts_with(b"\"\"\"") => {
                // A block string ends at the next `"""` not escaped as `\"""`.
                let length =
                    block_string_end(&bytes[i + 3..]).ok_or(DocumentError::UnclosedBlockString)?;
                i += 3 + length + 2;
            }
            b'"' => {
                // A string ends at the next unescaped `"` or at the end of its line.
                i += 1;
                while i < bytes.len() && !matches!(bytes[i], b'"' | b'\n' | b'\r') {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'{' | b'[' | b'(' => {
                depth += 1;
                if depth > deepest {
                    deepest = depth;
                    if deepest > limit {
                        return Ok(deepest);
                    }
                }
            }
            b'}' | b']' | b')' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    Ok(deepest)
}

/// Where the block string whose body starts `rest` ends: the length of its body, or
/// `None` when it never ends.
fn block_string_end(rest: &[u8]) -> Option<usize> {
    let mut j = 0;
    while j < rest.len() {
        if rest[j..].starts_with(b"\\\"\"\"") {
            j += 4;
        } else if rest[j..].starts_with(b"\"\"\"") {
            return Some(j);
        } else {
            j += 1;
        }
    }
    None
}

/// What validating `doc` walks: every operation and fragment definition, each fragment
/// spread counted as the size of the fragment it names. Fragments are sized once each,
/// so this is linear in the document; a fragment that spreads itself is an error.
/// Saturates instead of overflowing.
pub fn expanded_size(doc: &ExecutableDocument) -> Result<u64, DocumentError> {
    let mut sizer = Sizer {
        doc,
        sizes: HashMap::new(),
        depth: 0,
    };
    let mut total = 0u64;
    for (_, operation) in doc.operations.iter() {
        let operation = &operation.node;
        let own = (operation.variable_definitions.len() as u64)
            .saturating_add(directive_nodes(&operation.directives));
        total = total
            .saturating_add(own)
            .saturating_add(sizer.selections(&operation.selection_set.node)?);
    }
    for name in doc.fragments.keys() {
        total = total.saturating_add(sizer.fragment(name.as_str())?);
    }
    Ok(total)
}

struct Sizer<'a> {
    doc: &'a ExecutableDocument,
    /// `None` while a fragment is being sized (a spread of it then is a cycle).
    sizes: HashMap<&'a str, Option<u64>>,
    /// Selection sets entered and not yet left, through fields, inline fragments and
    /// spreads alike: async-graphql refuses more than 32 (`limit_recursive_depth`), and
    /// so does this, before recursing further (a chain of spreads is not nested text).
    depth: usize,
}

impl<'a> Sizer<'a> {
    fn fragment(&mut self, name: &'a str) -> Result<u64, DocumentError> {
        match self.sizes.get(name) {
            Some(Some(size)) => return Ok(*size),
            Some(None) => return Err(DocumentError::FragmentCycle(name.to_owned())),
            None => {}
        }
        // Refused here, not left to validation: async-graphql's depth check walks
        // every spread before validation runs, unknown ones included.
        let Some(fragment) = self.doc.fragments.get(name) else {
            return Err(DocumentError::UnknownFragment(echo(name).into_owned()));
        };
        self.sizes.insert(name, None);
        let fragment = &fragment.node;
        let size = directive_nodes(&fragment.directives)
            .saturating_add(self.selections(&fragment.selection_set.node)?);
        self.sizes.insert(name, Some(size));
        Ok(size)
    }

    fn selections(&mut self, set: &'a SelectionSet) -> Result<u64, DocumentError> {
        if self.depth >= MAX_NESTING {
            return Err(DocumentError::TooDeep);
        }
        self.depth += 1;
        let size = self.items(set);
        self.depth -= 1;
        size
    }

    fn items(&mut self, set: &'a SelectionSet) -> Result<u64, DocumentError> {
        let mut size = 0u64;
        for selection in &set.items {
            let item = match &selection.node {
                Selection::Field(field) => {
                    let field = &field.node;
                    // Each argument with every item of its value: validation walks them
                    // all, once for every place the field is spread to.
                    let arguments: u64 = field
                        .arguments
                        .iter()
                        .map(|(_, value)| 1 + value_nodes(&value.node))
                        .sum();
                    let own = (1 + arguments).saturating_add(directive_nodes(&field.directives));
                    if field.selection_set.node.items.is_empty() {
                        own
                    } else {
                        own.saturating_add(self.selections(&field.selection_set.node)?)
                    }
                }
                // A spread or an inline fragment is a node of its own besides what it
                // holds: walking it costs as much, even when it holds nothing.
                Selection::FragmentSpread(spread) => {
                    let spread = &spread.node;
                    (1 + directive_nodes(&spread.directives))
                        .saturating_add(self.fragment(spread.fragment_name.node.as_str())?)
                }
                Selection::InlineFragment(inline) => {
                    let inline = &inline.node;
                    (1 + directive_nodes(&inline.directives))
                        .saturating_add(self.selections(&inline.selection_set.node)?)
                }
            };
            size = size.saturating_add(item);
            if size > MAX_EXPANDED_NODES {
                // Already too large: no need to size the rest.
                return Ok(size);
            }
        }
        Ok(size)
    }
}

/// The items of a value literal, nested ones included (its nesting is bounded by the
/// count of brackets already).
fn value_nodes(value: &Value) -> u64 {
    match value {
        Value::List(items) => items
            .iter()
            .fold(items.len() as u64, |n, v| n.saturating_add(value_nodes(v))),
        Value::Object(fields) => fields
            .values()
            .fold(fields.len() as u64, |n, v| n.saturating_add(value_nodes(v))),
        _ => 0,
    }
}

/// Directives, each with its arguments' values.
fn directive_nodes(directives: &[Positioned<Directive>]) -> u64 {
    directives.iter().fold(0u64, |n, d| {
        d.node
            .arguments
            .iter()
            .fold(n.saturating_add(1), |n, (_, v)| {
                n.saturating_add(1).saturating_add(value_nodes(&v.node))
            })
    })
}

/// Every check of this module on a document's text: what [`DocumentLimits`] runs, and
/// what the fuzz target `graphql_document` drives. The parsed document is returned for
/// async-graphql to use instead of parsing again.
pub fn check_document(text: &str) -> Result<Option<ExecutableDocument>, DocumentError> {
    if text.len() > MAX_DOCUMENT_BYTES {
        return Err(DocumentError::TooLong(text.len()));
    }
    if nesting_depth(text, MAX_NESTING)? > MAX_NESTING {
        return Err(DocumentError::TooDeep);
    }
    // A syntax error is async-graphql's to report, with its position.
    let Ok(doc) = async_graphql::parser::parse_query(text) else {
        return Ok(None);
    };
    if expanded_size(&doc)? > MAX_EXPANDED_NODES {
        return Err(DocumentError::TooLarge);
    }
    Ok(Some(doc))
}

/// The schema extension that runs [`check_document`] on every request, before
/// async-graphql parses and validates it (HTTP and WebSocket alike).
pub struct DocumentLimits;

impl ExtensionFactory for DocumentLimits {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(DocumentLimitsExtension)
    }
}

struct DocumentLimitsExtension;

#[async_trait::async_trait]
impl Extension for DocumentLimitsExtension {
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        mut request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        match check_document(&request.query) {
            Ok(Some(doc)) => request.set_parsed_query(doc),
            Ok(None) => {}
            Err(e) => {
                let mut error = ServerError::new(e.to_string(), None);
                error
                    .extensions
                    .get_or_insert_with(Default::default)
                    .set("code", super::Code::BadUserInput.as_str());
                return Err(error);
            }
        }
        next.run(ctx, request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nesting_depth_ok(text: &str, limit: usize) -> usize {
        nesting_depth(text, limit).expect("no unclosed block string")
    }

    #[test]
    fn nesting_is_counted_outside_strings_and_comments_only() {
        assert_eq!(nesting_depth_ok("{ a { b(x: [1, {c: 2}]) } }", 99), 5);
        assert_eq!(nesting_depth_ok(r#"{ a(s: "{{{[[[") }"#, 99), 2);
        assert_eq!(nesting_depth_ok(r#"{ a(s: "\"{{{") }"#, 99), 2);
        assert_eq!(
            nesting_depth_ok("{ a(s: \"\"\"{{{ \\\"\"\" [[[\"\"\") }", 99),
            2
        );
        assert_eq!(nesting_depth_ok("# {{{{\n{ a }", 99), 1);
        assert_eq!(
            nesting_depth_ok("}}}}{", 99),
            1,
            "unbalanced text never underflows"
        );
        assert_eq!(nesting_depth_ok("{ a(s: \"unterminated", 99), 2);
    }

    #[test]
    fn an_unclosed_block_string_is_refused_in_one_pass() {
        // To the parser `"""` unclosed is `""` and more text: it would hide what follows
        // from a count that skipped to the end.
        let hidden = format!(
            "{{ a(x: [\"\"\"\", {}1{}]) }}",
            "[".repeat(40),
            "]".repeat(40)
        );
        assert_eq!(
            check_document(&hidden).unwrap_err(),
            DocumentError::UnclosedBlockString
        );
        // Each `\"""` would start an unclosed block string again: one pass refuses them.
        let many = "\\\"\"\"\n".repeat(12_000);
        assert_eq!(
            nesting_depth(&many, 99),
            Err(DocumentError::UnclosedBlockString)
        );
        // A closed one hides its own text only.
        assert_eq!(nesting_depth_ok("{ a(s: \"\"\"[[[\"\"\") }", 99), 2);
    }

    #[test]
    fn value_literals_count_every_item() {
        let list = format!("{{ a(x: [{}]) }}", vec!["1"; 3_000].join(","));
        assert_eq!(check_document(&list).unwrap_err(), DocumentError::TooLarge);
        let small =
            async_graphql::parser::parse_query("{ a(x: [1, {b: [2, 3]}]) @d(if: [4]) }").unwrap();
        // a: 1, its argument 1 + items (2 + 1 + 2), the directive 1 + argument 1 + item 1.
        assert_eq!(expanded_size(&small).unwrap(), 1 + 1 + 5 + 3);
    }

    #[test]
    fn nesting_stops_counting_past_the_limit() {
        let deep = "[".repeat(100_000);
        assert_eq!(nesting_depth_ok(&deep, MAX_NESTING), MAX_NESTING + 1);
    }

    #[test]
    fn a_deep_value_literal_is_refused_before_parsing() {
        let deep = format!(
            "{{ stations(filter: {{operatorIds: {}1{}}}) {{ totalCount }} }}",
            "[".repeat(2000),
            "]".repeat(2000)
        );
        assert_eq!(check_document(&deep).unwrap_err(), DocumentError::TooDeep);
        let at_limit = format!(
            "query {{ a(x: {}1{}) }}",
            "[".repeat(MAX_NESTING - 2),
            "]".repeat(MAX_NESTING - 2)
        );
        assert!(check_document(&at_limit).unwrap().is_some());
    }

    fn fan_out(levels: usize) -> String {
        let mut doc = String::from("query { ...F0 }\n");
        for i in 0..levels {
            doc.push_str(&format!(
                "fragment F{i} on Query {{ ...F{n} ...F{n} }}\n",
                n = i + 1
            ));
        }
        doc.push_str(&format!("fragment F{levels} on Query {{ __typename }}\n"));
        doc
    }

    #[test]
    fn fragment_fan_out_is_sized_without_expanding() {
        let doc = async_graphql::parser::parse_query(fan_out(30)).unwrap();
        // 2^30 fields, each fragment sized once.
        assert!(expanded_size(&doc).unwrap() > MAX_EXPANDED_NODES);
        assert_eq!(
            check_document(&fan_out(30)).unwrap_err(),
            DocumentError::TooLarge
        );
        // Deeper than async-graphql's recursion limit: refused before it is sized.
        assert_eq!(
            check_document(&fan_out(40)).unwrap_err(),
            DocumentError::TooDeep
        );
        let small = async_graphql::parser::parse_query(fan_out(3)).unwrap();
        // F3 = 1 field; F2 = 2 spreads + 2 × F3 = 4; F1 = 2 + 2 × 4 = 10; F0 = 2 + 2 × 10
        // = 22; the operation = 1 spread + F0 = 23; then each fragment once.
        assert_eq!(expanded_size(&small).unwrap(), 23 + 22 + 10 + 4 + 1);
    }

    #[test]
    fn spreads_of_nothing_still_count_and_unknown_fragments_are_refused() {
        // Fragments that hold only spreads, ending in one that is not defined: nothing
        // but spreads, 4^30 of them for async-graphql's depth check to walk.
        let mut doc = String::from("query { ...F0 }\n");
        for i in 0..30 {
            let n = i + 1;
            doc.push_str(&format!(
                "fragment F{i} on Query {{ ...F{n} ...F{n} ...F{n} ...F{n} }}\n"
            ));
        }
        let missing = format!("{doc}fragment F30 on Query {{ ...Missing }}\n");
        assert!(matches!(
            check_document(&missing),
            Err(DocumentError::UnknownFragment(_))
        ));
        let empty = format!("{doc}fragment F30 on Query {{ __typename }}\n");
        assert_eq!(check_document(&empty).unwrap_err(), DocumentError::TooLarge);
    }

    #[test]
    fn a_fragment_cycle_is_an_error_not_a_loop() {
        let doc = "query { ...A } fragment A on Query { ...B } fragment B on Query { ...A }";
        assert!(matches!(
            check_document(doc),
            Err(DocumentError::FragmentCycle(_))
        ));
    }

    #[test]
    fn a_long_chain_of_spreads_is_refused_without_deep_recursion() {
        let mut doc = String::from("query { ...F0 }\n");
        for i in 0..1500 {
            doc.push_str(&format!("fragment F{i} on Query {{ ...F{} }}\n", i + 1));
        }
        doc.push_str("fragment F1500 on Query { __typename }\n");
        assert_eq!(check_document(&doc).unwrap_err(), DocumentError::TooDeep);
    }

    #[test]
    fn syntax_errors_are_left_to_the_parser() {
        assert!(check_document("query { a(").unwrap().is_none());
    }
}
