//! [`CompileLimits`]: what a component may hold, and how long and how much memory its
//! compile may take.

use std::time::Duration;

use super::ComponentCost;

/// Limits on what a component may hold before it is compiled, and on the compile.
///
/// The defaults are far above every real guest measured here (the 18 MB Python and
/// 12 MB JavaScript components included; see docs/security.md, "Compiles") and below
/// what makes a compile bomb. Each can be set by its key with [`CompileLimits::set`]
/// (`--compile-limit KEY=VALUE` on the command line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileLimits {
    /// Bytes of function bodies in all core modules together (`max-code-size`).
    pub max_code_bytes: u64,
    /// Functions with a body, plus canonical-ABI functions, in all core modules and
    /// components together (`max-functions`).
    pub max_functions: u64,
    /// Bytes of the largest function body (`max-function-size`).
    pub max_function_bytes: u64,
    /// Locals of one function, parameters excluded (`max-locals`).
    pub max_locals: u64,
    /// Depth of nested blocks, loops and ifs in one function (`max-nesting`).
    pub max_nesting: u64,
    /// Bytes of data segments in all core modules together (`max-data-size`).
    pub max_data_bytes: u64,
    /// Items of element segments in all core modules together (`max-elements`).
    pub max_elements: u64,
    /// Core modules, nested ones included (`max-modules`).
    pub max_modules: u64,
    /// Components nested inside the plugin's component (`max-components`;
    /// componentize-py nests two, componentize-js one). Set it to 0 to refuse composed
    /// components, whose calls between components go through the adapters of
    /// GHSA-6fr9-xmw9-5352 (docs/security.md).
    pub max_components: u64,
    /// Core and component instances (`max-instances`).
    pub max_instances: u64,
    /// Core and component types (`max-types`).
    pub max_types: u64,
    /// Wall time one compile may take, with a [`CompileWorker`] (`compile-time`, in
    /// milliseconds or with an `s` suffix).
    pub time: Duration,
    /// Memory one compile may use (`RLIMIT_DATA` of the worker, the component's own
    /// bytes included), with a [`CompileWorker`] (`compile-memory`).
    pub memory_bytes: u64,
}

impl Default for CompileLimits {
    fn default() -> Self {
        CompileLimits {
            max_code_bytes: 64 << 20,
            max_functions: 200_000,
            max_function_bytes: 2 << 20,
            max_locals: 20_000,
            max_nesting: 5_000,
            max_data_bytes: 64 << 20,
            max_elements: 1_000_000,
            max_modules: 100,
            max_components: 16,
            max_instances: 1_000,
            max_types: 100_000,
            time: Duration::from_secs(120),
            memory_bytes: 4 << 30,
        }
    }
}

/// One of the [`CompileLimits`], as errors and flags name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CompileLimit {
    /// [`CompileLimits::max_code_bytes`].
    CodeSize,
    /// [`CompileLimits::max_functions`].
    Functions,
    /// [`CompileLimits::max_function_bytes`].
    FunctionSize,
    /// [`CompileLimits::max_locals`].
    Locals,
    /// [`CompileLimits::max_nesting`].
    Nesting,
    /// [`CompileLimits::max_data_bytes`].
    DataSize,
    /// [`CompileLimits::max_elements`].
    Elements,
    /// [`CompileLimits::max_modules`].
    Modules,
    /// [`CompileLimits::max_components`].
    Components,
    /// [`CompileLimits::max_instances`].
    Instances,
    /// [`CompileLimits::max_types`].
    Types,
    /// [`CompileLimits::time`].
    Time,
    /// [`CompileLimits::memory_bytes`].
    Memory,
}

impl CompileLimit {
    /// Every limit, in the order of [`CompileLimits`]' fields.
    pub const ALL: [CompileLimit; 13] = [
        CompileLimit::CodeSize,
        CompileLimit::Functions,
        CompileLimit::FunctionSize,
        CompileLimit::Locals,
        CompileLimit::Nesting,
        CompileLimit::DataSize,
        CompileLimit::Elements,
        CompileLimit::Modules,
        CompileLimit::Components,
        CompileLimit::Instances,
        CompileLimit::Types,
        CompileLimit::Time,
        CompileLimit::Memory,
    ];

    /// The key that names it in errors and in `--compile-limit KEY=VALUE`.
    pub fn key(self) -> &'static str {
        match self {
            CompileLimit::CodeSize => "max-code-size",
            CompileLimit::Functions => "max-functions",
            CompileLimit::FunctionSize => "max-function-size",
            CompileLimit::Locals => "max-locals",
            CompileLimit::Nesting => "max-nesting",
            CompileLimit::DataSize => "max-data-size",
            CompileLimit::Elements => "max-elements",
            CompileLimit::Modules => "max-modules",
            CompileLimit::Components => "max-components",
            CompileLimit::Instances => "max-instances",
            CompileLimit::Types => "max-types",
            CompileLimit::Time => "compile-time",
            CompileLimit::Memory => "compile-memory",
        }
    }

    /// What a component holds, in words: "its largest function has 2000000 bytes of
    /// code".
    pub(crate) fn describe(self, value: u64) -> String {
        match self {
            CompileLimit::CodeSize => format!("its functions have {value} bytes of code in all"),
            CompileLimit::Functions => format!("it has {value} functions"),
            CompileLimit::FunctionSize => format!("its largest function has {value} bytes of code"),
            CompileLimit::Locals => format!("one of its functions has {value} locals"),
            CompileLimit::Nesting => format!("one of its functions nests blocks {value} deep"),
            CompileLimit::DataSize => format!("its data segments hold {value} bytes"),
            CompileLimit::Elements => format!("its element segments hold {value} items"),
            CompileLimit::Modules => format!("it holds {value} core modules"),
            CompileLimit::Components => format!("it holds {value} nested components"),
            CompileLimit::Instances => format!("it makes {value} instances"),
            CompileLimit::Types => format!("it defines {value} types"),
            CompileLimit::Time => format!("its compile ran for more than {value} ms"),
            CompileLimit::Memory => format!("its compile needed more than {value} bytes of memory"),
        }
    }
}

