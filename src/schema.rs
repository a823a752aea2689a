//! What a component exports, described from its WIT types: the function list a template
//! checks tasks against, and a JSON Schema per exported function's parameters and result,
//! which `inspect` prints and a tool host (the MCP server) offers as a tool's input schema.

use crate::entry::{ExportedFunc, Exports, GuestKind, ValKind};
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

/// A JSON value (as [`json_schema`] describes it) converted to a value of WIT type `ty`;
/// the error names the path to the part that does not fit (`o.tags[2]`).
pub(crate) fn json_to_val(ty: &Type, v: &serde_json::Value, path: &str) -> Result<Val, String> {
    use serde_json::Value as J;
    let bad = |want: &str| format!("{path}: expected {want}, got {v}");
    let int = |min: i128, max: i128| -> Result<i128, String> {
        let n = v.as_i64().map(i128::from).or_else(|| v.as_u64().map(i128::from));
        match n {
            Some(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(bad(&format!("an integer in {min}..={max}"))),
        }
    };
    // Each conversion is checked against the bounds just above.
    #[allow(clippy::cast_possible_truncation)]
    Ok(match ty {
        Type::Bool => Val::Bool(v.as_bool().ok_or_else(|| bad("a boolean"))?),
        Type::S8 => Val::S8(int(i8::MIN.into(), i8::MAX.into())? as i8),
        Type::U8 => Val::U8(int(0, u8::MAX.into())? as u8),
        Type::S16 => Val::S16(int(i16::MIN.into(), i16::MAX.into())? as i16),
        Type::U16 => Val::U16(int(0, u16::MAX.into())? as u16),
        Type::S32 => Val::S32(int(i32::MIN.into(), i32::MAX.into())? as i32),
        Type::U32 => Val::U32(int(0, u32::MAX.into())? as u32),
        Type::S64 => Val::S64(int(i64::MIN.into(), i64::MAX.into())? as i64),
        Type::U64 => Val::U64(int(0, u64::MAX.into())? as u64),
        Type::Float32 => Val::Float32(v.as_f64().ok_or_else(|| bad("a number"))? as f32),
        Type::Float64 => Val::Float64(v.as_f64().ok_or_else(|| bad("a number"))?),
        Type::Char => {
            let text = v.as_str().ok_or_else(|| bad("a one-character string"))?;
            let mut chars = text.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => Val::Char(c),
                _ => return Err(bad("a one-character string")),
            }
        }
        Type::String => Val::String(v.as_str().ok_or_else(|| bad("a string"))?.to_string()),
        Type::List(l) => {
            let items = v.as_array().ok_or_else(|| bad("an array"))?;
            let ty = l.ty();
            Val::List(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| json_to_val(&ty, item, &format!("{path}[{i}]")))
                    .collect::<Result<_, _>>()?,
            )
        }
        Type::Tuple(t) => {
            let items = v.as_array().ok_or_else(|| bad("an array"))?;
            if items.len() != t.types().len() {
                return Err(bad(&format!("an array of {}", t.types().len())));
            }
            Val::Tuple(
                t.types()
                    .zip(items)
                    .enumerate()
                    .map(|(i, (ty, item))| json_to_val(&ty, item, &format!("{path}[{i}]")))
                    .collect::<Result<_, _>>()?,
            )
        }
        Type::Record(r) => {
            let fields = r.fields().map(|f| (f.name.to_string(), f.ty));
            Val::Record(members(fields, v, path)?)
        }
        Type::Variant(variant) => {
            let (name, payload) = match v {
                J::String(name) => (name.as_str(), None),
                J::Object(m) if m.len() == 1 => {
                    let (k, p) = m.iter().next().ok_or_else(|| bad("a variant case"))?;
                    (k.as_str(), Some(p))
                }
                _ => return Err(bad("a case name or {\"case\": payload}")),
            };
            let case = variant
                .cases()
                .find(|c| c.name == name)
                .ok_or_else(|| format!("{path}: no case `{name}`"))?;
            let payload = match (case.ty, payload) {
                (None, None) => None,
                (Some(t), Some(p)) => {
                    Some(Box::new(json_to_val(&t, p, &format!("{path}.{name}"))?))
                }
                (None, Some(_)) => return Err(format!("{path}: case `{name}` has no payload")),
                (Some(_), None) => return Err(format!("{path}: case `{name}` needs a payload")),
            };
            Val::Variant(name.to_string(), payload)
        }
        Type::Enum(e) => {
            let name = v.as_str().ok_or_else(|| bad("a string"))?;
            if !e.names().any(|n| n == name) {
                return Err(format!("{path}: no case `{name}`"));
            }
            Val::Enum(name.to_string())
        }
        Type::Option(o) => match v {
            J::Null => Val::Option(None),
            some => Val::Option(Some(Box::new(json_to_val(&o.ty(), some, path)?))),
        },
        Type::Result(r) => {
            let m = v
                .as_object()
                .filter(|m| m.len() == 1)
                .ok_or_else(|| bad("{\"ok\": …} or {\"err\": …}"))?;
            let side = |t: Option<Type>, p: &serde_json::Value, name: &str| match t {
                None => Ok(None),
                Some(t) => json_to_val(&t, p, &format!("{path}.{name}")).map(|v| Some(Box::new(v))),
            };
            match (m.get("ok"), m.get("err")) {
                (Some(p), None) => Val::Result(Ok(side(r.ok(), p, "ok")?)),
                (None, Some(p)) => Val::Result(Err(side(r.err(), p, "err")?)),
                _ => return Err(bad("{\"ok\": …} or {\"err\": …}")),
            }
        }
        Type::Flags(f) => {
            let items = v.as_array().ok_or_else(|| bad("an array of flag names"))?;
            let mut set = Vec::new();
            for item in items {
                let name = item.as_str().ok_or_else(|| bad("an array of flag names"))?;
                if !f.names().any(|n| n == name) {
                    return Err(format!("{path}: no flag `{name}`"));
                }
                set.push(name.to_string());
            }
            Val::Flags(set)
        }
        other => return Err(format!("{path}: a {} cannot be passed as JSON", wit_name(other))),
    })
}

