//! Hostile plugin: breaks the canonical ABI, calling the host's imports through raw
//! declarations of them and answering the host's `cabi_realloc` with lies.
//! process-message, by message type:
//!
//! - `bad-pointer`: logs a string whose pointer and length lie outside its memory;
//! - `bad-utf8`: logs a "string" of bytes that are not UTF-8;
//! - `bad-realloc`: reads the message's type with its `cabi_realloc` answering a pointer
//!   past the end of its memory;
//! - `copy-bomb`: emits a message of `count` (int field) string fields that all point at
//!   one buffer of `bytes` (int field) bytes: a few KiB of its memory asking the host to
//!   copy `count × bytes`;
//! - `exit`: calls `exit(3)` (WASI 0.2 passes on only that it failed);
//! - anything else: nothing.
//!
//! timer-event answers at once.

#![allow(unsafe_code)]

use std::alloc::{Layout, alloc, realloc};
use std::sync::atomic::{AtomicBool, Ordering};

use corral_guest::{Failure, Guest, Message, Value};

/// When set, `cabi_realloc` answers a pointer past the end of memory.
static LIE: AtomicBool = AtomicBool::new(false);

/// The allocator the host calls to place the strings and lists it returns; wit-bindgen's
/// own (an archive member) is not linked when the program defines one.
///
/// # Safety
///
/// As the canonical ABI's `cabi_realloc`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cabi_realloc(
    old: *mut u8,
    old_size: usize,
    align: usize,
    new_size: usize,
) -> *mut u8 {
    if LIE.load(Ordering::Relaxed) {
        return 0xffff_ff00usize as *mut u8;
    }
    if new_size == 0 {
        return align as *mut u8;
    }
    // SAFETY: the layout is the caller's; old is a block this allocator gave.
    let ptr = unsafe {
        if old_size == 0 {
            alloc(Layout::from_size_align_unchecked(new_size, align))
        } else {
            realloc(old, Layout::from_size_align_unchecked(old_size, align), new_size)
        }
    };
    if ptr.is_null() {
        std::process::abort();
    }
    ptr
}

#[link(wasm_import_module = "corral:plugin/log@0.1.0")]
unsafe extern "C" {
    /// `log(level, message)`, lowered: the level, the string's pointer and length.
    #[link_name = "log"]
    fn raw_log(level: i32, ptr: i32, len: i32);
}

#[link(wasm_import_module = "corral:plugin/emit@0.1.0")]
unsafe extern "C" {
    /// `emit(out-message)`, lowered flat: the timestamp option (case, value), the type,
    /// logger (pointer, length each), severity, payload and fields (pointer, length).
    #[link_name = "emit"]
    #[allow(clippy::too_many_arguments)]
    fn raw_emit(
        has_timestamp: i32,
        timestamp: i64,
        type_ptr: i32,
        type_len: i32,
        logger_ptr: i32,
        logger_len: i32,
        severity: i32,
        payload_ptr: i32,
        payload_len: i32,
        fields_ptr: i32,
        fields_len: i32,
    );
}

/// A `field` record as the canonical ABI lays it out: the name (pointer, length), the
/// value's case at 8 and its payload at 16 (a string: pointer, length).
#[repr(C, align(8))]
struct RawField {
    name_ptr: u32,
    name_len: u32,
    case: u8,
    _pad: [u8; 7],
    value_ptr: u32,
    value_len: u32,
}

fn int(message: &Message, name: &str) -> i64 {
    match message.field(name) {
        Some(Value::Int(n)) => n,
        _ => 0,
    }
}

struct AbiBreaker;

impl Guest for AbiBreaker {
    fn process_message(message: &Message) -> Result<(), Failure> {
        match message.type_().as_str() {
            // SAFETY (all three): the host checks what it is handed; that is the test.
            "bad-pointer" => unsafe { raw_log(2, 0x7fff_0000, 0x1000_0000) },
            "bad-utf8" => {
                let bytes = [0xffu8, 0xfe, 0xfd];
                unsafe { raw_log(2, bytes.as_ptr() as i32, bytes.len() as i32) }
            }
            "bad-realloc" => {
                LIE.store(true, Ordering::Relaxed);
                let type_ = message.type_();
                LIE.store(false, Ordering::Relaxed);
                corral_guest::info!("the host accepted the lie: {}", type_.len());
            }
            "copy-bomb" => {
                let buffer = vec![b'x'; int(message, "bytes") as usize];
                let name = b"f";
                let fields: Vec<RawField> = (0..int(message, "count"))
                    .map(|_| RawField {
                        name_ptr: name.as_ptr() as u32,
                        name_len: 1,
                        case: 0,
                        _pad: [0; 7],
                        value_ptr: buffer.as_ptr() as u32,
                        value_len: buffer.len() as u32,
                    })
                    .collect();
                let type_ = b"bomb";
                unsafe {
                    raw_emit(
                        0,
                        0,
                        type_.as_ptr() as i32,
                        type_.len() as i32,
                        0,
                        0,
                        6,
                        0,
                        0,
                        fields.as_ptr() as i32,
                        fields.len() as i32,
                    )
                }
            }
            "exit" => std::process::exit(3),
            _ => {}
        }
        Ok(())
    }

    fn timer_event(_now_ns: i64) -> Result<(), Failure> {
        Ok(())
    }
}

corral_guest::export!(AbiBreaker);
