//! What a component exports, described from its WIT types: the function list a template
//! checks tasks against, and a JSON Schema per exported function's parameters and result,
//! which `inspect` prints and a tool host (the MCP server) offers as a tool's input schema.

use crate::entry::{ExportedFunc, Exports, GuestKind, ValKind};
use crate::wit_type::WitType;
use wasmtime::Engine;
use wasmtime::component::Component;
use wasmtime::component::Val;
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
            params: e.ty.params().map(|(_, t)| ValKind::Wit(wit_type(&t))).collect(),
            param_names: e.ty.params().map(|(n, _)| n.to_string()).collect(),
            results: e.ty.results().map(|t| ValKind::Wit(wit_type(&t))).collect(),
            name: e.name.clone(),
        })
        .collect();
    Exports { kind: GuestKind::Component, start: command, funcs }
}

/// A compiled WIT type in the runtime's own Wasmtime-free form (see [`crate::wit_type`]),
/// which the zygote sends to its host and which checks and describes values.
pub fn wit_type(ty: &Type) -> WitType {
    let boxed = |t: Type| Box::new(wit_type(&t));
    match ty {
        Type::Bool => WitType::Bool,
        Type::S8 => WitType::S8,
        Type::U8 => WitType::U8,
        Type::S16 => WitType::S16,
        Type::U16 => WitType::U16,
        Type::S32 => WitType::S32,
        Type::U32 => WitType::U32,
        Type::S64 => WitType::S64,
        Type::U64 => WitType::U64,
        Type::Float32 => WitType::F32,
        Type::Float64 => WitType::F64,
        Type::Char => WitType::Char,
        Type::String => WitType::String,
        Type::List(l) => WitType::List(boxed(l.ty())),
        Type::Record(r) => {
            WitType::Record(r.fields().map(|f| (f.name.to_string(), wit_type(&f.ty))).collect())
        }
        Type::Tuple(t) => WitType::Tuple(t.types().map(|t| wit_type(&t)).collect()),
        Type::Variant(v) => WitType::Variant(
            v.cases().map(|c| (c.name.to_string(), c.ty.map(|t| wit_type(&t)))).collect(),
        ),
        Type::Enum(e) => WitType::Enum(e.names().map(str::to_string).collect()),
        Type::Option(o) => WitType::Option(boxed(o.ty())),
        Type::Result(r) => WitType::Result(r.ok().map(boxed), r.err().map(boxed)),
        Type::Flags(f) => WitType::Flags(f.names().map(str::to_string).collect()),
        Type::FixedLengthList(_) => WitType::Unsupported("list<_, N>".into()),
        Type::Map(_) => WitType::Unsupported("map".into()),
        Type::Own(_) => WitType::Unsupported("own<resource>".into()),
        Type::Borrow(_) => WitType::Unsupported("borrow<resource>".into()),
        Type::Future(_) => WitType::Unsupported("future".into()),
        Type::Stream(_) => WitType::Unsupported("stream".into()),
        Type::ErrorContext => WitType::Unsupported("error-context".into()),
    }
}

/// A function's named parameters, in order, in the Wasmtime-free form.
fn wit_params(func: &ComponentFunc) -> Vec<(String, WitType)> {
    func.params().map(|(n, t)| (n.to_string(), wit_type(&t))).collect()
}

/// The input schema of a function: an object of its named parameters.
pub fn params_schema(func: &ComponentFunc) -> serde_json::Value {
    crate::wit_type::object_schema(&wit_params(func))
}