/// Named members from a JSON object (or, for parameters, an array in order): every one
/// present unless it is an `option` (absent is `none`), and nothing else.
fn members(
    members: impl Iterator<Item = (String, Type)>,
    v: &serde_json::Value,
    path: &str,
) -> Result<Vec<(String, Val)>, String> {
    let members: Vec<(String, Type)> = members.collect();
    let dot =
        |name: &str| if path.is_empty() { name.to_string() } else { format!("{path}.{name}") };
    match v {
        serde_json::Value::Object(m) => {
            if let Some(extra) = m.keys().find(|k| !members.iter().any(|(n, _)| n == *k)) {
                return Err(format!("{}: unknown member", dot(extra)));
            }
            members
                .into_iter()
                .map(|(name, ty)| {
                    let value = match (m.get(&name), &ty) {
                        (Some(v), _) => json_to_val(&ty, v, &dot(&name))?,
                        (None, Type::Option(_)) => Val::Option(None),
                        (None, _) => return Err(format!("{}: missing", dot(&name))),
                    };
                    Ok((name, value))
                })
                .collect()
        }
        serde_json::Value::Array(items) if items.len() == members.len() => members
            .into_iter()
            .zip(items)
            .map(|((name, ty), item)| Ok((name.clone(), json_to_val(&ty, item, &dot(&name))?)))
            .collect(),
        other => Err(format!(
            "{}: expected an object of {} members, got {other}",
            if path.is_empty() { "arguments" } else { path },
            members.len()
        )),
    }
}

/// A function's arguments from JSON: an object by parameter name, or an array in order.
pub(crate) fn json_to_params(
    func: &ComponentFunc,
    v: &serde_json::Value,
) -> Result<Vec<Val>, String> {
    let params = func.params().map(|(n, t)| (n.to_string(), t));
    Ok(members(params, v, "")?.into_iter().map(|(_, v)| v).collect())
}

/// A value as JSON, the shape [`json_schema`] gives its type.
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
