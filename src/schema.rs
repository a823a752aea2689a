//! What a component exports, described from its WIT types: the function list a template
//! checks tasks against, and a JSON Schema per exported function's parameters and result,
//! which `inspect` prints and a tool host (the MCP server) offers as a tool's input schema.

use crate::entry::{ExportedFunc, Exports, GuestKind, ValKind};
use wasmtime::Engine;
use wasmtime::component::Component;
use wasmtime::component::types::{ComponentFunc, ComponentItem, Type};

/// The `wasi:cli/run` interface a command exports (any 0.2 version).
const CLI_RUN: &str = "wasi:cli/run@";

/// One exported function of a component: its name as `--invoke` takes it (`name` for a
/// function exported at the root, `interface#name` for one in an exported interface) and
/// its type.
pub(crate) struct ComponentExport {
    pub name: String,
    /// The exported interface holding it, if not at the root.
    pub interface: Option<String>,
    /// The function's own name.
    pub func: String,
    pub ty: ComponentFunc,
}

/// Every exported function of `component`, at the root and in exported interfaces (but not
/// `wasi:cli/run`'s `run`, which is the command's entry point).
pub(crate) fn component_exports(engine: &Engine, component: &Component) -> Vec<ComponentExport> {
    let mut out = Vec::new();
    for (name, item) in component.component_type().exports(engine) {
        match item.ty {
            ComponentItem::ComponentFunc(ty) => out.push(ComponentExport {
                name: name.to_string(),
                interface: None,
                func: name.to_string(),
                ty,
            }),
            ComponentItem::ComponentInstance(inst) if !name.starts_with(CLI_RUN) => {
                for (func, item) in inst.exports(engine) {
                    if let ComponentItem::ComponentFunc(ty) = item.ty {
                        out.push(ComponentExport {
                            name: format!("{name}#{func}"),
                            interface: Some(name.to_string()),
                            func: func.to_string(),
                            ty,
                        });
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// The template's view of a component's exports: `start` when it is a command, and every
/// other exported function with its WIT parameter and result types.
pub(crate) fn describe_component_exports(exports: &[ComponentExport], command: bool) -> Exports {
    let funcs = exports
        .iter()
        .map(|e| ExportedFunc {
            params: e.ty.params().map(|(_, t)| ValKind::Wit(wit_name(&t))).collect(),
            results: e.ty.results().map(|t| ValKind::Wit(wit_name(&t))).collect(),
            name: e.name.clone(),
        })
        .collect();
    Exports { kind: GuestKind::Component, start: command, funcs }
}

/// A WIT type as WIT spells it (records, variants, enums and flags, which carry no name in
/// the compiled type, as their keyword and cases).
pub fn wit_name(ty: &Type) -> String {
    let list = |items: Vec<String>| items.join(", ");
    match ty {
        Type::Bool => "bool".into(),
        Type::S8 => "s8".into(),
        Type::U8 => "u8".into(),
        Type::S16 => "s16".into(),
        Type::U16 => "u16".into(),
        Type::S32 => "s32".into(),
        Type::U32 => "u32".into(),
        Type::S64 => "s64".into(),
        Type::U64 => "u64".into(),
        Type::Float32 => "f32".into(),
        Type::Float64 => "f64".into(),
        Type::Char => "char".into(),
        Type::String => "string".into(),
        Type::List(l) => format!("list<{}>", wit_name(&l.ty())),
        Type::FixedLengthList(_) => "list<_, N>".into(),
        Type::Map(_) => "map".into(),
        Type::Record(r) => format!(
            "record {{ {} }}",
            list(r.fields().map(|f| format!("{}: {}", f.name, wit_name(&f.ty))).collect())
        ),
        Type::Tuple(t) => format!("tuple<{}>", list(t.types().map(|t| wit_name(&t)).collect())),
        Type::Variant(v) => format!(
            "variant {{ {} }}",
            list(
                v.cases()
                    .map(|c| match c.ty {
                        Some(t) => format!("{}({})", c.name, wit_name(&t)),
                        None => c.name.to_string(),
                    })
                    .collect()
            )
        ),
        Type::Enum(e) => format!("enum {{ {} }}", list(e.names().map(str::to_string).collect())),
        Type::Option(o) => format!("option<{}>", wit_name(&o.ty())),
        Type::Result(r) => {
            let side = |t: Option<Type>| t.map_or("_".to_string(), |t| wit_name(&t));
            format!("result<{}, {}>", side(r.ok()), side(r.err()))
        }
        Type::Flags(f) => format!("flags {{ {} }}", list(f.names().map(str::to_string).collect())),
        Type::Own(_) => "own<resource>".into(),
        Type::Borrow(_) => "borrow<resource>".into(),
        Type::Future(_) => "future".into(),
        Type::Stream(_) => "stream".into(),
        Type::ErrorContext => "error-context".into(),
    }
}

/// A JSON Schema (draft 2020-12) for values of a WIT type, as JSON carries them:
///
/// - `bool` → boolean; integers → integer with the type's bounds; `f32`/`f64` → number;
///   `char` → a one-character string; `string` → string;
/// - `list<T>` → array of T; `tuple<…>` → array with `prefixItems`, of exactly that length;
/// - `record` → object, every field in `required` except `option` fields (absent or null is
///   `none`), no other properties;
/// - `variant` → `oneOf`: a case without payload is its name as a string, a case with one is
///   an object `{"case": payload}`; `enum` → string `enum`;
/// - `option<T>` → T or null; `result<T, E>` → `{"ok": T}` or `{"err": E}`;
/// - `flags` → an array of unique flag names;
/// - resources, futures and streams cannot be given as JSON: a schema that says so.
pub fn json_schema(ty: &Type) -> serde_json::Value {
    use serde_json::json;
    let int = |min: i128, max: i128| json!({"type": "integer", "minimum": min, "maximum": max});
    match ty {
        Type::Bool => json!({"type": "boolean"}),
        Type::S8 => int(i8::MIN.into(), i8::MAX.into()),
        Type::U8 => int(0, u8::MAX.into()),
        Type::S16 => int(i16::MIN.into(), i16::MAX.into()),
        Type::U16 => int(0, u16::MAX.into()),
        Type::S32 => int(i32::MIN.into(), i32::MAX.into()),
        Type::U32 => int(0, u32::MAX.into()),
        Type::S64 => int(i64::MIN.into(), i64::MAX.into()),
        Type::U64 => int(0, u64::MAX.into()),
        Type::Float32 | Type::Float64 => json!({"type": "number"}),
        Type::Char => json!({"type": "string", "minLength": 1, "maxLength": 1}),
        Type::String => json!({"type": "string"}),
        Type::List(l) => json!({"type": "array", "items": json_schema(&l.ty())}),
        Type::Tuple(t) => {
            let items: Vec<_> = t.types().map(|t| json_schema(&t)).collect();
            let n = items.len();
            json!({"type": "array", "prefixItems": items, "minItems": n, "maxItems": n})
        }
        Type::Record(r) => object(r.fields().map(|f| (f.name.to_string(), f.ty))),
        Type::Variant(v) => {
            let cases: Vec<_> = v
                .cases()
                .map(|c| match c.ty {
                    None => json!({"const": c.name}),
                    Some(t) => json!({
                        "type": "object",
                        "properties": {c.name: json_schema(&t)},
                        "required": [c.name],
                        "additionalProperties": false,
                    }),
                })
                .collect();
            json!({"oneOf": cases})
        }
        Type::Enum(e) => json!({"type": "string", "enum": e.names().collect::<Vec<_>>()}),
        Type::Option(o) => json!({"anyOf": [json_schema(&o.ty()), {"type": "null"}]}),
        Type::Result(r) => {
            let side = |name: &str, t: Option<Type>| {
                let payload = t.map_or(json!({"type": "null"}), |t| json_schema(&t));
                json!({
                    "type": "object",
                    "properties": {name: payload},
                    "required": [name],
                    "additionalProperties": false,
                })
            };
            json!({"oneOf": [side("ok", r.ok()), side("err", r.err())]})
        }
        Type::Flags(f) => json!({
            "type": "array",
            "items": {"type": "string", "enum": f.names().collect::<Vec<_>>()},
            "uniqueItems": true,
        }),
        other => json!({
            "not": {},
            "description": format!("a {} cannot be passed as JSON", wit_name(other)),
        }),
    }
}

/// An object schema with these named members: all required except `option`s.
fn object(members: impl Iterator<Item = (String, Type)>) -> serde_json::Value {
    let mut properties = serde_json::Map::new();
    let mut required = Vec::new();
    for (name, ty) in members {
        if !matches!(ty, Type::Option(_)) {
            required.push(serde_json::Value::String(name.clone()));
        }
        properties.insert(name, json_schema(&ty));
    }
    serde_json::json!({
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    })
}

/// The input schema of a function: an object of its named parameters.
pub fn params_schema(func: &ComponentFunc) -> serde_json::Value {
    object(func.params().map(|(name, ty)| (name.to_string(), ty)))
}

/// The output schema of a function: its result's schema, or null for none.
pub fn result_schema(func: &ComponentFunc) -> serde_json::Value {
    let results: Vec<Type> = func.results().collect();
    match results.as_slice() {
        [] => serde_json::json!({"type": "null"}),
        [one] => json_schema(one),
        many => {
            let items: Vec<_> = many.iter().map(json_schema).collect();
            let n = items.len();
            serde_json::json!({"type": "array", "prefixItems": items, "minItems": n, "maxItems": n})
        }
    }
}

/// What `inspect` prints for a component: kind, whether it is a command, imports, and each
/// exported function with its WIT types and JSON Schemas.
pub(crate) fn describe_component(
    engine: &Engine,
    component: &Component,
    exports: &[ComponentExport],
    command: bool,
) -> serde_json::Value {
    let ty = component.component_type();
    let imports: Vec<String> = ty.imports(engine).map(|(name, _)| name.to_string()).collect();
    let funcs: Vec<_> = exports
        .iter()
        .map(|e| {
            let params: Vec<_> =
                e.ty.params()
                    .map(|(n, t)| serde_json::json!({"name": n, "type": wit_name(&t)}))
                    .collect();
            let results: Vec<_> = e.ty.results().map(|t| wit_name(&t)).collect();
            serde_json::json!({
                "name": e.name,
                "params": params,
                "results": results,
                "input_schema": params_schema(&e.ty),
                "output_schema": result_schema(&e.ty),
            })
        })
        .collect();
    serde_json::json!({
        "kind": GuestKind::Component.as_str(),
        "command": command,
        "imports": imports,
        "exports": funcs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The exports of a component written in WAT, compiled in this process.
    fn exports_of(wat: &str) -> Vec<ComponentExport> {
        let engine = Engine::default();
        let component = Component::new(&engine, wat).expect("valid component");
        component_exports(&engine, &component)
    }

    const TYPES: &str = r#"(component
        (type $point (record (field "x" s32) (field "y" s32)))
        (type $shape (variant (case "circle" f64) (case "rect" $point) (case "empty")))
        (type $color (enum "red" "green"))
        (type $perms (flags "read" "write"))
        (type $order (record (field "id" u32) (field "note" (option string))
                             (field "tags" (list string)) (field "color" $color)))
        (core module $m
            (memory (export "mem") 1)
            (func (export "f") (param i32 i32) (result i32) unreachable)
            (func (export "realloc") (param i32 i32 i32 i32) (result i32) unreachable))
        (core instance $i (instantiate $m))
        (func $f (param "o" $order) (param "s" $shape) (result (result $perms (error string)))
            (canon lift (core func $i "f") (memory $i "mem") (realloc (func $i "realloc"))))
        (export "check" (func $f))
    )"#;

    #[test]
    fn records_variants_options_and_results_become_json_schema() {
        let exports = exports_of(TYPES);
        let [check] = exports.as_slice() else { panic!("one export expected") };
        assert_eq!(check.name, "check");
        assert_eq!(
            params_schema(&check.ty),
            json!({
                "type": "object",
                "properties": {
                    "o": {
                        "type": "object",
                        "properties": {
                            "id": {"type": "integer", "minimum": 0, "maximum": u32::MAX},
                            "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                            "tags": {"type": "array", "items": {"type": "string"}},
                            "color": {"type": "string", "enum": ["red", "green"]},
                        },
                        "required": ["id", "tags", "color"],
                        "additionalProperties": false,
                    },
                    "s": {"oneOf": [
                        {"type": "object", "properties": {"circle": {"type": "number"}},
                         "required": ["circle"], "additionalProperties": false},
                        {"type": "object", "properties": {"rect": {
                            "type": "object",
                            "properties": {
                                "x": {"type": "integer", "minimum": i32::MIN, "maximum": i32::MAX},
                                "y": {"type": "integer", "minimum": i32::MIN, "maximum": i32::MAX},
                            },
                            "required": ["x", "y"],
                            "additionalProperties": false,
                         }}, "required": ["rect"], "additionalProperties": false},
                        {"const": "empty"},
                    ]},
                },
                "required": ["o", "s"],
                "additionalProperties": false,
            })
        );
        assert_eq!(
            result_schema(&check.ty),
            json!({"oneOf": [
                {"type": "object", "properties": {"ok": {
                    "type": "array",
                    "items": {"type": "string", "enum": ["read", "write"]},
                    "uniqueItems": true,
                }}, "required": ["ok"], "additionalProperties": false},
                {"type": "object", "properties": {"err": {"type": "string"}},
                 "required": ["err"], "additionalProperties": false},
            ]})
        );
        assert_eq!(
            wit_name(&check.ty.params().nth(1).expect("second param").1),
            "variant { circle(f64), rect(record { x: s32, y: s32 }), empty }"
        );
    }

    #[test]
    fn tuples_have_fixed_length_and_no_result_is_null() {
        let exports = exports_of(
            r#"(component
                (core module $m (func (export "f") (param i32 i32)))
                (core instance $i (instantiate $m))
                (func $f (param "t" (tuple u8 s8)) (canon lift (core func $i "f")))
                (export "pair" (func $f)))"#,
        );
        let [pair] = exports.as_slice() else { panic!("one export expected") };
        assert_eq!(result_schema(&pair.ty), json!({"type": "null"}));
        assert_eq!(
            params_schema(&pair.ty)["properties"]["t"],
            json!({
                "type": "array",
                "prefixItems": [
                    {"type": "integer", "minimum": 0, "maximum": 255},
                    {"type": "integer", "minimum": -128, "maximum": 127},
                ],
                "minItems": 2,
                "maxItems": 2,
            })
        );
    }
}
