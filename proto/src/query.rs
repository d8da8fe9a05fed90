//! Query strings: `name=value` pairs split on `&`. Values are percent-decoded; a `+` stays a
//! plus (S3 signs and reads it literally, not as a form-encoded space).

/// The value of the first parameter called `name`, percent-decoded (`Some("")` for a bare
/// `name` or `name=`).
pub fn query_param(query: &[u8], name: &str) -> Option<String> {
    query.split(|&b| b == b'&').find_map(|pair| {
        let mut it = pair.splitn(2, |&b| b == b'=');
        (it.next()? == name.as_bytes())
            .then(|| percent_encoding::percent_decode(it.next().unwrap_or_default()).decode_utf8_lossy().into_owned())
    })
}

/// Whether the query has a parameter called `name` (with or without a value).
pub fn has_query_param(query: &[u8], name: &str) -> bool {
    query.split(|&b| b == b'&').any(|pair| pair.split(|&b| b == b'=').next() == Some(name.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_decodes_and_keeps_plus() {
        let q = b"uploads&partNumber=3&uploadId=a%2Fb+c&empty=";
        assert_eq!(query_param(q, "partNumber").as_deref(), Some("3"));
        assert_eq!(query_param(q, "uploadId").as_deref(), Some("a/b+c"));
        assert_eq!(query_param(q, "uploads").as_deref(), Some(""));
        assert_eq!(query_param(q, "empty").as_deref(), Some(""));
        assert_eq!(query_param(q, "part"), None);
        assert!(has_query_param(q, "uploads") && has_query_param(q, "empty") && !has_query_param(q, "upload"));
    }
}
