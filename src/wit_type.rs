//! WIT value types without Wasmtime: what a component export's parameters and results are,
//! in a form the zygote sends to its host, so that the host checks a call's arguments (WAVE
//! or JSON) before any sandbox is started, and describes each export with a JSON Schema
//! (the MCP server's tool input schemas) without compiling the component itself.
//!
//! One JSON shape is used everywhere a WIT value is JSON, and [`WitType::json_schema`] describes it:
//! - `bool` → boolean; integers → integer with their exact bounds; `f32`/`f64` → number;
//!   `char` → a one-character string; `string` → string;
//! - `list<T>` → array; `tuple<…>` → array of fixed length (`prefixItems`);
//! - `record` → object with `required` members (all but `option`s, which may be left out);
//! - `variant` → a case without payload is its name as a string, one with a payload is an
//!   object `{"case": payload}`; `enum` → string `enum`;
//! - `option<T>` → T or null; `result<T, E>` → `{"ok": T}` or `{"err": E}`;
//! - `flags` → an array of unique flag names;
//! - resources, futures, streams and maps cannot be given as JSON: a schema that says so.

use serde::{Deserialize, Serialize};
use serde_json::{Value as J, json};
use std::borrow::Cow;
use wasm_wave::wasm::{WasmType, WasmTypeKind, WasmValue};

/// A WIT value type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WitType {
    Bool,
    S8,
    U8,
    S16,
    U16,
    S32,
    U32,
    S64,
    U64,
    F32,
    F64,
    Char,
    String,
    List(Box<WitType>),
    Record(Vec<(String, WitType)>),
    Tuple(Vec<WitType>),
    Variant(Vec<(String, Option<WitType>)>),
    Enum(Vec<String>),
    Option(Box<WitType>),
    Result(Option<Box<WitType>>, Option<Box<WitType>>),
    Flags(Vec<String>),
    /// A type no argument can give (a resource handle, a future, a stream, a map, a
    /// fixed-length list), by its WIT spelling.
    Unsupported(String),
}

impl std::fmt::Display for WitType {
    /// The type as WIT spells it; records, variants, enums and flags, which carry no name in
    /// a compiled component, as their keyword and members.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let join = |items: Vec<String>| items.join(", ");
        let scalar = match self {
            WitType::Bool => "bool",
            WitType::S8 => "s8",
            WitType::U8 => "u8",
            WitType::S16 => "s16",
            WitType::U16 => "u16",
            WitType::S32 => "s32",
            WitType::U32 => "u32",
            WitType::S64 => "s64",
            WitType::U64 => "u64",
            WitType::F32 => "f32",
            WitType::F64 => "f64",
            WitType::Char => "char",
            WitType::String => "string",
            WitType::Unsupported(name) => name,
            WitType::List(t) => return write!(f, "list<{t}>"),
            WitType::Record(fields) => {
                let fields = fields.iter().map(|(n, t)| format!("{n}: {t}")).collect();
                return write!(f, "record {{ {} }}", join(fields));
            }
            WitType::Tuple(items) => {
                return write!(
                    f,
                    "tuple<{}>",
                    join(items.iter().map(ToString::to_string).collect())
                );
            }
            WitType::Variant(cases) => {
                let cases = cases
                    .iter()
                    .map(|(n, t)| t.as_ref().map_or_else(|| n.clone(), |t| format!("{n}({t})")))
                    .collect();
                return write!(f, "variant {{ {} }}", join(cases));
            }
            WitType::Enum(cases) => return write!(f, "enum {{ {} }}", cases.join(", ")),
            WitType::Option(t) => return write!(f, "option<{t}>"),
            WitType::Result(ok, err) => {
                let side =
                    |t: &Option<Box<WitType>>| t.as_ref().map_or("_".into(), |t| t.to_string());
                return write!(f, "result<{}, {}>", side(ok), side(err));
            }
            WitType::Flags(names) => return write!(f, "flags {{ {} }}", names.join(", ")),
        };
        f.write_str(scalar)
    }
}

impl WitType {
    /// The type WAVE text is parsed against, for checking a call; `None` if no value of
    /// this type can be written (see [`WitType::Unsupported`]).
    pub fn to_wave(&self) -> Option<wasm_wave::value::Type> {
        wasm_wave::value::Type::from_wasm_type(self)
    }

