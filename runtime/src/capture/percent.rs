//! Percent escapes in source URIs (`%XX`, UTF-8), so paths with spaces or `?`/`&` can be written in a URI.

use super::uri_error::UriError;

/// Decodes `%XX` escapes (UTF-8), so paths with spaces or `?`/`&` can be written.
pub(crate) fn percent_decode(s: &str) -> Result<String, UriError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| UriError::BadPercentEscape {
                    at: i,
                    text: s.to_string(),
                })?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| UriError::InvalidUtf8 {
        text: s.to_string(),
    })
}

/// Escapes what would end a location or a value: `%`, `?`, `&`, `=`, `#` and non-printing bytes.
pub(crate) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_graphic() && !matches!(b, b'%' | b'?' | b'&' | b'=' | b'#') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
