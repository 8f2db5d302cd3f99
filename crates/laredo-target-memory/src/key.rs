//! [`IntoKey`]: the argument of lookups.

use laredo_core::Value;

/// Something usable as a lookup key: one value, or a tuple or slice of values for a
/// composite key.
///
/// ```
/// use laredo_core::Value;
/// use laredo_target_memory::IntoKey;
/// assert_eq!("a".into_key(), vec![Value::text("a")]);
/// assert_eq!((1, "b").into_key(), vec![Value::Int64(1), Value::text("b")]);
/// ```
pub trait IntoKey {
    /// The key's values, in key-field order.
    fn into_key(self) -> Vec<Value>;
}

macro_rules! single {
    ($($t:ty),*) => {$(
        impl IntoKey for $t {
            fn into_key(self) -> Vec<Value> { vec![Value::from(self)] }
        }
    )*};
}
single!(
    &str, String, &String, i64, i32, i16, u32, u16, u8, bool, f64
);

impl IntoKey for Value {
    fn into_key(self) -> Vec<Value> {
        vec![self]
    }
}

impl IntoKey for &Value {
    fn into_key(self) -> Vec<Value> {
        vec![self.clone()]
    }
}

impl IntoKey for &[Value] {
    fn into_key(self) -> Vec<Value> {
        self.to_vec()
    }
}

impl IntoKey for Vec<Value> {
    fn into_key(self) -> Vec<Value> {
        self
    }
}

impl<A: Into<Value>, B: Into<Value>> IntoKey for (A, B) {
    fn into_key(self) -> Vec<Value> {
        vec![self.0.into(), self.1.into()]
    }
}

impl<A: Into<Value>, B: Into<Value>, C: Into<Value>> IntoKey for (A, B, C) {
    fn into_key(self) -> Vec<Value> {
        vec![self.0.into(), self.1.into(), self.2.into()]
    }
}

/// The canonical key bytes of key values.
pub(crate) fn key_bytes(values: &[Value]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 * values.len());
    values.iter().for_each(|v| v.write_key(&mut out));
    out
}