impl CompileLimit {
    /// What to do about a component over this limit.
    pub(crate) fn advice(self) -> String {
        let key = self.key();
        match self {
            CompileLimit::Components => format!(
                "plugins are single components (compose them before building, or raise \
                 `{key}` once wasmtime is past 48.0.8: see docs/security.md)"
            ),
            _ => format!(
                "rebuild it smaller (a release build, optimised for size), or raise the limit \
                 if you trust it (`--compile-limit {key}=N`, `CompileLimits`)"
            ),
        }
    }
}

impl std::fmt::Display for CompileLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.key())
    }
}

impl CompileLimits {
    /// The value of one limit (the time in milliseconds).
    pub fn get(&self, limit: CompileLimit) -> u64 {
        match limit {
            CompileLimit::CodeSize => self.max_code_bytes,
            CompileLimit::Functions => self.max_functions,
            CompileLimit::FunctionSize => self.max_function_bytes,
            CompileLimit::Locals => self.max_locals,
            CompileLimit::Nesting => self.max_nesting,
            CompileLimit::DataSize => self.max_data_bytes,
            CompileLimit::Elements => self.max_elements,
            CompileLimit::Modules => self.max_modules,
            CompileLimit::Components => self.max_components,
            CompileLimit::Instances => self.max_instances,
            CompileLimit::Types => self.max_types,
            CompileLimit::Time => u64::try_from(self.time.as_millis()).unwrap_or(u64::MAX),
            CompileLimit::Memory => self.memory_bytes,
        }
    }

    /// Sets one limit from its key and a value as the command line spells it: a count,
    /// a size (`2MiB`) for sizes and memory, milliseconds or seconds (`90s`) for time.
    ///
    /// # Errors
    ///
    /// The reason, naming the key, when the key is unknown or the value does not parse.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let limit = CompileLimit::ALL
            .into_iter()
            .find(|l| l.key() == key)
            .ok_or_else(|| {
                let keys: Vec<_> = CompileLimit::ALL.iter().map(|l| l.key()).collect();
                format!(
                    "unknown compile limit `{key}`: expected one of {}",
                    keys.join(", ")
                )
            })?;
        let bad = |why: String| format!("compile limit `{key}` = `{value}`: {why}");
        let n = match limit {
            CompileLimit::Time => {
                let (digits, scale) = match value.strip_suffix("ms") {
                    Some(ms) => (ms, 1),
                    None => match value.strip_suffix('s') {
                        Some(s) => (s, 1000),
                        None => (value, 1),
                    },
                };
                digits
                    .trim()
                    .parse::<u64>()
                    .map_err(|e| bad(e.to_string()))?
                    .saturating_mul(scale)
            }
            CompileLimit::CodeSize
            | CompileLimit::FunctionSize
            | CompileLimit::DataSize
            | CompileLimit::Memory => crate::sandbox::limits::parse_size(value).map_err(bad)?,
            _ => value
                .trim()
                .replace('_', "")
                .parse::<u64>()
                .map_err(|e| bad(e.to_string()))?,
        };
        if n == 0 && limit != CompileLimit::Components {
            return Err(bad("a limit must be above zero".into()));
        }
        let field = match limit {
            CompileLimit::CodeSize => &mut self.max_code_bytes,
            CompileLimit::Functions => &mut self.max_functions,
            CompileLimit::FunctionSize => &mut self.max_function_bytes,
            CompileLimit::Locals => &mut self.max_locals,
            CompileLimit::Nesting => &mut self.max_nesting,
            CompileLimit::DataSize => &mut self.max_data_bytes,
            CompileLimit::Elements => &mut self.max_elements,
            CompileLimit::Modules => &mut self.max_modules,
            CompileLimit::Components => &mut self.max_components,
            CompileLimit::Instances => &mut self.max_instances,
            CompileLimit::Types => &mut self.max_types,
            CompileLimit::Time => {
                self.time = Duration::from_millis(n);
                return Ok(());
            }
            CompileLimit::Memory => &mut self.memory_bytes,
        };
        *field = n;
        Ok(())
    }

    /// The first limit `cost` breaks, with its value.
    pub fn exceeded(&self, cost: &ComponentCost) -> Option<(CompileLimit, u64)> {
        CompileLimit::ALL
            .into_iter()
            .filter_map(|limit| Some((limit, cost.get(limit)?)))
            .find(|&(limit, value)| value > self.get(limit))
    }
}
