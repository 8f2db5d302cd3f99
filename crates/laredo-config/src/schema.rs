//! The configuration reference as data: every key, its type, whether it is required,
//! and what docs/configuration.md says about it.
//!
//! One tree, three readers: [`crate::validate`] checks a merged tree against it
//! (unknown keys, types, required keys, cross-key rules), [`crate::env`] maps
//! `LAREDO_*` names to keys with it, and [`crate::reference`] renders
//! docs/configuration.md from it (`cargo xtask codegen`).
//!
//! Defaults are not written here: the reference reads them from the typed structs'
//! `Default` impls, so the documented default is the one the code applies. A node whose
//! parent's defaults do not contain it (a list item, a map value, an `Option` field, a
//! `type` variant) names its struct in `defaults`. Only what the code of this crate
//! does not know is written as text ([`Field::default_is`]): a computed default, one
//! kept by another crate, or a key that is required only in some cases.
//!
//! The tree and the typed structs describe the same keys; `schema/tests.rs` checks it
//! both ways with a configuration that sets every field of every struct.

mod server;
mod source;
mod table;
#[cfg(test)]
mod tests;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::{ConfigError, KeyPath};

/// Checks an object after its keys were checked and coerced.
pub(crate) type Check = fn(&Map<String, Value>, &KeyPath, &mut Vec<ConfigError>);

/// The serialized `Default` of the typed struct behind a node.
pub(crate) type Defaults = fn() -> Value;

