//! `multipart/form-data` bodies (RFC 7578), the way browsers upload files: decoded from a
//! borrowed buffer, bounded, no panics. Only what the console's one upload form needs: each
//! part's field name, file name and bytes.

use thiserror::Error;

/// Parts a body may hold: an export has a few files per segment; more is not an upload of ours.
pub const MAX_PARTS: usize = 10_000;
/// A part's headers longer than this are not a browser's.
const MAX_HEADERS: usize = 8 * 1024;

/// One part of the form.
#[derive(Debug, PartialEq, Eq)]
pub struct Part<'a> {
    /// The form field (`name=`).
    pub name: String,
    /// The file's name as the browser sent it, cut to its last path component; none for a
    /// plain field.
    pub file: Option<String>,
    /// The content.
    pub data: &'a [u8],
}

/// Why a body is not a form the console takes.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum UploadError {
    /// The Content-Type is not multipart/form-data with a boundary.
    #[error("not a file upload: Content-Type must be multipart/form-data with a boundary")]
    NotMultipart,
    /// The body does not follow the multipart format.
    #[error("the upload is malformed: {0}")]
    Malformed(&'static str),
    /// Too many parts.
    #[error("the upload has more than {MAX_PARTS} parts")]
    TooManyParts,
}

/// The boundary of a `multipart/form-data; boundary=…` Content-Type.
pub fn boundary(content_type: &str) -> Result<&str, UploadError> {
    let mut params = content_type.split(';').map(str::trim);
    if !params.next().is_some_and(|m| m.eq_ignore_ascii_case("multipart/form-data")) {
        return Err(UploadError::NotMultipart);
    }
    params
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("boundary"))
        .map(|(_, v)| v.trim().trim_matches('"'))
        // RFC 2046: 1 to 70 characters.
        .filter(|b| (1..=70).contains(&b.len()))
        .ok_or(UploadError::NotMultipart)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let first = *needle.first()?;
    let mut at = 0;
    while at + needle.len() <= hay.len() {
        let i = hay[at..=hay.len() - needle.len()].iter().position(|&b| b == first)? + at;
        if hay[i..].starts_with(needle) {
            return Some(i);
        }
        at = i + 1;
    }
    None
}

/// The value of parameter `key` in a Content-Disposition header value.
fn param(value: &str, key: &str) -> Option<String> {
    value.split(';').skip(1).map(str::trim).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim().eq_ignore_ascii_case(key).then(|| v.trim().trim_matches('"').to_owned())
    })
}

fn part(block: &[u8]) -> Result<Part<'_>, UploadError> {
    let end = find(block, b"\r\n\r\n").ok_or(UploadError::Malformed("a part has no end of headers"))?;
    if end > MAX_HEADERS {
        return Err(UploadError::Malformed("a part's headers are too long"));
    }
    let head = std::str::from_utf8(&block[..end]).map_err(|_| UploadError::Malformed("headers not UTF-8"))?;
    let disposition = head
        .split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-disposition"))
        .map(|(_, v)| v.trim())
        .ok_or(UploadError::Malformed("a part has no Content-Disposition"))?;
    let name = param(disposition, "name").ok_or(UploadError::Malformed("a part has no field name"))?;
    // Browsers send a bare name, a folder upload `folder/name`, old ones a whole Windows path.
    let file = param(disposition, "filename").map(|f| f.rsplit(['/', '\\']).next().unwrap_or("").to_owned());
    Ok(Part { name, file, data: &block[end + 4..] })
}

/// The parts of `body`, delimited by `boundary`.
pub fn parse<'a>(body: &'a [u8], boundary: &str) -> Result<Vec<Part<'a>>, UploadError> {
    let delim = format!("--{boundary}");
    let between = format!("\r\n--{boundary}");
    let start = find(body, delim.as_bytes()).ok_or(UploadError::Malformed("no boundary in the body"))?;
    let mut rest = &body[start + delim.len()..];
    let mut parts = Vec::new();
    loop {
        if rest.starts_with(b"--") {
            return Ok(parts);
        }
        rest =
            rest.strip_prefix(b"\r\n").ok_or(UploadError::Malformed("a boundary is not followed by CRLF"))?;
        let end = find(rest, between.as_bytes()).ok_or(UploadError::Malformed("the body is cut short"))?;
        if parts.len() == MAX_PARTS {
            return Err(UploadError::TooManyParts);
        }
        parts.push(part(&rest[..end])?);
        rest = &rest[end + between.len()..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body as Chromium sends one: a plain field and two files (one from a folder upload).
    const BODY: &[u8] = b"--XyZ\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\nabc\r\n--XyZ\r\nContent-Disposition: form-data; name=\"export\"; filename=\"court/seg-1.log\"\r\nContent-Type: application/octet-stream\r\n\r\n\x00\x01\r\n--X\r\n--XyZ\r\nContent-Disposition: form-data; name=\"export\"; filename=\"C:\\\\exports\\\\signing.pub\"\r\n\r\n\r\n--XyZ--\r\n";

    #[test]
    fn fields_and_files_are_decoded_with_their_bytes() {
        let parts = parse(BODY, "XyZ").unwrap();
        assert_eq!(parts.len(), 3);
        assert_eq!(
            (parts[0].name.as_str(), parts[0].file.as_deref(), parts[0].data),
            ("csrf", None, &b"abc"[..])
        );
        assert_eq!(parts[1].file.as_deref(), Some("seg-1.log"), "the folder is cut off");
        assert_eq!(parts[1].data, b"\x00\x01\r\n--X", "a near-boundary inside the content stays content");
        assert_eq!((parts[2].file.as_deref(), parts[2].data), (Some("signing.pub"), &b""[..]));
    }

    #[test]
    fn every_truncation_fails_without_panicking() {
        let end = BODY.len() - b"--\r\n".len();
        for n in 0..end {
            assert!(parse(&BODY[..n], "XyZ").is_err(), "cut at {n}");
        }
    }

    #[test]
    fn the_content_type_must_be_multipart_with_a_boundary() {
        assert_eq!(boundary("multipart/form-data; boundary=----abc"), Ok("----abc"));
        assert_eq!(boundary("Multipart/Form-Data; charset=utf-8; boundary=\"q r\""), Ok("q r"));
        for bad in
            ["application/x-www-form-urlencoded", "multipart/form-data", "multipart/form-data; boundary="]
        {
            assert_eq!(boundary(bad), Err(UploadError::NotMultipart), "{bad}");
        }
        assert_eq!(
            boundary(&format!("multipart/form-data; boundary={}", "b".repeat(71))),
            Err(UploadError::NotMultipart)
        );
    }

    #[test]
    fn a_part_without_a_name_or_too_many_parts_is_refused() {
        let nameless = b"--b\r\nContent-Disposition: form-data\r\n\r\nx\r\n--b--";
        assert_eq!(parse(nameless, "b"), Err(UploadError::Malformed("a part has no field name")));
        let one = "--b\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\nx\r\n";
        let many = format!("{}--b--", one.repeat(MAX_PARTS + 1));
        assert_eq!(parse(many.as_bytes(), "b"), Err(UploadError::TooManyParts));
    }
}
