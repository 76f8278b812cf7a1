//! Request extractors that turn every malformed input into a precise problem+json error:
//! [`ApiJson`] for bodies (400 for broken JSON, 415 for another media type, 413 for an
//! oversized body, 422 naming the field for wrong types or unknown fields) and [`ApiQuery`] for
//! query strings.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON request body, deserialized with the path of any failing field recorded.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|mime| {
                let mime = mime.trim().to_ascii_lowercase();
                mime == "application/json" || mime.ends_with("+json")
            })
            .unwrap_or(false);
        if !is_json {
            return Err(ApiError::unsupported_media_type(
                "request body must be JSON: send `Content-Type: application/json`",
            ));
        }
        let limit = crate::BODY_LIMIT_BYTES;
        // Refuse an announced oversized body before reading any of it.
        let announced = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if announced.is_some_and(|len| len > limit as u64) {
            return Err(ApiError::payload_too_large(limit));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::payload_too_large(limit)
            } else {
                ApiError::bad_request(format!("could not read the request body: {rejection}"))
            }
        })?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Parses a JSON document into `T`, mapping syntax errors to 400 and data errors to 422 with
/// the failing field's path.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // Syntax first (trailing characters included), then the data, strictly: serde would also
    // take a struct's fields from an array, in order (`[null, null]`), which no client means.
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| json_error(".", e))?;
    serde_path_to_error::deserialize(strict::Strict(value)).map_err(|err| {
        let path = err.path().to_string();
        json_error(&path, err.into_inner())
    })
}

/// A JSON document as a deserializer that gives structs only from objects (every request
/// body and every object in one is an object in the OpenAPI document).
mod strict {
    use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};
    use serde_json::{Error, Map, Value};

    pub(super) struct Strict(pub(super) Value);

    impl<'de> de::Deserializer<'de> for Strict {
        type Error = Error;

        fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            match self.0 {
                Value::Object(map) => visitor.visit_map(Fields(map.into_iter(), None)),
                Value::Array(items) => visitor.visit_seq(Items(items.into_iter())),
                other => de::Deserializer::deserialize_any(other, visitor),
            }
        }

        fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            match self.0 {
                Value::Null => visitor.visit_none(),
                other => visitor.visit_some(Strict(other)),
            }
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            _fields: &'static [&'static str],
            visitor: V,
        ) -> Result<V::Value, Error> {
            match self.0 {
                Value::Object(map) => visitor.visit_map(Fields(map.into_iter(), None)),
                other => Err(de::Error::invalid_type(unexpected(&other), &"an object")),
            }
        }

        fn deserialize_newtype_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            visitor: V,
        ) -> Result<V::Value, Error> {
            visitor.visit_newtype_struct(self)
        }

        fn deserialize_enum<V: Visitor<'de>>(
            self,
            name: &'static str,
            variants: &'static [&'static str],
            visitor: V,
        ) -> Result<V::Value, Error> {
            de::Deserializer::deserialize_enum(self.0, name, variants, visitor)
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf unit unit_struct seq tuple tuple_struct map identifier ignored_any
        }
    }

    fn unexpected(value: &Value) -> de::Unexpected<'_> {
        match value {
            Value::Null => de::Unexpected::Unit,
            Value::Bool(b) => de::Unexpected::Bool(*b),
            Value::Number(_) => de::Unexpected::Other("a number"),
            Value::String(s) => de::Unexpected::Str(s),
            Value::Array(_) => de::Unexpected::Seq,
            Value::Object(_) => de::Unexpected::Map,
        }
    }

    struct Fields(
        <Map<String, Value> as IntoIterator>::IntoIter,
        Option<Value>,
    );

    impl<'de> MapAccess<'de> for Fields {
        type Error = Error;

        fn next_key_seed<K: DeserializeSeed<'de>>(
            &mut self,
            seed: K,
        ) -> Result<Option<K::Value>, Error> {
            match self.0.next() {
                Some((key, value)) => {
                    self.1 = Some(value);
                    seed.deserialize(key.into_deserializer()).map(Some)
                }
                None => Ok(None),
            }
        }

        fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
            let value = self.1.take().unwrap_or(Value::Null);
            seed.deserialize(Strict(value))
        }
    }

    struct Items(std::vec::IntoIter<Value>);

    impl<'de> SeqAccess<'de> for Items {
        type Error = Error;

        fn next_element_seed<T: DeserializeSeed<'de>>(
            &mut self,
            seed: T,
        ) -> Result<Option<T::Value>, Error> {
            self.0
                .next()
                .map(|v| seed.deserialize(Strict(v)))
                .transpose()
        }
    }
}

fn json_error(path: &str, inner: serde_json::Error) -> ApiError {
    match inner.classify() {
        serde_json::error::Category::Data => {
            let message = strip_position(&inner.to_string());
            ApiError::invalid_field(field_name(path, &message), message)
        }
        serde_json::error::Category::Eof | serde_json::error::Category::Syntax => {
            ApiError::bad_request(format!("malformed JSON: {inner}"))
        }
        serde_json::error::Category::Io => {
            ApiError::bad_request(format!("could not read the JSON body: {inner}"))
        }
    }
}

/// The field a data error is about: serde's path, extended by the field named in "missing
/// field `x`" / "unknown field `x`" messages (whose path stops at the enclosing object).
fn field_name(path: &str, message: &str) -> String {
    let named = ["missing field `", "unknown field `"]
        .iter()
        .find_map(|p| message.strip_prefix(p))
        .and_then(|rest| rest.split('`').next());
    let base = if path == "." { "" } else { path };
    match named {
        Some(name) if !base.ends_with(name) => {
            if base.is_empty() {
                name.to_owned()
            } else {
                format!("{base}.{name}")
            }
        }
        _ if base.is_empty() => "body".to_owned(),
        _ => base.to_owned(),
    }
}

/// serde_json appends " at line L column C" to data errors; the field path says more.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// A query string deserialized into `T`; a wrong parameter is a 400 naming it.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(ApiQuery)
            .map_err(|err| {
                let path = err.path().to_string();
                let field = if path == "." {
                    "query".to_owned()
                } else {
                    path
                };
                ApiError::bad_request(format!(
                    "invalid query parameter `{field}`: {}",
                    err.inner()
                ))
            })
    }
}

/// Distinguishes an explicit `null` (Some(None)) from an absent field (None, via `default`).
pub(crate) fn present<'de, D: serde::Deserializer<'de>, T: serde::Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    <Option<T> as serde::Deserialize>::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code, reason = "only deserialized")]
    struct Body {
        a: Option<u32>,
        b: Option<u32>,
    }

    #[test]
    fn a_body_must_be_an_object() {
        assert!(parse_json::<Body>(b"{\"a\": 1}").is_ok());
        // serde alone would take the fields from an array, in order.
        let err = parse_json::<Body>(b" [1, 2]").unwrap_err();
        assert!(format!("{err:?}").contains("expected an object"), "{err:?}");
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code, reason = "only deserialized")]
        struct Outer {
            inner: Option<Body>,
        }
        assert!(parse_json::<Outer>(b"{\"inner\": {\"b\": 2}}").is_ok());
        assert!(parse_json::<Outer>(b"{\"inner\": null}").is_ok());
        let err = parse_json::<Outer>(b"{\"inner\": [1, 2]}").unwrap_err();
        assert!(format!("{err:?}").contains("expected an object"), "{err:?}");
        // A field's type error still names the field.
        let err = parse_json::<Outer>(b"{\"inner\": {\"a\": \"x\"}}").unwrap_err();
        assert!(format!("{err:?}").contains("inner.a"), "{err:?}");
    }
}
