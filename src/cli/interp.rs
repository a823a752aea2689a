//! The interpreter guests — QuickJS and RustPython, built to wasm32-wasip1 from `guests/js`
//! and `guests/py` — and the `js` and `py` commands that run a snippet in one.
//!
//! Each interpreter module is an ordinary WASI command with a Wizer-style initialiser: the
//! zygote creates and warms the interpreter once (`wizer.initialize`), every sandbox is a fork
//! of it, and the reseed hook makes its random numbers differ per fork.

use super::CommonArgs;
use clap::Args;
use std::path::PathBuf;

/// An interpreter guest.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// JavaScript (QuickJS).
    Js,
    /// Python (RustPython).
    Py,
}

/// Where an interpreter module is looked for: this directory, when set, else the directory of
/// the `zeroboot-wasm` executable (the build scripts put them there).
pub const INTERPRETERS_ENV: &str = "ZEROBOOT_WASM_INTERPRETERS";

impl Lang {
    /// The module's file name.
    pub fn file_name(self) -> &'static str {
        match self {
            Lang::Js => "zeroboot-js.wasm",
            Lang::Py => "zeroboot-py.wasm",
        }
    }

    /// The guest's flag for code given in an argument.
    pub fn code_flag(self) -> &'static str {
        match self {
            Lang::Js => "-e",
            Lang::Py => "-c",
        }
    }

    /// The interpreter module's path, or a message saying where it was looked for.
    pub fn module(self) -> Result<PathBuf, String> {
        let dir = match std::env::var_os(INTERPRETERS_ENV) {
            Some(dir) => PathBuf::from(dir),
            None => std::env::current_exe()
                .ok()
                .and_then(|exe| exe.parent().map(PathBuf::from))
                .ok_or("cannot find the directory of this executable")?,
        };
        let path = dir.join(self.file_name());
        if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "the {} interpreter module {} is missing (build it with scripts/build-interpreters.sh, \
                 or set {INTERPRETERS_ENV} to the directory holding it)",
                match self {
                    Lang::Js => "JavaScript",
                    Lang::Py => "Python",
                },
                path.display()
            ))
        }
    }

    /// The guest's arguments for `code` followed by `args`.
    pub fn code_args(self, code: &str, args: &[String]) -> Vec<String> {
        [self.code_flag().to_string(), code.to_string()]
            .into_iter()
            .chain(args.iter().cloned())
            .collect()
    }
}

/// `zeroboot-wasm js` / `py`.
#[derive(Args, Debug)]
pub struct SnippetArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Capture stdout and stderr and print the outcome as one JSON object instead.
    #[arg(long)]
    json: bool,
    /// The code to run (JavaScript: `-e`; Python: `-c`). Without it, SCRIPT is read on the
    /// host and run; without either, the code is read from stdin.
    #[arg(short = 'e', short_alias = 'c', long = "eval", value_name = "CODE")]
    code: Option<String>,
    /// A script file (read here, on the host: it needs no --dir), then its arguments.
    #[arg(value_name = "SCRIPT_AND_ARGS", trailing_var_arg = true, allow_hyphen_values = true)]
    rest: Vec<String>,
}

/// Runs a snippet in the interpreter `lang`.
pub fn main(lang: Lang, a: SnippetArgs) -> i32 {
    let module = match lang.module() {
        Ok(m) => m,
        Err(e) => {
            eprintln!("zeroboot-wasm: error: {e}");
            return super::exit::NO_INPUT;
        }
    };
    let guest_args = match (&a.code, a.rest.split_first()) {
        (Some(code), _) => lang.code_args(code, &a.rest),
        (None, Some((script, args))) if script != "-" => match std::fs::read_to_string(script) {
            Ok(code) => lang.code_args(&code, args),
            Err(e) => {
                eprintln!("zeroboot-wasm: error: cannot read script {script}: {e}");
                return super::exit::NO_INPUT;
            }
        },
        // No code: the interpreter reads it from stdin (passed through).
        (None, _) => a.rest.clone(),
    };
    let argv0 = lang.file_name().trim_end_matches(".wasm").to_string();
    super::run::run_once(&a.common, module, guest_args, Some(argv0), a.json)
}

/// The benchmark's snippets, one per interpreter module found (a missing one is said on
/// stderr and left out).
pub fn bench_snippets() -> Vec<zeroboot_wasm::bench::SnippetSpec> {
    [(Lang::Js, "console.log(1+1)"), (Lang::Py, "print(1+1)")]
        .into_iter()
        .filter_map(|(lang, code)| match lang.module() {
            Ok(module) => Some(zeroboot_wasm::bench::SnippetSpec {
                name: lang.file_name().trim_end_matches(".wasm").to_string(),
                module,
                args: lang.code_args(code, &[]),
                expect_stdout: "2\n".to_string(),
            }),
            Err(e) => {
                eprintln!("zeroboot-wasm bench: leaving out the snippet row: {e}");
                None
            }
        })
        .collect()
}