/// A node of the schema.
pub(crate) enum Node {
    /// Fixed keys.
    Object(&'static Obj),
    /// Keys chosen by the user (source ids, header names); every value is `value`.
    Map(&'static Node),
    /// A list of `item`.
    List(&'static Node),
    /// An object whose keys depend on its `type`.
    Tagged(&'static Tagged),
    /// A leaf.
    Scalar(Kind),
    /// Anything (`user_meta`).
    Any,
}

pub(crate) struct Obj {
    pub(crate) fields: &'static [Field],
    pub(crate) check: Option<Check>,
    /// The typed struct's defaults, when the parent's do not contain them.
    pub(crate) defaults: Option<Defaults>,
}

impl Obj {
    const fn new(fields: &'static [Field]) -> Self {
        Self {
            fields,
            check: None,
            defaults: None,
        }
    }

    const fn checked(mut self, check: Check) -> Self {
        self.check = Some(check);
        self
    }

    const fn defaults(mut self, defaults: Defaults) -> Self {
        self.defaults = Some(defaults);
        self
    }
}

pub(crate) struct Field {
    pub(crate) name: &'static str,
    /// Other accepted spellings (`config` for `store_config`).
    pub(crate) aliases: &'static [&'static str],
    pub(crate) node: Node,
    pub(crate) required: bool,
    pub(crate) doc: Doc,
}

/// What the reference says about a key besides its name, type and default.
#[derive(Clone, Copy)]
pub(crate) struct Doc {
    /// The meaning: Markdown, one paragraph. An object's own row is shown only when it
    /// has one; a scalar always needs one.
    pub(crate) text: &'static str,
    /// The type as the reference writes it, when the kind says too little
    /// (`IP address` for a string checked as one).
    pub(crate) shown_type: Option<&'static str>,
    /// The default as text, for what the typed defaults cannot say.
    pub(crate) default: Option<&'static str>,
    /// How the reference writes a key of a map (`<id>`, `"schema.table"`).
    pub(crate) map_key: &'static str,
    /// Documented by a table of its own: one row here, its keys there.
    pub(crate) own_table: bool,
}

const NO_DOC: Doc = Doc {
    text: "",
    shown_type: None,
    default: None,
    map_key: "<key>",
    own_table: false,
};

impl Field {
    /// The reference's text for the key.
    const fn doc(mut self, text: &'static str) -> Self {
        self.doc.text = text;
        self
    }

    /// The type as the reference writes it.
    const fn shown_as(mut self, shown_type: &'static str) -> Self {
        self.doc.shown_type = Some(shown_type);
        self
    }

    /// The default as text, where the typed struct's `Default` does not say it: a
    /// computed default (`{slot_name}_pub`), a default applied by another crate, or a
    /// key that a cross-key rule requires (`required for local`).
    const fn default_is(mut self, text: &'static str) -> Self {
        self.doc.default = Some(text);
        self
    }

    /// How the reference writes the keys of this map.
    const fn keyed_by(mut self, label: &'static str) -> Self {
        self.doc.map_key = label;
        self
    }

    /// The keys of this object get a table of their own in the reference.
    const fn own_table(mut self) -> Self {
        self.doc.own_table = true;
        self
    }
}

pub(crate) struct Tagged {
    /// `source`, `target`, `filter`, `transform`: used in "unknown target type".
    pub(crate) what: &'static str,
    /// The reference's text for the `type` key.
    pub(crate) doc: &'static str,
    pub(crate) common: &'static [Field],
    pub(crate) variants: &'static [Variant],
    /// Defaults of the common keys.
    pub(crate) defaults: Option<Defaults>,
}

pub(crate) struct Variant {
    /// The canonical name first, then aliases.
    pub(crate) names: &'static [&'static str],
    /// What this type is, for the reference.
    pub(crate) doc: &'static str,
    pub(crate) fields: &'static [Field],
    pub(crate) check: Option<Check>,
    /// Defaults of the variant's own keys.
    pub(crate) defaults: Option<Defaults>,
}

/// Leaf kinds.
#[derive(Clone, Copy)]
pub(crate) enum Kind {
    Str,
    /// A string that must not be empty.
    NonEmptyStr,
    Bool,
    Int {
        min: i64,
        max: i64,
    },
    Float {
        min: f64,
    },
    /// A duration; `nonzero` rejects `0s`.
    Duration {
        nonzero: bool,
    },
    /// A duration or `every <duration>`.
    Schedule,
    Enum(&'static [&'static str]),
    /// A list of strings; `non_empty` rejects `[]`.
    StrList {
        non_empty: bool,
    },
    /// A string or a non-empty list of strings.
    StrOrList,
    /// Any scalar (string, number, boolean).
    AnyScalar,
    /// A regular expression.
    Regex,
}

const fn opt(name: &'static str, node: Node) -> Field {
    Field {
        name,
        aliases: &[],
        node,
        required: false,
        doc: NO_DOC,
    }
}

const fn req(name: &'static str, node: Node) -> Field {
    Field {
        name,
        aliases: &[],
        node,
        required: true,
        doc: NO_DOC,
    }
}

const fn aliased(name: &'static str, aliases: &'static [&'static str], node: Node) -> Field {
    Field {
        name,
        aliases,
        node,
        required: false,
        doc: NO_DOC,
    }
}

/// Every key of the schema by its id: the key path without list indexes and map keys,
/// with `type` variants as `(name)` (`tables.targets.(http-sync).headers`); the
/// variants themselves included.
pub(crate) fn key_ids() -> Vec<String> {
    let mut ids = Vec::new();
    node_key_ids(&ROOT, "", &mut ids);
    ids
}

fn node_key_ids(node: &Node, id: &str, out: &mut Vec<String>) {
    match node {
        Node::Object(obj) => field_key_ids(obj.fields, id, out),
        Node::Map(item) | Node::List(item) => node_key_ids(item, id, out),
        Node::Tagged(tagged) => {
            field_key_ids(tagged.common, id, out);
            for variant in tagged.variants {
                let variant_id = join(id, &variant_id(variant));
                field_key_ids(variant.fields, &variant_id, out);
                out.push(variant_id);
            }
        }
        Node::Scalar(_) | Node::Any => {}
    }
}

fn field_key_ids(fields: &[Field], id: &str, out: &mut Vec<String>) {
    for field in fields {
        let field_id = join(id, field.name);
        node_key_ids(&field.node, &field_id, out);
        out.push(field_id);
    }
}

/// A variant's part of a key id: `(http-sync)`.
pub(crate) fn variant_id(variant: &Variant) -> String {
    format!("({})", variant.names[0])
}

/// `prefix.key`, or `key` at the root.
pub(crate) fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

/// The serialized `Default` of `T`, for [`Obj::defaults`] and its kin.
fn defaults_of<T: Default + Serialize>() -> Value {
    serde_json::to_value(T::default()).unwrap_or(Value::Null)
}

const STR: Node = Node::Scalar(Kind::Str);
const NON_EMPTY_STR: Node = Node::Scalar(Kind::NonEmptyStr);
const BOOL: Node = Node::Scalar(Kind::Bool);
const PORT: Node = Node::Scalar(Kind::Int {
    min: 0,
    max: 65_535,
});
const COUNT: Node = Node::Scalar(Kind::Int {
    min: 0,
    max: u32::MAX as i64,
});
const POSITIVE: Node = Node::Scalar(Kind::Int {
    min: 1,
    max: u32::MAX as i64,
});
const DURATION: Node = Node::Scalar(Kind::Duration { nonzero: false });
const POSITIVE_DURATION: Node = Node::Scalar(Kind::Duration { nonzero: true });
const FIELDS: Node = Node::Scalar(Kind::StrList { non_empty: true });
const STRINGS: Node = Node::Scalar(Kind::StrList { non_empty: false });
const STORE_KIND: Node = Node::Scalar(Kind::Enum(&["local", "s3"]));
const FORMATS: Node = Node::Scalar(Kind::StrOrList);

/// `store_config` of archive sources, fan-out archives and snapshots, and a dead
/// letter's `config`.
const STORE_LOCATION: Node = Node::Object(&Obj::new(&[
    aliased("path", &["directory"], STR)
        .default_is("required for `local`")
        .doc("Local directory."),
    opt("bucket", STR)
        .default_is("required for `s3`")
        .doc("S3 bucket; ambient AWS credentials."),
    opt("prefix", STR).doc("S3 key prefix."),
    opt("region", STR).doc("AWS region."),
]));

/// The whole configuration.
pub(crate) const ROOT: Node = Node::Object(
    &Obj::new(&[
        opt("insecure", BOOL).doc(
            "Serve the gRPC ports without authentication when no token is configured. \
             Without any token and without `insecure = true` the server refuses to \
             start. Every start in insecure mode logs a WARN. For a laptop or the demo \
             only.",
        ),
        opt("sources", Node::Map(&source::SOURCE)).keyed_by("<id>"),
        opt("tables", Node::List(&table::TABLE)),
        opt("snapshot", server::SNAPSHOT),
        opt("grpc", server::GRPC),
        opt("fanout", server::FANOUT),
        opt("health", server::HEALTH),
        opt("observability", server::OBSERVABILITY),
        opt("shutdown", server::SHUTDOWN),
    ])
    .checked(crate::checks::root)
    .defaults(defaults_of::<crate::LaredoConfig>),
);
