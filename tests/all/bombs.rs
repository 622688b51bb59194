//! Compile bombs, made at test time: a real guest's component with one more core module
//! appended, so that it still fits its world and links — only a limit stops it.

use wasm_encoder::{
    BlockType, CodeSection, ComponentSection, DataSection, ElementSection, Elements, Function,
    FunctionSection, InstanceSection, Instruction, Module, ModuleSection, TypeSection, ValType,
};

/// `guest`'s component with `sections` appended after it.
pub fn append(guest: &str, sections: &[&dyn Section]) -> Vec<u8> {
    let mut bytes = std::fs::read(guest).unwrap_or_else(|e| panic!("cannot read `{guest}`: {e}"));
    for section in sections {
        section.append_to(&mut bytes);
    }
    bytes
}

/// A component section, appended as its id and its encoding.
pub trait Section {
    fn append_to(&self, bytes: &mut Vec<u8>);
}

impl<S: ComponentSection> Section for S {
    fn append_to(&self, bytes: &mut Vec<u8>) {
        bytes.push(self.id());
        self.encode(bytes);
    }
}

/// A core module, as a section of its own.
pub struct Core(pub Module);

impl Section for Core {
    fn append_to(&self, bytes: &mut Vec<u8>) {
        ModuleSection(&self.0).append_to(bytes);
    }
}

/// `guest` with `module` appended: a plugin of its world that also holds `module`.
pub fn with_module(guest: &str, module: Module) -> Vec<u8> {
    append(guest, &[&Core(module)])
}

/// How many core modules the top level of `component` defines: the index the next
/// appended one gets.
pub fn top_level_modules(component: &[u8]) -> u32 {
    let mut depth = 0u32;
    let mut modules = 0;
    for payload in wasmparser::Parser::new(0).parse_all(component) {
        match payload.unwrap() {
            wasmparser::Payload::ModuleSection { .. } => {
                if depth == 0 {
                    modules += 1;
                }
                depth += 1;
            }
            wasmparser::Payload::ComponentSection { .. } => depth += 1,
            wasmparser::Payload::End(_) => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    modules
}

/// A module of the functions `bodies` makes, each `() -> ()` with `locals` i32 locals.
pub fn module_of(functions: u32, locals: u32, body: impl Fn(&mut Function, u32)) -> Module {
    let mut types = TypeSection::new();
    types.ty().function([], []);
    let mut funcs = FunctionSection::new();
    let mut code = CodeSection::new();
    for i in 0..functions {
        funcs.function(0);
        let mut f = Function::new(if locals > 0 {
            vec![(locals, ValType::I32)]
        } else {
            vec![]
        });
        body(&mut f, i);
        f.instruction(&Instruction::End);
        code.function(&f);
    }
    let mut module = Module::new();
    module.section(&types).section(&funcs).section(&code);
    module
}

/// One function of about `bytes` bytes of code (`i32.const 0; drop`, three bytes each).
pub fn large_function(bytes: u32) -> Module {
    module_of(1, 0, |f, _| {
        for _ in 0..bytes / 3 {
            f.instruction(&Instruction::I32Const(0))
                .instruction(&Instruction::Drop);
        }
    })
}

/// `count` empty functions.
pub fn many_functions(count: u32) -> Module {
    module_of(count, 0, |_, _| {})
}

/// One function with `count` locals.
pub fn many_locals(count: u32) -> Module {
    module_of(1, count, |_, _| {})
}

/// One function with blocks nested `depth` deep.
pub fn deep_nesting(depth: u32) -> Module {
    module_of(1, 0, |f, _| {
        for _ in 0..depth {
            f.instruction(&Instruction::Block(BlockType::Empty));
        }
        for _ in 0..depth {
            f.instruction(&Instruction::End);
        }
    })
}

/// A passive data segment of `bytes` bytes.
pub fn large_data(bytes: usize) -> Module {
    let mut data = DataSection::new();
    data.passive(vec![0u8; bytes]);
    let mut module = Module::new();
    module.section(&data);
    module
}

/// A passive element segment of `items` references to one function.
pub fn many_elements(items: usize) -> Module {
    let mut types = TypeSection::new();
    types.ty().function([], []);
    let mut funcs = FunctionSection::new();
    funcs.function(0);
    let mut elements = ElementSection::new();
    elements.passive(Elements::Functions(vec![0u32; items].into()));
    let mut code = CodeSection::new();
    let mut f = Function::new([]);
    f.instruction(&Instruction::End);
    code.function(&f);
    let mut module = Module::new();
    module
        .section(&types)
        .section(&funcs)
        .section(&elements)
        .section(&code);
    module
}

/// `count` function types.
pub fn many_types(count: u32) -> Module {
    let mut types = TypeSection::new();
    for i in 0..count {
        // Distinct types, so that nothing can fold them together.
        types.ty().function(
            vec![ValType::I32; (i % 8) as usize],
            vec![ValType::I64; (i / 8 % 4) as usize],
        );
    }
    let mut module = Module::new();
    module.section(&types);
    module
}

/// `guest` with `count` empty core modules appended.
pub fn with_modules(guest: &str, count: usize) -> Vec<u8> {
    let cores: Vec<Core> = (0..count).map(|_| Core(Module::new())).collect();
    let sections: Vec<&dyn Section> = cores.iter().map(|c| c as &dyn Section).collect();
    append(guest, &sections)
}

/// `guest` with an empty core module appended and instantiated `count` times.
pub fn with_instances(guest: &str, count: u32) -> Vec<u8> {
    let index = top_level_modules(&std::fs::read(guest).unwrap());
    let mut instances = InstanceSection::new();
    for _ in 0..count {
        instances.instantiate(index, Vec::<(&str, wasm_encoder::ModuleArg)>::new());
    }
    append(guest, &[&Core(Module::new()), &instances])
}

/// One function that keeps `locals` values live across `groups` adds: within the static
/// limits, and costly for an optimising compiler's register allocator (seconds and
/// hundreds of MiB for Cranelift).
pub fn costly_function(locals: u32, groups: u32) -> Module {
    module_of(1, locals, |f, _| {
        for i in 0..groups {
            let a = i.wrapping_mul(7) % locals;
            let b = i.wrapping_mul(13).wrapping_add(5) % locals;
            let c = i.wrapping_mul(31).wrapping_add(11) % locals;
            f.instruction(&Instruction::LocalGet(a))
                .instruction(&Instruction::LocalGet(b))
                .instruction(&Instruction::I32Add)
                .instruction(&Instruction::LocalSet(c));
        }
    })
}
