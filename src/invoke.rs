//! Calling a component's exported function by name, as `wasmtime run --invoke` does: the
//! call is written in WAVE (`add(1, 2)`, `greet({name: "x", tags: ["a"]})`), its arguments
//! typed by the export's WIT parameters, and its results printed in WAVE on stdout.

use crate::entry::EntryError;
use crate::schema::ComponentExport;
use crate::task::Task;
use crate::template::{TaskState, Template};
use wasmtime::Store;
use wasmtime::component::wasm_wave::untyped::UntypedFuncCall;
use wasmtime::component::wasm_wave::wasm::DisplayFuncResults;
use wasmtime::component::{Instance, Val};

/// Calls the export `call` names (a WAVE call; a bare name means no arguments) in the warm
/// instance and writes its results to stdout, one line.
pub(crate) async fn call_component_export(
    template: &Template,
    store: &mut Store<TaskState>,
    instance: Instance,
    call: &str,
    task: &Task,
) -> wasmtime::Result<()> {
    let module = template.name();
    if let Some(arguments) = &task.arguments {
        let export =
            find(template, crate::entry::call_name(call)).map_err(|e| e.into_entry(module))?;
        let params = crate::schema::json_to_params(&export.ty, arguments)
            .map_err(|detail| EntryError::BadCall { call: call.to_string(), detail })?;
        let results = call_export(store, instance, export, &params).await?;
        let text = format!("{}\n", crate::schema::results_to_json(&results));
        crate::sys::write_all(1, text.as_bytes())?;
        return Ok(());
    }
    let text = if call.contains('(') { call.to_string() } else { format!("{call}()") };
    let parsed = UntypedFuncCall::parse(&text)
        .map_err(|e| EntryError::BadCall { call: call.to_string(), detail: e.to_string() })?;
    let export = find(template, parsed.name()).map_err(|e| e.into_entry(module))?;
    let types: Vec<_> = export.ty.params().map(|(_, t)| t).collect();
    let params: Vec<Val> = parsed
        .to_wasm_params(&types)
        .map_err(|e| EntryError::BadCall { call: call.to_string(), detail: e.to_string() })?;
    let results = call_export(store, instance, export, &params).await?;
    let text = format!("{}\n", DisplayFuncResults(&results));
    crate::sys::write_all(1, text.as_bytes())?;
    Ok(())
}

/// Calls `export` with `params` and returns its results.
pub(crate) async fn call_export(
    store: &mut Store<TaskState>,
    instance: Instance,
    export: &ComponentExport,
    params: &[Val],
) -> wasmtime::Result<Vec<Val>> {
    let missing = || wasmtime::format_err!("export `{}` not found in the instance", export.name);
    let func = match &export.interface {
        None => instance.get_func(&mut *store, export.func.as_str()).ok_or_else(missing)?,
        Some(iface) => {
            let i = instance.get_export_index(&mut *store, None, iface).ok_or_else(missing)?;
            let f = instance
                .get_export_index(&mut *store, Some(&i), &export.func)
                .ok_or_else(missing)?;
            instance.get_func(&mut *store, f).ok_or_else(missing)?
        }
    };
    let mut results = vec![Val::Bool(false); export.ty.results().len()];
    func.call_async(&mut *store, params, &mut results).await?;
    Ok(results)
}

/// Why a name does not pick one export.
pub(crate) enum FindError {
    None(String),
    Ambiguous(String, Vec<String>),
}

impl FindError {
    pub(crate) fn into_entry(self, module: &str) -> EntryError {
        match self {
            FindError::None(name) => EntryError::NoSuchExport { module: module.to_string(), name },
            FindError::Ambiguous(name, candidates) => {
                EntryError::AmbiguousExport { module: module.to_string(), name, candidates }
            }
        }
    }
}

/// The export `name` picks: a root function of that name, an interface function written
/// `interface#name`, or the only interface function so named.
pub(crate) fn find<'a>(
    template: &'a Template,
    name: &str,
) -> Result<&'a ComponentExport, FindError> {
    let all = template.component_exports();
    if let Some(e) = all.iter().find(|e| e.name == name) {
        return Ok(e);
    }
    let matches: Vec<&ComponentExport> = all.iter().filter(|e| e.func == name).collect();
    match matches.as_slice() {
        [one] => Ok(one),
        [] => Err(FindError::None(name.to_string())),
        many => Err(FindError::Ambiguous(
            name.to_string(),
            many.iter().map(|e| e.name.clone()).collect(),
        )),
    }
}
