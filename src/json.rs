//! The JSON bodies this service sends, as serde types: the field order of each struct is the
//! order on the wire, and serde_json does all the escaping.

use serde::Serialize;

/// `GET /` when JSON is preferred.
#[derive(Debug, Serialize)]
pub struct Index<'a> {
    /// RFC 3339.
    pub time: &'a str,
    pub timezone: &'a str,
    pub utc_offset: &'a str,
    pub visits: u64,
}

/// `GET /visits`.
#[derive(Debug, Serialize)]
pub struct Visits {
    pub visits: u64,
}

/// `GET /readyz`: `{"status":"ready"}` or `{"status":"not ready","reason":"..."}`.
#[derive(Debug, Serialize)]
pub struct Readiness<'a> {
    pub status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
}

/// Error answers: `{"error":"not found"}`, or with the methods a path allows.
#[derive(Debug, Serialize)]
pub struct Error<'a> {
    pub error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow: Option<&'a str>,
}

/// `value` as a JSON text.
pub fn body(value: &impl Serialize) -> String {
    // Serialising these plain structs cannot fail (no maps with non-string keys, no I/O).
    serde_json::to_string(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_keep_their_field_order() {
        let ready = body(&Readiness {
            status: "not ready",
            reason: Some("disk \"full\""),
        });
        assert_eq!(ready, r#"{"status":"not ready","reason":"disk \"full\""}"#);
        let e = body(&Error {
            error: "method not allowed",
            allow: Some("GET, HEAD"),
        });
        assert_eq!(e, r#"{"error":"method not allowed","allow":"GET, HEAD"}"#);
        assert_eq!(body(&Visits { visits: 7 }), r#"{"visits":7}"#);
    }
}
