//! GGUF metadata values (the key/value section of the header).

use super::reader::Reader;
use crate::{HearthError, Result};

/// One metadata value; arrays may nest.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<MetaValue>),
}

/// Deepest array nesting accepted; real files use one level.
const MAX_DEPTH: usize = 8;

/// Smallest encoded size of one value of the given type id, used to bound
/// array counts before allocating.
fn min_size(type_id: u32) -> Option<u64> {
    Some(match type_id {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        10..=12 => 8,
        8 => 8,
        9 => 12,
        _ => return None,
    })
}

fn bad_type(type_id: u32, key: &str) -> HearthError {
    HearthError::InvalidFile(format!(
        "GGUF metadata `{key}` has unknown value type {type_id}"
    ))
}

pub(crate) fn read_value(
    r: &mut Reader,
    type_id: u32,
    key: &str,
    depth: usize,
) -> Result<MetaValue> {
    Ok(match type_id {
        0 => MetaValue::U8(r.u8(key)?),
        1 => MetaValue::I8(r.u8(key)? as i8),
        2 => MetaValue::U16(r.u16(key)?),
        3 => MetaValue::I16(r.u16(key)? as i16),
        4 => MetaValue::U32(r.u32(key)?),
        5 => MetaValue::I32(r.u32(key)? as i32),
        6 => MetaValue::F32(r.f32(key)?),
        7 => match r.u8(key)? {
            0 => MetaValue::Bool(false),
            1 => MetaValue::Bool(true),
            b => {
                return Err(HearthError::InvalidFile(format!(
                    "GGUF metadata `{key}`: bool byte {b} is neither 0 nor 1"
                )))
            }
        },
        8 => MetaValue::String(r.string(key)?),
        9 => {
            if depth >= MAX_DEPTH {
                return Err(HearthError::InvalidFile(format!(
                    "GGUF metadata `{key}`: arrays nested deeper than {MAX_DEPTH}"
                )));
            }
            let elem = r.u32(key)?;
            let min = min_size(elem).ok_or_else(|| bad_type(elem, key))?;
            let count = r.u64(key)?;
            let n = r.check_count(count, min, &format!("array `{key}` element"))?;
            r.elements += n as u64;
            if r.elements > super::reader::MAX_META_ELEMENTS {
                return Err(HearthError::Unsupported(format!(
                    "GGUF metadata arrays hold more than {} elements in all (at `{key}`)",
                    super::reader::MAX_META_ELEMENTS
                )));
            }
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                v.push(read_value(r, elem, key, depth + 1)?);
            }
            MetaValue::Array(v)
        }
        10 => MetaValue::U64(r.u64(key)?),
        11 => MetaValue::I64(r.u64(key)? as i64),
        12 => MetaValue::F64(r.f64(key)?),
        t => return Err(bad_type(t, key)),
    })
}

impl MetaValue {
    /// Any integer type as u64 (converters disagree on widths); negatives give None.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            MetaValue::U8(v) => Some(v as u64),
            MetaValue::U16(v) => Some(v as u64),
            MetaValue::U32(v) => Some(v as u64),
            MetaValue::U64(v) => Some(v),
            MetaValue::I8(v) => u64::try_from(v).ok(),
            MetaValue::I16(v) => u64::try_from(v).ok(),
            MetaValue::I32(v) => u64::try_from(v).ok(),
            MetaValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            MetaValue::I8(v) => Some(v as i64),
            MetaValue::I16(v) => Some(v as i64),
            MetaValue::I32(v) => Some(v as i64),
            MetaValue::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::F32(v) => Some(v as f64),
            MetaValue::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            MetaValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[MetaValue]> {
        match self {
            MetaValue::Array(v) => Some(v),
            _ => None,
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            MetaValue::U8(_) => "u8",
            MetaValue::I8(_) => "i8",
            MetaValue::U16(_) => "u16",
            MetaValue::I16(_) => "i16",
            MetaValue::U32(_) => "u32",
            MetaValue::I32(_) => "i32",
            MetaValue::U64(_) => "u64",
            MetaValue::I64(_) => "i64",
            MetaValue::F32(_) => "f32",
            MetaValue::F64(_) => "f64",
            MetaValue::Bool(_) => "bool",
            MetaValue::String(_) => "string",
            MetaValue::Array(_) => "array",
        }
    }
}
