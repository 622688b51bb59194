//! [`ComponentCost`]: what a component holds, counted by `wasmparser` in one pass before
//! anything is compiled.

use super::CompileLimit;

/// What a component holds, as the [`CompileLimits`] count it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ComponentCost {
    /// Bytes of function bodies in all core modules.
    pub code_bytes: u64,
    /// Functions with a body, plus canonical-ABI functions.
    pub functions: u64,
    /// Bytes of the largest function body.
    pub largest_function: u64,
    /// Locals of the function with the most.
    pub most_locals: u64,
    /// The deepest nesting of blocks in one function.
    pub deepest_nesting: u64,
    /// Bytes of data segments.
    pub data_bytes: u64,
    /// Items of element segments.
    pub elements: u64,
    /// Core modules, nested ones included.
    pub modules: u64,
    /// Components nested in the outer one.
    pub components: u64,
    /// Core and component instances.
    pub instances: u64,
    /// Core and component types.
    pub types: u64,
}

impl ComponentCost {
    /// Counts what `bytes` hold, in one pass and without validating them (wasmtime
    /// validates what passes). Nested modules and components are counted in.
    ///
    /// # Errors
    ///
    /// wasmparser's error when the bytes cannot be parsed.
    pub fn measure(bytes: &[u8]) -> Result<ComponentCost, wasmparser::BinaryReaderError> {
        use wasmparser::{ElementItems, Operator, Payload};
        let mut cost = ComponentCost::default();
        let add = |total: &mut u64, n: u64| *total = total.saturating_add(n);
        let mut seen_outer = false;
        for payload in wasmparser::Parser::new(0).parse_all(bytes) {
            match payload? {
                Payload::Version { encoding, .. } => match encoding {
                    wasmparser::Encoding::Module => add(&mut cost.modules, 1),
                    // The first is the plugin's own component.
                    wasmparser::Encoding::Component if seen_outer => add(&mut cost.components, 1),
                    wasmparser::Encoding::Component => seen_outer = true,
                },
                Payload::CodeSectionEntry(body) => {
                    let size = body.range().len() as u64;
                    add(&mut cost.code_bytes, size);
                    add(&mut cost.functions, 1);
                    cost.largest_function = cost.largest_function.max(size);
                    let mut locals = 0u64;
                    for entry in body.get_locals_reader()? {
                        add(&mut locals, u64::from(entry?.0));
                    }
                    cost.most_locals = cost.most_locals.max(locals);
                    let (mut depth, mut deepest) = (0u64, 0u64);
                    let mut operators = body.get_operators_reader()?;
                    while !operators.eof() {
                        match operators.read()? {
                            Operator::Block { .. }
                            | Operator::Loop { .. }
                            | Operator::If { .. }
                            | Operator::TryTable { .. }
                            | Operator::Try { .. } => {
                                depth += 1;
                                deepest = deepest.max(depth);
                            }
                            Operator::End => depth = depth.saturating_sub(1),
                            _ => {}
                        }
                    }
                    cost.deepest_nesting = cost.deepest_nesting.max(deepest);
                }
                Payload::DataSection(reader) => {
                    for data in reader {
                        add(&mut cost.data_bytes, data?.data.len() as u64);
                    }
                }
                Payload::ElementSection(reader) => {
                    for element in reader {
                        let n = match element?.items {
                            ElementItems::Functions(f) => f.count(),
                            ElementItems::Expressions(_, e) => e.count(),
                        };
                        add(&mut cost.elements, u64::from(n));
                    }
                }
                Payload::TypeSection(reader) => {
                    for group in reader {
                        add(&mut cost.types, group?.types().count() as u64);
                    }
                }
                Payload::CoreTypeSection(reader) => add(&mut cost.types, u64::from(reader.count())),
                Payload::ComponentTypeSection(reader) => add(&mut cost.types, u64::from(reader.count())),
                Payload::InstanceSection(reader) => add(&mut cost.instances, u64::from(reader.count())),
                Payload::ComponentInstanceSection(reader) => {
                    add(&mut cost.instances, u64::from(reader.count()));
                }
                Payload::ComponentCanonicalSection(reader) => {
                    add(&mut cost.functions, u64::from(reader.count()));
                }
                _ => {}
            }
        }
        Ok(cost)
    }

    /// The figure a static limit is checked against; `None` for the compile's bounds.
    pub(super) fn get(&self, limit: CompileLimit) -> Option<u64> {
        Some(match limit {
            CompileLimit::CodeSize => self.code_bytes,
            CompileLimit::Functions => self.functions,
            CompileLimit::FunctionSize => self.largest_function,
            CompileLimit::Locals => self.most_locals,
            CompileLimit::Nesting => self.deepest_nesting,
            CompileLimit::DataSize => self.data_bytes,
            CompileLimit::Elements => self.elements,
            CompileLimit::Modules => self.modules,
            CompileLimit::Components => self.components,
            CompileLimit::Instances => self.instances,
            CompileLimit::Types => self.types,
            CompileLimit::Time | CompileLimit::Memory => return None,
        })
    }
}
