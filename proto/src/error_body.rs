//! S3-compatible XML error bodies, the format S3 clients (aws-sdk, boto3, rclone) parse.
//!
//! Owns the document layout and XML escaping. It does not choose the code or the HTTP status:
//! the node maps its errors to S3 codes (`NoSuchKey`, `AccessDenied`, ...) in one place.
//! Error responses are off the hot path, so a `String` per call is fine.

/// S3 XML error body: <?xml version="1.0" encoding="UTF-8"?><Error><Code>..</Code><Message>..
/// </Message><Key>..</Key><RequestId>..</RequestId></Error>, all text XML-escaped; Key element
/// omitted when key is None.
pub fn s3_error_xml(code: &str, message: &str, key: Option<&str>, request_id: &str) -> String {
    let mut out = String::with_capacity(128 + code.len() + message.len() + key.map_or(0, str::len) + request_id.len());
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>");
    push_escaped(&mut out, code);
    out.push_str("</Code><Message>");
    push_escaped(&mut out, message);
    out.push_str("</Message>");
    if let Some(key) = key {
        out.push_str("<Key>");
        push_escaped(&mut out, key);
        out.push_str("</Key>");
    }
    out.push_str("<RequestId>");
    push_escaped(&mut out, request_id);
    out.push_str("</RequestId></Error>");
    out
}

/// Escapes XML markup characters. Keys are arbitrary UTF-8, so also: TAB/LF/CR become
/// character references (kept, not normalised away), and characters XML 1.0 cannot carry at
/// all (other C0 controls, U+FFFE, U+FFFF) become U+FFFD so the document stays well-formed.
fn push_escaped(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' => out.push_str("&#x9;"),
            '\n' => out.push_str("&#xA;"),
            '\r' => out.push_str("&#xD;"),
            '\u{0}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_key() {
        assert_eq!(
            s3_error_xml("NoSuchKey", "The specified key does not exist.", Some("a/b.jpg"), "4442587FB7D0A2F9"),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>NoSuchKey</Code>\
<Message>The specified key does not exist.</Message><Key>a/b.jpg</Key>\
<RequestId>4442587FB7D0A2F9</RequestId></Error>"
        );
    }

    #[test]
    fn without_key() {
        let xml = s3_error_xml("SlowDown", "Please reduce your request rate.", None, "r1");
        assert!(!xml.contains("<Key>"));
        assert!(xml.ends_with("<Message>Please reduce your request rate.</Message><RequestId>r1</RequestId></Error>"));
    }

    #[test]
    fn escapes_everything() {
        let xml = s3_error_xml("A&B", "<script>'x'\"y\"</script>", Some("k\r\n\t\u{0}\u{1}\u{e9}"), "<id>");
        assert!(xml.contains("<Code>A&amp;B</Code>"));
        assert!(xml.contains("<Message>&lt;script&gt;&apos;x&apos;&quot;y&quot;&lt;/script&gt;</Message>"));
        assert!(xml.contains("<Key>k&#xD;&#xA;&#x9;\u{fffd}\u{fffd}\u{e9}</Key>"));
        assert!(xml.contains("<RequestId>&lt;id&gt;</RequestId>"));
    }
}
