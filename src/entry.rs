//! Entry points: what a task calls in the warm instance — the command's `_start`, or an export
//! named with `--invoke` (as `wasmtime run --invoke` does for core modules) — and the
//! descriptions of a template's exports that let a host check a task before it is started.
//! Nothing here depends on Wasmtime: the host side of the fork server uses it too.

use crate::wit_type::WitType;
use serde::{Deserialize, Serialize};
use wasm_wave::untyped::UntypedFuncCall;

/// The export a reactor module, or a Wizer-style initialiser, names for start-up.
pub const INITIALIZE: &str = "_initialize";
/// Wizer's initialiser names (`wizer.initialize` and the older `wizer-initialize`).
pub const WIZER_INITIALIZE: [&str; 2] = ["wizer.initialize", "wizer-initialize"];
/// The per-fork reseed hook: `(i64, i64) -> ()`, called in every sandbox, before the task's
/// entry point, with 128 fresh bits from the operating system — in a sandbox forked ahead of
/// its task, while it waits for that task, with none of the task's context.
pub const RESEED: &str = "zeroboot-reseed";

/// What the zygote runs once, after instantiating the module and before the first fork, so
/// that every sandbox starts from the initialised memory: the guest's own start-up (a
/// language runtime, an interpreter, a parsed configuration) is done once per template, not
/// once per task.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WarmUp {
    /// A reactor's `_initialize` if exported, then the module's Wizer initialiser
    /// (`wizer.initialize`, or the older `wizer-initialize`) if it exports one.
    #[default]
    Auto,
    /// `_initialize` if exported, then this export (`() -> ()`; it must exist).
    Export(String),
    /// Nothing in the zygote: each sandbox runs `_initialize` (if exported) itself, as
    /// `wasmtime run` does, and a command's `_start` does all of its start-up per task.
    Off,
}

/// A WebAssembly value type, as far as a caller of `--invoke` needs to know it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValKind {
    I32,
    I64,
    F32,
    F64,
    V128,
    /// A reference type (no scalar argument can be given for it), by its Wasm name.
    Ref(String),
    /// A component-model value, by its WIT type (given in WAVE syntax to `--invoke`, or as
    /// JSON arguments).
    Wit(WitType),
}

impl std::fmt::Display for ValKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ValKind::I32 => f.write_str("i32"),
            ValKind::I64 => f.write_str("i64"),
            ValKind::F32 => f.write_str("f32"),
            ValKind::F64 => f.write_str("f64"),
            ValKind::V128 => f.write_str("v128"),
            ValKind::Ref(name) => f.write_str(name),
            ValKind::Wit(ty) => write!(f, "{ty}"),
        }
    }
}

/// An exported function's name and type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportedFunc {
    pub name: String,
    pub params: Vec<ValKind>,
    /// The parameters' names, where the type system has them (a component's functions).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub param_names: Vec<String>,
    pub results: Vec<ValKind>,
}

/// The two kinds of WebAssembly binary a template can be built from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuestKind {
    /// A core module (WASI preview1: `_start`, reactors, scalar exports).
    #[default]
    Module,
    /// A component (WASI preview2: `wasi:cli/run`, typed exports), what
    /// `cargo build --target wasm32-wasip2` produces.
    Component,
}

impl GuestKind {
    /// The kind of `bytes`, from the binary header's layer field (`\0asm`, a 2-byte version, a
    /// 2-byte layer: 0 for a core module, 1 for a component), or for WebAssembly text from its
    /// first form (`(component` or `(module`). `None`: neither binary WebAssembly nor text.
    ///
    /// The one place the runtime tells the kinds apart.
    pub fn detect(bytes: &[u8]) -> Option<Self> {
        if let Some(header) = bytes.strip_prefix(b"\0asm") {
            return Some(match header.get(2..4) {
                Some([1, 0]) => GuestKind::Component,
                _ => GuestKind::Module,
            });
        }
        let text = std::str::from_utf8(bytes).ok()?;
        // Skip whitespace and `;;` line comments to the first form.
        let mut rest = text.trim_start();
        while let Some(comment) = rest.strip_prefix(";;") {
            rest = comment.split_once('\n').map_or("", |(_, r)| r).trim_start();
        }
        if !(rest.starts_with('(') || text.trim_start().starts_with(";;")) {
            return None;
        }
        let form = rest.trim_start_matches('(').trim_start();
        Some(if form.starts_with("component") { GuestKind::Component } else { GuestKind::Module })
    }

    /// `module` or `component`, as messages and `inspect` name it.
    pub fn as_str(self) -> &'static str {
        match self {
            GuestKind::Module => "module",
            GuestKind::Component => "component",
        }
    }
}

/// What a template exports that a task can call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exports {
    /// A core module or a component.
    #[serde(default)]
    pub kind: GuestKind,
    /// It is a command: it exports `_start: () -> ()` (a module) or `wasi:cli/run` (a
    /// component).
    pub start: bool,
    /// Every exported function, `_start` included.
    pub funcs: Vec<ExportedFunc>,
}