/// The output schema of a function: its result's schema, or null for none.
pub fn result_schema(func: &ComponentFunc) -> serde_json::Value {
    let results: Vec<WitType> = func.results().map(|t| wit_type(&t)).collect();
    crate::wit_type::results_schema(&results)
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
                    .map(|(n, t)| serde_json::json!({"name": n, "type": wit_type(&t).to_string()}))
                    .collect();
            let results: Vec<_> = e.ty.results().map(|t| wit_type(&t).to_string()).collect();
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

/// A function's arguments from JSON: an object by parameter name, or an array in order.
pub(crate) fn json_to_params(
    func: &ComponentFunc,
    v: &serde_json::Value,
) -> Result<Vec<Val>, String> {
    let params: Vec<(String, Type)> = func.params().map(|(n, t)| (n.to_string(), t)).collect();
    let members = crate::wit_type::members::<Val>(&params, v, "")?;
    Ok(members.into_iter().map(|(_, v)| v).collect())
}

/// A value as JSON, the shape [`WitType::json_schema`] gives its type.
pub(crate) fn val_to_json(v: &Val) -> serde_json::Value {
    use serde_json::{Value as J, json};
    let boxed = |b: &Option<Box<Val>>| b.as_deref().map_or(J::Null, val_to_json);
    match v {
        Val::Bool(b) => J::Bool(*b),
        Val::S8(n) => json!(n),
        Val::U8(n) => json!(n),
        Val::S16(n) => json!(n),
        Val::U16(n) => json!(n),
        Val::S32(n) => json!(n),
        Val::U32(n) => json!(n),
        Val::S64(n) => json!(n),
        Val::U64(n) => json!(n),
        Val::Float32(f) => json!(f),
        Val::Float64(f) => json!(f),
        Val::Char(c) => J::String(c.to_string()),
        Val::String(s) => J::String(s.clone()),
        Val::List(items) | Val::Tuple(items) | Val::FixedLengthList(items) => {
            J::Array(items.iter().map(val_to_json).collect())
        }
        Val::Map(pairs) => {
            J::Array(pairs.iter().map(|(k, v)| json!([val_to_json(k), val_to_json(v)])).collect())
        }
        Val::Record(fields) => {
            J::Object(fields.iter().map(|(k, v)| (k.clone(), val_to_json(v))).collect())
        }
        Val::Variant(name, None) | Val::Enum(name) => J::String(name.clone()),
        Val::Variant(name, Some(p)) => json!({name: val_to_json(p)}),
        Val::Option(o) => boxed(o),
        Val::Result(Ok(p)) => json!({"ok": boxed(p)}),
        Val::Result(Err(p)) => json!({"err": boxed(p)}),
        Val::Flags(names) => json!(names),
        Val::Resource(_) | Val::Future(_) | Val::Stream(_) | Val::ErrorContext(_) => J::Null,
    }
}

/// A function's results as JSON: the one result, null for none, an array for several.
pub(crate) fn results_to_json(results: &[Val]) -> serde_json::Value {
    match results {
        [] => serde_json::Value::Null,
        [one] => val_to_json(one),
        many => serde_json::Value::Array(many.iter().map(val_to_json).collect()),
    }
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
        (type $point' (record (field "x" s32) (field "y" s32)))
        (export $point "point" (type $point'))
        (type $shape' (variant (case "circle" f64) (case "rect" $point) (case "empty")))
        (export $shape "shape" (type $shape'))
        (type $color' (enum "red" "green"))
        (export $color "color" (type $color'))
        (type $perms' (flags "read" "write"))
        (export $perms "perms" (type $perms'))
        (type $order' (record (field "id" u32) (field "note" (option string))
                              (field "tags" (list string)) (field "color" $color)))
        (export $order "order" (type $order'))
        (core module $m
            (memory (export "mem") 1)
            (func (export "f")
                (param i32 i32 i32 i32 i32 i32 i32 i32 i64 i32) (result i32) unreachable)
            (func (export "realloc") (param i32 i32 i32 i32) (result i32) unreachable))
        (core instance $i (instantiate $m))
        (func $f (param "o" $order) (param "s" $shape) (result (result $perms (error string)))
            (canon lift (core func $i "f") (memory (core memory $i "mem"))
                (realloc (core func $i "realloc"))))
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
            wit_type(&check.ty.params().nth(1).expect("second param").1).to_string(),
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

    #[test]
    fn json_arguments_convert_by_type_and_back() {
        let exports = exports_of(TYPES);
        let [check] = exports.as_slice() else { panic!("one export expected") };
        let args = json!({
            "o": {"id": 7, "tags": ["a"], "color": "green"},
            "s": {"rect": {"x": 2, "y": -3}},
        });
        let vals = json_to_params(&check.ty, &args).expect("fits");
        assert_eq!(
            vals[0],
            Val::Record(vec![
                ("id".into(), Val::U32(7)),
                ("note".into(), Val::Option(None)),
                ("tags".into(), Val::List(vec![Val::String("a".into())])),
                ("color".into(), Val::Enum("green".into())),
            ])
        );
        assert_eq!(
            val_to_json(&vals[1]),
            json!({"rect": {"x": 2, "y": -3}}),
            "a variant comes back as it went in"
        );
        assert_eq!(
            json_to_params(&check.ty, &json!([args["o"], "empty"])).expect("array").len(),
            2
        );
        let err = |v: serde_json::Value| json_to_params(&check.ty, &v).expect_err("must not fit");
        assert_eq!(
            err(json!({"o": {"id": -1, "tags": [], "color": "red"}, "s": "empty"})),
            "o.id: expected an integer in 0..=4294967295, got -1"
        );
        assert_eq!(
            err(json!({"o": {"id": 1, "tags": [], "color": "blue"}, "s": "empty"})),
            "o.color: no case `blue`"
        );
        assert_eq!(err(json!({"s": "empty"})), "o: missing");
        assert_eq!(
            err(json!({"o": {"id": 1, "tags": [], "color": "red"}, "s": "empty", "x": 1})),
            "x: unknown member"
        );
        assert_eq!(
            err(json!({"o": {"id": 1, "tags": [], "color": "red"}, "s": "circle"})),
            "s: case `circle` needs a payload"
        );
        assert_eq!(
            results_to_json(&[Val::Result(Ok(Some(Box::new(Val::Flags(vec!["read".into()])))))]),
            json!({"ok": ["read"]})
        );
    }
}
