//! A GraphQL document as the app's API takes it, before async-graphql: the size and
//! nesting bounds, the parse, and the expanded size (api::graphql::limits). Nothing may
//! panic, recurse without bound, or take long, whatever the text; and a document the
//! checks let through must not nest deeper than they said (the count of brackets and
//! the parser must agree on what is a string).
#![no_main]

use async_graphql::Positioned;
use async_graphql::parser::types::{Directive, ExecutableDocument, Selection, SelectionSet};
use async_graphql_value::Value;
use jucr::api::graphql::limits::{MAX_NESTING, check_document};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(Some(doc)) = check_document(text) {
        let deepest = document_depth(&doc);
        assert!(
            deepest <= MAX_NESTING,
            "{deepest} levels got through: {text:?}"
        );
    }
});

fn document_depth(doc: &ExecutableDocument) -> usize {
    let operations = doc.operations.iter().map(|(_, op)| {
        let op = &op.node;
        let defaults = op.variable_definitions.iter().map(|v| {
            v.node
                .default_value
                .as_ref()
                .map_or(0, |d| value_depth(&d.node.clone().into_value()))
        });
        defaults
            .chain([directives_depth(&op.directives), set_depth(&op.selection_set)])
            .max()
            .unwrap_or(0)
    });
    let fragments = doc.fragments.values().map(|f| {
        directives_depth(&f.node.directives).max(set_depth(&f.node.selection_set))
    });
    operations.chain(fragments).max().unwrap_or(0)
}

/// Brackets and braces around a selection set's contents, as the text counts them.
fn set_depth(set: &Positioned<SelectionSet>) -> usize {
    1 + set
        .node
        .items
        .iter()
        .map(|s| match &s.node {
            Selection::Field(f) => {
                let f = &f.node;
                let arguments = f.arguments.iter().map(|(_, v)| 1 + value_depth(&v.node));
                let children = if f.selection_set.node.items.is_empty() {
                    0
                } else {
                    set_depth(&f.selection_set)
                };
                arguments
                    .chain([directives_depth(&f.directives), children])
                    .max()
                    .unwrap_or(0)
            }
            Selection::FragmentSpread(s) => directives_depth(&s.node.directives),
            Selection::InlineFragment(i) => {
                directives_depth(&i.node.directives).max(set_depth(&i.node.selection_set))
            }
        })
        .max()
        .unwrap_or(0)
}

fn directives_depth(directives: &[Positioned<Directive>]) -> usize {
    directives
        .iter()
        .flat_map(|d| d.node.arguments.iter())
        .map(|(_, v)| 1 + value_depth(&v.node))
        .max()
        .unwrap_or(0)
}

fn value_depth(value: &Value) -> usize {
    match value {
        Value::List(items) => 1 + items.iter().map(value_depth).max().unwrap_or(0),
        Value::Object(fields) => 1 + fields.values().map(value_depth).max().unwrap_or(0),
        _ => 0,
    }
}