    /// The JSON Schema of this type's JSON form (see the module's documentation).
    pub fn json_schema(&self) -> J {
        let int = |min: i128, max: i128| json!({"type": "integer", "minimum": min, "maximum": max});
        match self {
            WitType::Bool => json!({"type": "boolean"}),
            WitType::S8 => int(i8::MIN.into(), i8::MAX.into()),
            WitType::U8 => int(0, u8::MAX.into()),
            WitType::S16 => int(i16::MIN.into(), i16::MAX.into()),
            WitType::U16 => int(0, u16::MAX.into()),
            WitType::S32 => int(i32::MIN.into(), i32::MAX.into()),
            WitType::U32 => int(0, u32::MAX.into()),
            WitType::S64 => int(i64::MIN.into(), i64::MAX.into()),
            WitType::U64 => int(0, u64::MAX.into()),
            WitType::F32 | WitType::F64 => json!({"type": "number"}),
            WitType::Char => json!({"type": "string", "minLength": 1, "maxLength": 1}),
            WitType::String => json!({"type": "string"}),
            WitType::List(t) => json!({"type": "array", "items": t.json_schema()}),
            WitType::Tuple(items) => fixed_array(items.iter().map(WitType::json_schema).collect()),
            WitType::Record(fields) => object_schema(fields),
            WitType::Variant(cases) => {
                let cases: Vec<_> = cases
                    .iter()
                    .map(|(name, t)| match t {
                        None => json!({"const": name}),
                        Some(t) => one_member(name, t.json_schema()),
                    })
                    .collect();
                json!({"oneOf": cases})
            }
            WitType::Enum(cases) => json!({"type": "string", "enum": cases}),
            WitType::Option(t) => json!({"anyOf": [t.json_schema(), {"type": "null"}]}),
            WitType::Result(ok, err) => {
                let side = |name: &str, t: &Option<Box<WitType>>| {
                    one_member(
                        name,
                        t.as_ref().map_or(json!({"type": "null"}), |t| t.json_schema()),
                    )
                };
                json!({"oneOf": [side("ok", ok), side("err", err)]})
            }
            WitType::Flags(names) => json!({
                "type": "array",
                "items": {"type": "string", "enum": names},
                "uniqueItems": true,
            }),
            WitType::Unsupported(name) => json!({
                "not": {},
                "description": format!("a {name} cannot be passed as JSON"),
            }),
        }
    }
}

/// An object with exactly one member, `name`, of schema `payload`.
fn one_member(name: &str, payload: J) -> J {
    json!({
        "type": "object",
        "properties": {name: payload},
        "required": [name],
        "additionalProperties": false,
    })
}

/// An array of exactly these items' schemas.
fn fixed_array(items: Vec<J>) -> J {
    let n = items.len();
    json!({"type": "array", "prefixItems": items, "minItems": n, "maxItems": n})
}

/// An object schema with these named members: all required except `option`s.
pub fn object_schema(members: &[(String, WitType)]) -> J {
    let mut properties = serde_json::Map::new();
    let mut required = Vec::new();
    for (name, ty) in members {
        if !matches!(ty, WitType::Option(_)) {
            required.push(J::String(name.clone()));
        }
        properties.insert(name.clone(), ty.json_schema());
    }
    json!({
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    })
}

/// The output schema of a function with these results: its result's schema, null for none.
pub fn results_schema(results: &[WitType]) -> J {
    match results {
        [] => json!({"type": "null"}),
        [one] => one.json_schema(),
        many => fixed_array(many.iter().map(WitType::json_schema).collect()),
    }
}

impl WasmType for WitType {
    fn kind(&self) -> WasmTypeKind {
        match self {
            WitType::Bool => WasmTypeKind::Bool,
            WitType::S8 => WasmTypeKind::S8,
            WitType::U8 => WasmTypeKind::U8,
            WitType::S16 => WasmTypeKind::S16,
            WitType::U16 => WasmTypeKind::U16,
            WitType::S32 => WasmTypeKind::S32,
            WitType::U32 => WasmTypeKind::U32,
            WitType::S64 => WasmTypeKind::S64,
            WitType::U64 => WasmTypeKind::U64,
            WitType::F32 => WasmTypeKind::F32,
            WitType::F64 => WasmTypeKind::F64,
            WitType::Char => WasmTypeKind::Char,
            WitType::String => WasmTypeKind::String,
            WitType::List(_) => WasmTypeKind::List,
            WitType::Record(_) => WasmTypeKind::Record,
            WitType::Tuple(_) => WasmTypeKind::Tuple,
            WitType::Variant(_) => WasmTypeKind::Variant,
            WitType::Enum(_) => WasmTypeKind::Enum,
            WitType::Option(_) => WasmTypeKind::Option,
            WitType::Result(..) => WasmTypeKind::Result,
            WitType::Flags(_) => WasmTypeKind::Flags,
            WitType::Unsupported(_) => WasmTypeKind::Unsupported,
        }
    }

