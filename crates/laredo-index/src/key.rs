//! [`IntoKey`]: the argument of lookups.

use laredo_core::Value;

use crate::codec;

/// Something usable as a lookup key: one value, or a tuple, slice or `Vec` of values
/// for a composite key (in key-field order).
///
/// Keys match by canonical key bytes ([`Value::write_key`]), so numeric kinds
/// normalise: `7`, `7.0` and `Value::numeric("7.00")` find the same row.
///
/// ```
/// use laredo_core::Value;
/// use laredo_index::IntoKey;
/// assert_eq!("a".into_key(), vec![Value::text("a")]);
/// assert_eq!((1, "b").into_key(), vec![Value::Int64(1), Value::text("b")]);
/// ```
pub trait IntoKey {
    /// The key's values, in key-field order.
    fn into_key(self) -> Vec<Value>;

    /// Appends the canonical key bytes of the key's values to `out` and returns how
    /// many values the key has. The default goes through [`IntoKey::into_key`];
    /// single values override it to skip that allocation.
    fn into_key_bytes(self, out: &mut Vec<u8>) -> usize
    where
        Self: Sized,
    {
        let values = self.into_key();
        values.iter().for_each(|v| v.write_key(out));
        values.len()
    }
}

macro_rules! integer {
    ($($t:ty),*) => {$(
        impl IntoKey for $t {
            fn into_key(self) -> Vec<Value> {
                vec![Value::from(self)]
            }
            fn into_key_bytes(self, out: &mut Vec<u8>) -> usize {
                Value::Int64(i64::from(self)).write_key(out);
                1
            }
        }
    )*};
}
integer!(i64, i32, i16, i8, u32, u16, u8);

macro_rules! text {
    ($($t:ty),*) => {$(
        impl IntoKey for $t {
            fn into_key(self) -> Vec<Value> {
                vec![Value::from(self)]
            }
            fn into_key_bytes(self, out: &mut Vec<u8>) -> usize {
                codec::write_text_key(&self, out);
                1
            }
        }
    )*};
}
text!(&str, String, &String);

impl IntoKey for bool {
    fn into_key(self) -> Vec<Value> {
        vec![Value::Bool(self)]
    }
    fn into_key_bytes(self, out: &mut Vec<u8>) -> usize {
        Value::Bool(self).write_key(out);
        1
    }
}

impl IntoKey for f64 {
    fn into_key(self) -> Vec<Value> {
        vec![Value::Float64(self)]
    }
    fn into_key_bytes(self, out: &mut Vec<u8>) -> usize {
        Value::Float64(self).write_key(out);
        1
    }
}

impl IntoKey for Value {
    fn into_key(self) -> Vec<Value> {
        vec![self]
    }
    fn into_key_bytes(self, out: &mut Vec<u8>) -> usize {
        self.write_key(out);
        1
    }
}

impl IntoKey for &Value {
    fn into_key(self) -> Vec<Value> {
        vec![self.clone()]
    }
    fn into_key_bytes(self, out: &mut Vec<u8>) -> usize {
        self.write_key(out);
        1
    }
}

impl IntoKey for &[Value] {
    fn into_key(self) -> Vec<Value> {
        self.to_vec()
    }
    fn into_key_bytes(self, out: &mut Vec<u8>) -> usize {
        self.iter().for_each(|v| v.write_key(out));
        self.len()
    }
}

impl<const N: usize> IntoKey for &[Value; N] {
    fn into_key(self) -> Vec<Value> {
        self.to_vec()
    }
    fn into_key_bytes(self, out: &mut Vec<u8>) -> usize {
        self.as_slice().into_key_bytes(out)
    }
}

impl IntoKey for Vec<Value> {
    fn into_key(self) -> Vec<Value> {
        self
    }
    fn into_key_bytes(self, out: &mut Vec<u8>) -> usize {
        self.as_slice().into_key_bytes(out)
    }
}

impl<A: Into<Value>, B: Into<Value>> IntoKey for (A, B) {
    fn into_key(self) -> Vec<Value> {
        vec![self.0.into(), self.1.into()]
    }
    fn into_key_bytes(self, out: &mut Vec<u8>) -> usize {
        self.0.into().write_key(out);
        self.1.into().write_key(out);
        2
    }
}

impl<A: Into<Value>, B: Into<Value>, C: Into<Value>> IntoKey for (A, B, C) {
    fn into_key(self) -> Vec<Value> {
        vec![self.0.into(), self.1.into(), self.2.into()]
    }
    fn into_key_bytes(self, out: &mut Vec<u8>) -> usize {
        self.0.into().write_key(out);
        self.1.into().write_key(out);
        self.2.into().write_key(out);
        3
    }
}

/// The canonical key bytes of `key` and its number of values.
pub(crate) fn key_bytes(key: impl IntoKey) -> (Vec<u8>, usize) {
    let mut out = Vec::with_capacity(24);
    let arity = key.into_key_bytes(&mut out);
    (out, arity)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn via_values(key: impl IntoKey) -> (Vec<u8>, usize) {
        let values = key.into_key();
        let mut out = Vec::new();
        values.iter().for_each(|v| v.write_key(&mut out));
        (out, values.len())
    }

    #[test]
    fn key_bytes_agree_with_values() {
        assert_eq!(key_bytes(7i64), via_values(7i64));
        assert_eq!(key_bytes(7i32), via_values(7i32));
        assert_eq!(key_bytes(7u8), via_values(7u8));
        assert_eq!(key_bytes("user-123"), via_values("user-123"));
        assert_eq!(key_bytes(String::from("é")), via_values(String::from("é")));
        assert_eq!(key_bytes(true), via_values(true));
        assert_eq!(key_bytes(7.0), via_values(7i64), "7.0 keys like 7");
        assert_eq!(key_bytes(Value::numeric("7.00")), via_values(7i64));
        assert_eq!(key_bytes((1, "a")), via_values((1, "a")));
        assert_eq!(key_bytes((1, "a", false)), via_values((1, "a", false)));
        let values = vec![Value::Int64(1), Value::text("a")];
        assert_eq!(key_bytes(values.as_slice()), via_values((1, "a")));
        assert_eq!(
            key_bytes(&[Value::Int64(1), Value::text("a")]),
            via_values((1, "a"))
        );
        assert_eq!(key_bytes(values.clone()), via_values(values));
    }
}