/// A scalar argument of an invoked export, parsed from its text.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scalar {
    I32(i32),
    I64(i64),
    /// The bits of an `f32`.
    F32(u32),
    /// The bits of an `f64`.
    F64(u64),
}

/// Why a task's entry point cannot be called.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// No `--invoke`, and the module has no `_start` (a reactor).
    #[error(
        "module {module} has no `_start` (it is a reactor, not a command): name an export to call with --invoke"
    )]
    NoStart { module: String },
    /// `--invoke NAME`, and no function `NAME` is exported.
    #[error("module {module} exports no function named `{name}`")]
    NoSuchExport { module: String, name: String },
    /// Fewer arguments than the export takes.
    #[error("not enough arguments for `{name}`: it takes {wanted} ({types}), {given} given")]
    TooFewArgs { name: String, wanted: usize, given: usize, types: String },
    /// An argument that does not parse as its parameter's type.
    #[error("argument {index} of `{name}` ({value:?}) is not a valid {kind}")]
    BadArg { name: String, index: usize, value: String, kind: ValKind },
    /// A component export named by its function name alone, held by several interfaces.
    #[error("component {module} exports several functions named `{name}`: {}; name one as interface#function", candidates.join(", "))]
    AmbiguousExport { module: String, name: String, candidates: Vec<String> },
    /// A component `--invoke` call that is not valid WAVE, or whose arguments do not match
    /// the export's parameters.
    #[error("cannot call `{call}`: {detail}")]
    BadCall { call: String, detail: String },
    /// A parameter of a type no text argument can give (v128, references).
    #[error("`{name}` takes a {kind} parameter, which --invoke cannot pass")]
    Unsupported { name: String, kind: ValKind },
}

impl Exports {
    /// The function `name`, if exported.
    pub fn func(&self, name: &str) -> Option<&ExportedFunc> {
        self.funcs.iter().find(|f| f.name == name)
    }

    /// Checks that a task with these `invoke`, `args` and JSON `arguments` can be called:
    /// `_start` exists without `--invoke`; with it, the export exists and the arguments fit
    /// its parameters (a module's as text `args`; a component's as the call's WAVE, or the
    /// JSON `arguments`). `module` names the module in messages.
    pub fn check(
        &self,
        module: &str,
        invoke: Option<&str>,
        args: &[String],
        arguments: Option<&serde_json::Value>,
    ) -> Result<(), EntryError> {
        match invoke {
            None if self.start => Ok(()),
            None => Err(EntryError::NoStart { module: module.to_string() }),
            Some(call) if self.kind == GuestKind::Component => {
                let func = self.component_func(module, call_name(call))?;
                check_call(func, call, arguments)
            }
            Some(name) => {
                let func = self.func(name).ok_or_else(|| EntryError::NoSuchExport {
                    module: module.to_string(),
                    name: name.to_string(),
                })?;
                parse_args(func, args).map(drop)
            }
        }
    }
}

/// Checks a component call's arguments against the export's WIT parameters — the WAVE
/// values in `call` (`add(1, 2)`), or the JSON `arguments` — with the same parser and the
/// same messages as the sandbox that will make the call, so that a call that cannot fit is
/// refused before any sandbox is started.
fn check_call(
    func: &ExportedFunc,
    call: &str,
    arguments: Option<&serde_json::Value>,
) -> Result<(), EntryError> {
    let bad = |detail: String| EntryError::BadCall { call: call.to_string(), detail };
    let mut params = Vec::with_capacity(func.params.len());
    for (i, kind) in func.params.iter().enumerate() {
        let ValKind::Wit(ty) = kind else { return Ok(()) };
        let Some(wave) = ty.to_wave() else {
            return Err(EntryError::Unsupported { name: func.name.clone(), kind: kind.clone() });
        };
        let name = func.param_names.get(i).cloned().unwrap_or_else(|| i.to_string());
        params.push((name, wave));
    }
    match arguments {
        Some(json) => {
            crate::wit_type::members::<wasm_wave::value::Value>(&params, json, "").map_err(bad)?;
        }
        None => {
            let text = if call.contains('(') { call.to_string() } else { format!("{call}()") };
            let parsed = UntypedFuncCall::parse(&text).map_err(|e| bad(e.to_string()))?;
            parsed
                .to_wasm_params::<wasm_wave::value::Value>(params.iter().map(|(_, t)| t))
                .map_err(|e| bad(e.to_string()))?;
        }
    }
    Ok(())
}

/// The function name of a component `--invoke` call: `add(1, 2)` → `add`, `bump` → `bump`.
pub fn call_name(call: &str) -> &str {
    call.split_once('(').map_or(call, |(name, _)| name).trim()
}

