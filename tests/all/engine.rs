//! The engine's configuration: proposals no world needs and no guest here uses, and
//! component-model async, are turned off — a component that uses one is refused with a
//! reason that names it, before anything runs (docs/security.md, "wasmtime: version and
//! advisories").

use corral::LoadError;
use corral_test_guests as guests;
use wasm_encoder::{
    CanonicalFunctionSection, CompositeInnerType, CompositeType, ConstExpr, FuncType, Function,
    GlobalSection, GlobalType, HeapType, Instruction, MemorySection, MemoryType, Module, RefType, SubType,
    TypeSection, ValType,
};

use crate::bombs;

/// The reason `bytes` are refused as not valid.
#[track_caller]
fn refused(bytes: &[u8]) -> String {
    match crate::support::host().check("door", bytes) {
        Err(LoadError::Invalid { plugin, reason, .. }) => {
            assert_eq!(plugin, "door");
            reason
        }
        Err(other) => panic!("expected an invalid component, got: {other}"),
        Ok(_) => panic!("the component was accepted"),
    }
}

fn memory(ty: MemoryType) -> Module {
    let mut memories = MemorySection::new();
    memories.memory(ty);
    let mut module = Module::new();
    module.section(&memories);
    module
}

fn plain_memory() -> MemoryType {
    MemoryType {
        minimum: 1,
        maximum: None,
        memory64: false,
        shared: false,
        page_size_log2: None,
    }
}

/// A module with one function `() -> ()` whose body is `body`.
fn function(body: &[Instruction<'_>]) -> Module {
    bombs::module_of(1, 0, |f: &mut Function, _| {
        for i in body {
            f.instruction(i);
        }
    })
}

fn global(ty: ValType, init: ConstExpr) -> Module {
    let mut types = TypeSection::new();
    types.ty().function([], []);
    let mut globals = GlobalSection::new();
    globals.global(
        GlobalType {
            val_type: ty,
            mutable: false,
            shared: false,
        },
        &init,
    );
    let mut module = Module::new();
    module.section(&types).section(&globals);
    module
}

#[test]
fn a_component_using_a_proposal_turned_off_is_refused_naming_it() {
    let cases: Vec<(&str, Module, &str)> = vec![
        (
            "memory64",
            memory(MemoryType {
                memory64: true,
                ..plain_memory()
            }),
            "memory64",
        ),
        (
            "multi-memory",
            {
                let mut memories = MemorySection::new();
                memories.memory(plain_memory()).memory(plain_memory());
                let mut module = Module::new();
                module.section(&memories);
                module
            },
            "multiple memories",
        ),
        (
            "custom-page-sizes",
            memory(MemoryType {
                page_size_log2: Some(0),
                ..plain_memory()
            }),
            "custom page sizes",
        ),
        (
            "threads",
            memory(MemoryType {
                shared: true,
                maximum: Some(1),
                ..plain_memory()
            }),
            "threads",
        ),
        ("tail-call", function(&[Instruction::ReturnCall(0)]), "tail calls"),
        (
            "relaxed-simd",
            function(&[
                Instruction::V128Const(0),
                Instruction::V128Const(0),
                Instruction::I8x16RelaxedSwizzle,
                Instruction::Drop,
            ]),
            "relaxed SIMD",
        ),
        (
            "function-references",
            global(
                ValType::Ref(RefType {
                    nullable: true,
                    heap_type: HeapType::Concrete(0),
                }),
                ConstExpr::ref_null(HeapType::Concrete(0)),
            ),
            "function references",
        ),
        (
            "wide-arithmetic",
            function(&[
                Instruction::I64Const(0),
                Instruction::I64Const(0),
                Instruction::I64Const(0),
                Instruction::I64Const(0),
                Instruction::I64Add128,
                Instruction::Drop,
                Instruction::Drop,
            ]),
            "wide arithmetic",
        ),
    ];
    for (proposal, module, named) in cases {
        let reason = refused(&bombs::with_module(guests::HELLO, module));
        assert!(
            reason.to_lowercase().contains(&named.to_lowercase()),
            "`{proposal}` refused without naming it: {reason}"
        );
    }
}

#[test]
fn a_component_declaring_a_function_subtype_is_refused() {
    // GHSA-rc4p-x33f-vpr2: wasmtime 48.0.8 without its `gc` feature accepts these and
    // aborts the process on their run-time check; with the GC proposal off they are
    // refused at validation.
    let mut types = TypeSection::new();
    types.ty().subtype(&SubType {
        is_final: false,
        supertype_idx: None,
        composite_type: CompositeType {
            inner: CompositeInnerType::Func(FuncType::new([], [])),
            shared: false,
            descriptor: None,
            describes: None,
        },
    });
    let mut module = Module::new();
    module.section(&types);
    let reason = refused(&bombs::with_module(guests::HELLO, module));
    assert!(reason.contains("gc"), "{reason}");
}

#[test]
fn a_component_using_component_model_async_is_refused() {
    let mut canon = CanonicalFunctionSection::new();
    canon.waitable_set_new();
    let bytes = bombs::append(guests::HELLO, &[&canon]);
    let reason = refused(&bytes);
    assert!(reason.contains("async"), "{reason}");
}
