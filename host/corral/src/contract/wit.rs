//! WIT's notation for the types wasmtime reports at run time, for messages that name a
//! function's type: the link check's "the world's is …, the plugin's is …" and a call by
//! name whose types differ.

use wasmtime::component::types::{ComponentFunc, Type};

/// A function type in WIT's notation, e.g. `func(a: s32, b: s32) -> s32`.
pub(crate) fn func_wit(ty: &ComponentFunc) -> String {
    let params: Vec<String> = ty
        .params()
        .map(|(name, ty)| format!("{name}: {}", wit(&ty)))
        .collect();
    let results: Vec<String> = ty.results().map(|ty| wit(&ty)).collect();
    let mut text = format!("func({})", params.join(", "));
    match &results[..] {
        [] => {}
        [one] => text.push_str(&format!(" -> {one}")),
        many => text.push_str(&format!(" -> ({})", many.join(", "))),
    }
    text
}

/// A type in WIT's notation. Records, variants, enums and flags have no names at run
/// time, so they are spelled out (`record { a: u32 }`); resources are `resource`.
pub(crate) fn wit(ty: &Type) -> String {
    let opt = |ty: Option<Type>| ty.map_or("_".to_owned(), |ty| wit(&ty));
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
        Type::List(list) => format!("list<{}>", wit(&list.ty())),
        Type::FixedLengthList(list) => format!("list<{}, {}>", wit(&list.ty()), list.len()),
        Type::Map(map) => format!("map<{}, {}>", wit(&map.key()), wit(&map.value())),
        Type::Record(record) => {
            let fields: Vec<String> = record
                .fields()
                .map(|f| format!("{}: {}", f.name, wit(&f.ty)))
                .collect();
            format!("record {{ {} }}", fields.join(", "))
        }
        Type::Tuple(tuple) => {
            let types: Vec<String> = tuple.types().map(|t| wit(&t)).collect();
            format!("tuple<{}>", types.join(", "))
        }
        Type::Variant(variant) => {
            let cases: Vec<String> = variant
                .cases()
                .map(|c| match c.ty {
                    Some(ty) => format!("{}({})", c.name, wit(&ty)),
                    None => c.name.to_owned(),
                })
                .collect();
            format!("variant {{ {} }}", cases.join(", "))
        }
        Type::Enum(e) => format!("enum {{ {} }}", e.names().collect::<Vec<_>>().join(", ")),
        Type::Option(option) => format!("option<{}>", wit(&option.ty())),
        Type::Result(result) => match (result.ok(), result.err()) {
            (None, None) => "result".into(),
            (ok, err) => format!("result<{}, {}>", opt(ok), opt(err)),
        },
        Type::Flags(flags) => format!("flags {{ {} }}", flags.names().collect::<Vec<_>>().join(", ")),
        Type::Own(_) => "resource".into(),
        Type::Borrow(_) => "borrow<resource>".into(),
        Type::Future(_) => "future".into(),
        Type::Stream(_) => "stream".into(),
        Type::ErrorContext => "error-context".into(),
    }
}