impl Exports {
    /// The component export `name` picks: one of that exact name (a root function, or
    /// `interface#function`), else the only interface function so named.
    pub fn component_func(&self, module: &str, name: &str) -> Result<&ExportedFunc, EntryError> {
        if let Some(f) = self.func(name) {
            return Ok(f);
        }
        let suffix = format!("#{name}");
        let matches: Vec<&ExportedFunc> =
            self.funcs.iter().filter(|f| f.name.ends_with(&suffix)).collect();
        match matches.as_slice() {
            [one] => Ok(one),
            [] => Err(EntryError::NoSuchExport { module: module.to_string(), name: name.into() }),
            many => Err(EntryError::AmbiguousExport {
                module: module.to_string(),
                name: name.to_string(),
                candidates: many.iter().map(|f| f.name.clone()).collect(),
            }),
        }
    }
}

/// Parses `args` as `func`'s parameters, the way `wasmtime run --invoke` does: integers in
/// decimal or `0x` hexadecimal, floats as Rust parses them. Extra arguments are left to the
/// guest (they are its `argv` too).
pub fn parse_args(func: &ExportedFunc, args: &[String]) -> Result<Vec<Scalar>, EntryError> {
    if args.len() < func.params.len() {
        return Err(EntryError::TooFewArgs {
            name: func.name.clone(),
            wanted: func.params.len(),
            given: args.len(),
            types: func.params.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
        });
    }
    func.params
        .iter()
        .zip(args)
        .enumerate()
        .map(|(index, (kind, text))| {
            let bad = || EntryError::BadArg {
                name: func.name.clone(),
                index,
                value: text.clone(),
                kind: kind.clone(),
            };
            let hex = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X"));
            match kind {
                ValKind::I32 => match hex {
                    Some(h) => i32::from_str_radix(h, 16),
                    None => text.parse(),
                }
                .map(Scalar::I32)
                .map_err(|_| bad()),
                ValKind::I64 => match hex {
                    Some(h) => i64::from_str_radix(h, 16),
                    None => text.parse(),
                }
                .map(Scalar::I64)
                .map_err(|_| bad()),
                ValKind::F32 => {
                    text.parse::<f32>().map(|f| Scalar::F32(f.to_bits())).map_err(|_| bad())
                }
                ValKind::F64 => {
                    text.parse::<f64>().map(|f| Scalar::F64(f.to_bits())).map_err(|_| bad())
                }
                other => {
                    Err(EntryError::Unsupported { name: func.name.clone(), kind: other.clone() })
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exports() -> Exports {
        Exports {
            kind: GuestKind::Module,
            start: false,
            funcs: vec![ExportedFunc {
                name: "add".into(),
                params: vec![ValKind::I32, ValKind::F64],
                param_names: vec![],
                results: vec![ValKind::I32],
            }],
        }
    }

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn arguments_parse_like_wasmtime() {
        let f = &exports().funcs[0];
        assert_eq!(
            parse_args(f, &args(&["0x10", "2.5", "extra"])).unwrap(),
            vec![Scalar::I32(16), Scalar::F64(2.5f64.to_bits())]
        );
        assert_eq!(parse_args(f, &args(&["-7", "1e3"])).unwrap()[0], Scalar::I32(-7));
        assert!(matches!(
            parse_args(f, &args(&["1"])),
            Err(EntryError::TooFewArgs { wanted: 2, given: 1, .. })
        ));
        assert!(matches!(
            parse_args(f, &args(&["4294967296", "1"])),
            Err(EntryError::BadArg { index: 0, kind: ValKind::I32, .. })
        ));
        assert!(matches!(
            parse_args(f, &args(&["1", "one"])),
            Err(EntryError::BadArg { index: 1, kind: ValKind::F64, .. })
        ));
    }

    #[test]
    fn a_reactor_needs_invoke_and_an_existing_export() {
        let e = exports();
        assert!(matches!(e.check("m", None, &[], None), Err(EntryError::NoStart { .. })));
        assert!(matches!(
            e.check("m", Some("sub"), &[], None),
            Err(EntryError::NoSuchExport { .. })
        ));
        assert_eq!(e.check("m", Some("add"), &args(&["1", "2"]), None), Ok(()));
        let command = Exports { start: true, ..exports() };
        assert_eq!(command.check("m", None, &[], None), Ok(()));
    }

    #[test]
    fn kinds_are_told_apart_by_the_layer_byte_or_the_first_form() {
        assert_eq!(GuestKind::detect(b"\0asm\x01\0\0\0"), Some(GuestKind::Module));
        assert_eq!(GuestKind::detect(b"\0asm\x0d\0\x01\0"), Some(GuestKind::Component));
        assert_eq!(GuestKind::detect(b";; hi\n(module)"), Some(GuestKind::Module));
        assert_eq!(GuestKind::detect(b"  (component)"), Some(GuestKind::Component));
        assert_eq!(GuestKind::detect(b"MZ\x90\0"), None);
        assert_eq!(GuestKind::detect(&[0xff, 0xfe]), None);
    }
}