    fn list_element_type(&self) -> Option<Self> {
        match self {
            WitType::List(t) => Some((**t).clone()),
            _ => None,
        }
    }

    fn record_fields(&self) -> Box<dyn Iterator<Item = (Cow<'_, str>, Self)> + '_> {
        match self {
            WitType::Record(fields) => {
                Box::new(fields.iter().map(|(n, t)| (Cow::Borrowed(n.as_str()), t.clone())))
            }
            _ => Box::new(std::iter::empty()),
        }
    }

    fn tuple_element_types(&self) -> Box<dyn Iterator<Item = Self> + '_> {
        match self {
            WitType::Tuple(items) => Box::new(items.iter().cloned()),
            _ => Box::new(std::iter::empty()),
        }
    }

    fn variant_cases(&self) -> Box<dyn Iterator<Item = (Cow<'_, str>, Option<Self>)> + '_> {
        match self {
            WitType::Variant(cases) => {
                Box::new(cases.iter().map(|(n, t)| (Cow::Borrowed(n.as_str()), t.clone())))
            }
            _ => Box::new(std::iter::empty()),
        }
    }

    fn enum_cases(&self) -> Box<dyn Iterator<Item = Cow<'_, str>> + '_> {
        match self {
            WitType::Enum(cases) => Box::new(cases.iter().map(|c| Cow::Borrowed(c.as_str()))),
            _ => Box::new(std::iter::empty()),
        }
    }

    fn option_some_type(&self) -> Option<Self> {
        match self {
            WitType::Option(t) => Some((**t).clone()),
            _ => None,
        }
    }

    fn result_types(&self) -> Option<(Option<Self>, Option<Self>)> {
        match self {
            WitType::Result(ok, err) => Some((ok.as_deref().cloned(), err.as_deref().cloned())),
            _ => None,
        }
    }

    fn flags_names(&self) -> Box<dyn Iterator<Item = Cow<'_, str>> + '_> {
        match self {
            WitType::Flags(names) => Box::new(names.iter().map(|c| Cow::Borrowed(c.as_str()))),
            _ => Box::new(std::iter::empty()),
        }
    }
}

/// A JSON value (in the shape [`WitType::json_schema`] describes) converted to a value of
/// type `ty`: a Wasmtime `Val` in the sandbox, a WAVE value where only checking matters. The
/// error names the path to the part that does not fit (`o.tags[2]`).
pub fn json_to_value<V: WasmValue>(ty: &V::Type, v: &J, path: &str) -> Result<V, String> {
    let bad = |want: &str| format!("{path}: expected {want}, got {}", excerpt(v));
    let int = |min: i128, max: i128| -> Result<i128, String> {
        let n = v.as_i64().map(i128::from).or_else(|| v.as_u64().map(i128::from));
        match n {
            Some(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(bad(&format!("an integer in {min}..={max}"))),
        }
    };
    let typed =
        |r: Result<V, wasm_wave::wasm::WasmValueError>| r.map_err(|e| format!("{path}: {e}"));
    let sub = |dot: &str| if path.is_empty() { dot.to_string() } else { format!("{path}.{dot}") };
    // Each narrowing conversion is checked against the bounds just above it.
    #[allow(clippy::cast_possible_truncation)]
    Ok(match ty.kind() {
        WasmTypeKind::Bool => V::make_bool(v.as_bool().ok_or_else(|| bad("a boolean"))?),
        WasmTypeKind::S8 => V::make_s8(int(i8::MIN.into(), i8::MAX.into())? as i8),
        WasmTypeKind::U8 => V::make_u8(int(0, u8::MAX.into())? as u8),
        WasmTypeKind::S16 => V::make_s16(int(i16::MIN.into(), i16::MAX.into())? as i16),
        WasmTypeKind::U16 => V::make_u16(int(0, u16::MAX.into())? as u16),
        WasmTypeKind::S32 => V::make_s32(int(i32::MIN.into(), i32::MAX.into())? as i32),
        WasmTypeKind::U32 => V::make_u32(int(0, u32::MAX.into())? as u32),
        WasmTypeKind::S64 => V::make_s64(int(i64::MIN.into(), i64::MAX.into())? as i64),
        WasmTypeKind::U64 => V::make_u64(int(0, u64::MAX.into())? as u64),
        WasmTypeKind::F32 => V::make_f32(v.as_f64().ok_or_else(|| bad("a number"))? as f32),
        WasmTypeKind::F64 => V::make_f64(v.as_f64().ok_or_else(|| bad("a number"))?),
        WasmTypeKind::Char => {
            let text = v.as_str().ok_or_else(|| bad("a one-character string"))?;
            let mut chars = text.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => V::make_char(c),
                _ => return Err(bad("a one-character string")),
            }
        }
        WasmTypeKind::String => {
            V::make_string(Cow::Borrowed(v.as_str().ok_or_else(|| bad("a string"))?))
        }
        WasmTypeKind::List => {
            let items = v.as_array().ok_or_else(|| bad("an array"))?;
            let elem = ty.list_element_type().ok_or_else(|| bad("a list"))?;
            let vals = items
                .iter()
                .enumerate()
                .map(|(i, item)| json_to_value::<V>(&elem, item, &format!("{path}[{i}]")))
                .collect::<Result<Vec<_>, _>>()?;
            typed(V::make_list(ty, vals))?
        }
        WasmTypeKind::Tuple => {
            let items = v.as_array().ok_or_else(|| bad("an array"))?;
            let types: Vec<V::Type> = ty.tuple_element_types().collect();
            if items.len() != types.len() {
                return Err(bad(&format!("an array of {}", types.len())));
            }
            let vals = types
                .iter()
                .zip(items)
                .enumerate()
                .map(|(i, (t, item))| json_to_value::<V>(t, item, &format!("{path}[{i}]")))
                .collect::<Result<Vec<_>, _>>()?;
            typed(V::make_tuple(ty, vals))?
        }
        WasmTypeKind::Record => {
            let fields: Vec<(String, V::Type)> =
                ty.record_fields().map(|(n, t)| (n.into_owned(), t)).collect();
            let vals = members::<V>(&fields, v, path)?;
            typed(V::make_record(ty, vals.iter().map(|(n, v)| (n.as_str(), v.clone()))))?
        }
        WasmTypeKind::Variant => {
            let (name, payload) = match v {
                J::String(name) => (name.as_str(), None),
                J::Object(m) if m.len() == 1 => {
                    let (k, p) = m.iter().next().ok_or_else(|| bad("a variant case"))?;
                    (k.as_str(), Some(p))
                }
                _ => return Err(bad("a case name or {\"case\": payload}")),
            };
            let case = ty
                .variant_cases()
                .find(|(n, _)| n == name)
                .map(|(_, t)| t)
                .ok_or_else(|| format!("{path}: no case `{name}`"))?;
            let payload = match (case, payload) {
                (None, None) => None,
                (Some(t), Some(p)) => Some(json_to_value::<V>(&t, p, &sub(name))?),
                (None, Some(_)) => return Err(format!("{path}: case `{name}` has no payload")),
                (Some(_), None) => return Err(format!("{path}: case `{name}` needs a payload")),
            };
            typed(V::make_variant(ty, name, payload))?
        }
        WasmTypeKind::Enum => {
            let name = v.as_str().ok_or_else(|| bad("a string"))?;
            if !ty.enum_cases().any(|n| n == name) {
                return Err(format!("{path}: no case `{name}`"));
            }
            typed(V::make_enum(ty, name))?
        }
        WasmTypeKind::Option => {
            let some = ty.option_some_type().ok_or_else(|| bad("an option"))?;
            let inner = match v {
                J::Null => None,
                v => Some(json_to_value::<V>(&some, v, path)?),
            };
            typed(V::make_option(ty, inner))?
        }
        WasmTypeKind::Result => {
            let want = "{\"ok\": …} or {\"err\": …}";
            let (ok, err) = ty.result_types().ok_or_else(|| bad("a result"))?;
            let m = v.as_object().filter(|m| m.len() == 1).ok_or_else(|| bad(want))?;
            let side = |t: Option<V::Type>, p: &J, name: &str| match t {
                None => Ok(None),
                Some(t) => json_to_value::<V>(&t, p, &sub(name)).map(Some),
            };
            let val = match (m.get("ok"), m.get("err")) {
                (Some(p), None) => Ok(side(ok, p, "ok")?),
                (None, Some(p)) => Err(side(err, p, "err")?),
                _ => return Err(bad(want)),
            };
            typed(V::make_result(ty, val))?
        }
        WasmTypeKind::Flags => {
            let items = v.as_array().ok_or_else(|| bad("an array of flag names"))?;
            let mut set = Vec::new();
            for item in items {
                let name = item.as_str().ok_or_else(|| bad("an array of flag names"))?;
                if !ty.flags_names().any(|n| n == name) {
                    return Err(format!("{path}: no flag `{name}`"));
                }
                set.push(name);
            }
            typed(V::make_flags(ty, set))?
        }
        _ => return Err(format!("{path}: this type cannot be passed as JSON")),
    })
}

/// Named members from a JSON object (or, for parameters, an array in order): every one
/// present unless it is an `option` (absent is `none`), and nothing else.
pub fn members<V: WasmValue>(
    members: &[(String, V::Type)],
    v: &J,
    path: &str,
) -> Result<Vec<(String, V)>, String> {
    let dot =
        |name: &str| if path.is_empty() { name.to_string() } else { format!("{path}.{name}") };
    match v {
        J::Object(m) => {
            if let Some(extra) = m.keys().find(|k| !members.iter().any(|(n, _)| n == *k)) {
                return Err(format!("{}: unknown member", dot(extra)));
            }
            members
                .iter()
                .map(|(name, ty)| {
                    let value = match m.get(name) {
                        Some(v) => json_to_value::<V>(ty, v, &dot(name))?,
                        None if ty.kind() == WasmTypeKind::Option => {
                            V::make_option(ty, None).map_err(|e| format!("{}: {e}", dot(name)))?
                        }
                        None => return Err(format!("{}: missing", dot(name))),
                    };
                    Ok((name.clone(), value))
                })
                .collect()
        }
        J::Array(items) if items.len() == members.len() => members
            .iter()
            .zip(items)
            .map(|((name, ty), item)| Ok((name.clone(), json_to_value::<V>(ty, item, &dot(name))?)))
            .collect(),
        other => Err(format!(
            "{}: expected an object of {} members, got {}",
            if path.is_empty() { "arguments" } else { path },
            members.len(),
            excerpt(other)
        )),
    }
}

/// A JSON value for an error message, cut to a readable length.
fn excerpt(v: &J) -> String {
    let text = v.to_string();
    match text.char_indices().nth(80) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_wave::value::Value;

    fn order() -> WitType {
        WitType::Record(vec![
            ("id".into(), WitType::U32),
            ("tags".into(), WitType::List(Box::new(WitType::String))),
            ("note".into(), WitType::Option(Box::new(WitType::String))),
            ("color".into(), WitType::Enum(vec!["red".into(), "blue".into()])),
        ])
    }

    #[test]
    fn json_is_checked_against_the_type_with_a_path_to_what_does_not_fit() {
        let ty = order().to_wave().unwrap();
        let ok = json!({"id": 7, "tags": ["a"], "color": "red"});
        assert!(json_to_value::<Value>(&ty, &ok, "o").is_ok());
        let cases = [
            (
                json!({"id": -1, "tags": [], "color": "red"}),
                "o.id: expected an integer in 0..=4294967295",
            ),
            (json!({"id": 1, "tags": ["a", 2], "color": "red"}), "o.tags[1]: expected a string"),
            (json!({"id": 1, "tags": [], "color": "green"}), "o.color: no case `green`"),
            (json!({"id": 1, "tags": []}), "o.color: missing"),
            (json!({"id": 1, "tags": [], "color": "red", "x": 1}), "o.x: unknown member"),
        ];
        for (value, want) in cases {
            let err = json_to_value::<Value>(&ty, &value, "o").unwrap_err();
            assert!(err.starts_with(want), "{err} (wanted {want})");
        }
    }

    #[test]
    fn the_wire_form_round_trips_and_spells_wit() {
        let ty = WitType::Result(Some(Box::new(WitType::F64)), Some(Box::new(WitType::String)));
        let back: WitType = serde_json::from_str(&serde_json::to_string(&ty).unwrap()).unwrap();
        assert_eq!(back, ty);
        assert_eq!(ty.to_string(), "result<f64, string>");
        assert_eq!(
            order().to_string(),
            "record { id: u32, tags: list<string>, note: option<string>, color: enum { red, blue } }"
        );
        assert_eq!(WitType::Unsupported("own<resource>".into()).to_wave(), None);
    }

    #[test]
    fn an_optional_member_may_be_left_out_but_not_a_required_one() {
        let schema = order().json_schema();
        assert_eq!(schema["required"], json!(["id", "tags", "color"]));
        assert_eq!(schema["properties"]["note"]["anyOf"][1], json!({"type": "null"}));
    }
}
