//! XEP-0363 HTTP File Upload: finding the server's upload service and asking it for a slot.
//!
//! A slot's URLs and headers come from the network and go straight into an HTTP client, so
//! they are checked here: both URLs must be absolute `https` URLs, only the headers the XEP
//! allows are kept, and a header value that could inject another header refuses the whole
//! slot. The HTTP layer parses the URLs again with a full URL parser; this is the first of
//! two gates, not the only one.
//!
//! The GET URL is the only access control of the file once it is shared, and the PUT URL
//! with its headers is a write capability: neither appears in `Debug` output or errors.

use std::fmt;

use xmpp_parsers::minidom::Element;
use xmpp_parsers::ns;

use crate::elem::el;
use crate::error::RequestError;
use crate::session::Session;

/// The XEP-0363 namespace (version 0.3 and later; older namespaces are not supported).
pub const NS_HTTP_UPLOAD: &str = ns::HTTP_UPLOAD;

/// Items of the server's disco#items probed for the upload feature: servers list a handful
/// of components; a longer list is not worth one query per entry.
const MAX_ITEMS: usize = 32;
/// Longer URLs are not something an upload service hands out; capping them keeps a hostile
/// reply from putting megabytes into every later message.
const MAX_URL_LEN: usize = 4096;
/// The longest file name most file systems (and so the services' storage) accept.
const MAX_FILENAME_BYTES: usize = 255;
const MAX_CONTENT_TYPE_LEN: usize = 255;
/// Headers kept from a slot; the XEP allows three names, so more means a hostile service.
const MAX_HEADERS: usize = 8;
const MAX_HEADER_VALUE_LEN: usize = 8192;

/// The entity that hands out upload slots, as found by [`discover_upload_service`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadService {
    pub jid: String,
    /// The largest file it accepts, when it says (XEP-0128 `max-file-size`).
    pub max_file_size: Option<u64>,
}

/// Where to PUT a file and where it can then be fetched from.
#[derive(Clone, PartialEq, Eq)]
pub struct Slot {
    /// An absolute `https` URL.
    pub put_url: String,
    /// An absolute `https` URL; whoever holds it can fetch the file.
    pub get_url: String,
    /// Headers to send with the PUT: only `Authorization`, `Cookie` and `Expires` (with
    /// these spellings), values free of line breaks.
    pub put_headers: Vec<(String, String)>,
}

impl fmt::Debug for Slot {
    // The URLs and the header values are capabilities: Debug output reaches logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.put_headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Slot")
            .field("put_url", &"<redacted>")
            .field("get_url", &"<redacted>")
            .field("put_headers", &names)
            .finish()
    }
}

/// Why a slot could not be had.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum UploadError {
    #[error("invalid file name: {0}")]
    BadFilename(&'static str),
    #[error("invalid argument: {0}")]
    BadArgument(&'static str),
    #[error("the file is too large for the upload service{}", max.map(|m| format!(" (at most {m} bytes)")).unwrap_or_default())]
    FileTooLarge { max: Option<u64> },
    #[error("the upload service does not accept this file{}", opt_text(text))]
    NotAcceptable { text: Option<String> },
    /// A quota (per user or the service's storage): a later attempt may succeed.
    #[error("the upload service has no room for this file now{}", opt_text(text))]
    QuotaReached { text: Option<String> },
    #[error("not allowed to upload: {condition}{}", opt_text(text))]
    NotAllowed {
        condition: String,
        text: Option<String>,
    },
    #[error("the upload service refused: {condition}{}", opt_text(text))]
    Refused {
        condition: String,
        text: Option<String>,
    },
    /// The service's answer cannot be used safely or at all (not https, header injection,
    /// something missing). The reason never quotes the offending value.
    #[error("unusable upload slot: {0}")]
    BadSlot(&'static str),
    #[error(transparent)]
    Request(#[from] RequestError),
}

fn opt_text(text: &Option<String>) -> String {
    text.as_deref()
        .map(|t| format!(" ({t})"))
        .unwrap_or_default()
}

/// Finds the upload service of our server: the server itself or one of the entities it
/// lists (disco#items), whichever announces `urn:xmpp:http:upload:0` first. `None` when
/// there is none. An entity that answers with an error or not at all is passed over;
/// only a closed session is an error.
pub async fn discover_upload_service(
    session: &Session,
) -> Result<Option<UploadService>, RequestError> {
    let domain = session.own_jid().domain().to_owned();
    if let Some(found) = probe(session, &domain).await? {
        return Ok(Some(found));
    }
    let items = match session
        .iq("get", Some(&domain), el("query", ns::DISCO_ITEMS).build())
        .await
    {
        Ok(reply) => disco_items(&reply, &domain),
        Err(RequestError::Stanza { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    // One round trip for all of them rather than one per item; the first in the server's
    // order wins, so the outcome does not depend on which answer arrives first.
    let answers = futures::future::join_all(items.iter().map(|jid| probe(session, jid))).await;
    for answer in answers {
        match answer {
            Ok(Some(found)) => return Ok(Some(found)),
            Err(RequestError::Closed) => return Err(RequestError::Closed),
            Ok(None) | Err(_) => {}
        }
    }
    Ok(None)
}

/// disco#info of `jid`: the service if it announces the feature.
async fn probe(session: &Session, jid: &str) -> Result<Option<UploadService>, RequestError> {
    match session
        .iq("get", Some(jid), el("query", ns::DISCO_INFO).build())
        .await
    {
        Ok(reply) => Ok(upload_service(jid, &reply)),
        Err(RequestError::Stanza { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Asks `service` for a slot to upload `size` bytes as `filename` (only its final path
/// component is sent: the service needs a name, not where the file lives on this device).
pub async fn request_slot(
    session: &Session,
    service: &str,
    filename: &str,
    size: u64,
    content_type: &str,
) -> Result<Slot, UploadError> {
    if xmpp_parsers::jid::Jid::new(service).is_err() {
        return Err(UploadError::BadArgument("the upload service is not a JID"));
    }
    let request = slot_request(filename, size, content_type)?;
    match session.iq("get", Some(service), request).await {
        Ok(reply) => parse_slot(&reply),
        Err(RequestError::Stanza { condition, text }) => {
            let err = slot_error(&condition, text, None);
            if !matches!(err, UploadError::NotAcceptable { .. }) {
                return Err(err);
            }
            // The session hands us only the condition and text of an error reply, not the
            // XEP's <file-too-large/> with the limit. The service's disco#info carries the
            // same limit, so a second look tells "too large" from other refusals.
            match probe(session, service).await {
                Ok(Some(UploadService {
                    max_file_size: Some(max),
                    ..
                })) if size > max => Err(UploadError::FileTooLarge { max: Some(max) }),
                _ => Err(err),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// The final path component of `name` (either separator), refused when it is empty, a dot
/// name, too long, or holds control characters (which XML cannot carry anyway).
pub fn upload_filename(name: &str) -> Result<&str, UploadError> {
    let last = name.rsplit(['/', '\\']).next().unwrap_or_default();
    if last.trim().is_empty() || last == "." || last == ".." {
        return Err(UploadError::BadFilename("empty"));
    }
    if last.chars().any(char::is_control) {
        return Err(UploadError::BadFilename("contains control characters"));
    }
    if last.len() > MAX_FILENAME_BYTES {
        return Err(UploadError::BadFilename("longer than 255 bytes"));
    }
    Ok(last)
}

fn check_content_type(content_type: &str) -> Result<&str, UploadError> {
    let ct = content_type.trim();
    let valid = !ct.is_empty()
        && ct.len() <= MAX_CONTENT_TYPE_LEN
        && ct.is_ascii()
        && !ct.chars().any(|c| c.is_ascii_control())
        && ct
            .split(';')
            .next()
            .and_then(|essence| essence.trim().split_once('/'))
            .is_some_and(|(t, s)| !t.is_empty() && !s.is_empty() && !t.contains(' '));
    if valid {
        Ok(ct)
    } else {
        Err(UploadError::BadArgument("content type is not a MIME type"))
    }
}

/// The `<request/>` payload. A size of zero is sent as is: the XEP sets no lower bound.
/// Prosody 13 hands out a slot for it; ejabberd 24.12 answers bad-request (its codec wants
/// a positive size), which reaches the caller as [`UploadError::Refused`].
fn slot_request(filename: &str, size: u64, content_type: &str) -> Result<Element, UploadError> {
    let filename = upload_filename(filename)?;
    let content_type = check_content_type(content_type)?;
    Ok(el("request", NS_HTTP_UPLOAD)
        .attr("filename", filename)
        .attr("size", size.to_string())
        .attr("content-type", content_type)
        .build())
}

/// A slot from an IQ reply: a result carrying `<slot/>`, or an error mapped by
/// [`slot_error`] (with the XEP's `<file-too-large/>` limit when the reply has it).
fn parse_slot(reply: &Element) -> Result<Slot, UploadError> {
    if reply.attr("type") == Some("error") {
        return Err(slot_error_from_reply(reply));
    }
    let slot = reply
        .get_child("slot", NS_HTTP_UPLOAD)
        .ok_or(UploadError::BadSlot("the reply has no slot"))?;
    let put = slot
        .get_child("put", NS_HTTP_UPLOAD)
        .ok_or(UploadError::BadSlot("no put URL"))?;
    let get = slot
        .get_child("get", NS_HTTP_UPLOAD)
        .ok_or(UploadError::BadSlot("no get URL"))?;
    let put_url = https_url(put.attr("url").ok_or(UploadError::BadSlot("no put URL"))?)
        .map_err(|why| UploadError::BadSlot(why.put()))?;
    let get_url = https_url(get.attr("url").ok_or(UploadError::BadSlot("no get URL"))?)
        .map_err(|why| UploadError::BadSlot(why.get()))?;
    let mut put_headers = Vec::new();
    for header in put.children().filter(|c| c.is("header", NS_HTTP_UPLOAD)) {
        let Some(name) = header.attr("name").and_then(allowed_header) else {
            // XEP-0363 allows these three; the client ignores any other.
            continue;
        };
        let value = header.text();
        // A line break would let the service add headers of its choosing (or a body) to
        // our request; this is a hostile or broken service, not one to half-trust.
        if value.contains(['\r', '\n']) {
            return Err(UploadError::BadSlot("a header value contains a line break"));
        }
        let value = value.trim_matches([' ', '\t']);
        if value.chars().any(|c| c.is_control() && c != '\t') {
            return Err(UploadError::BadSlot(
                "a header value contains control characters",
            ));
        }
        if value.len() > MAX_HEADER_VALUE_LEN {
            return Err(UploadError::BadSlot("a header value is too long"));
        }
        if put_headers.len() == MAX_HEADERS {
            return Err(UploadError::BadSlot("too many headers"));
        }
        put_headers.push((name.to_owned(), value.to_owned()));
    }
    Ok(Slot {
        put_url,
        get_url,
        put_headers,
    })
}

/// The headers XEP-0363 lets a service ask for, in canonical spelling.
fn allowed_header(name: &str) -> Option<&'static str> {
    ["Authorization", "Cookie", "Expires"]
        .into_iter()
        .find(|allowed| allowed.eq_ignore_ascii_case(name.trim()))
}

fn slot_error_from_reply(reply: &Element) -> UploadError {
    let error = reply.get_child("error", ns::JABBER_CLIENT);
    let condition = error
        .and_then(|e| {
            e.children()
                .find(|c| c.ns() == ns::XMPP_STANZAS && c.name() != "text")
        })
        .map(|c| c.name().to_owned())
        .unwrap_or_else(|| "undefined-condition".into());
    let text = error
        .and_then(|e| e.get_child("text", ns::XMPP_STANZAS))
        .map(|t| t.text());
    let too_large = error
        .and_then(|e| e.get_child("file-too-large", NS_HTTP_UPLOAD))
        .map(|f| {
            f.get_child("max-file-size", NS_HTTP_UPLOAD)
                .and_then(|m| m.text().trim().parse::<u64>().ok())
        });
    slot_error(&condition, text, too_large)
}

/// Maps an error reply to what the caller acts on. `too_large`: the reply's
/// `<file-too-large/>`, with its `<max-file-size/>` if readable.
fn slot_error(
    condition: &str,
    text: Option<String>,
    too_large: Option<Option<u64>>,
) -> UploadError {
    if let Some(max) = too_large {
        return UploadError::FileTooLarge { max };
    }
    match condition {
        "not-acceptable" => UploadError::NotAcceptable { text },
        "resource-constraint" => UploadError::QuotaReached { text },
        "forbidden" | "not-allowed" | "not-authorized" | "registration-required" => {
            UploadError::NotAllowed {
                condition: condition.to_owned(),
                text,
            }
        }
        _ => UploadError::Refused {
            condition: condition.to_owned(),
            text,
        },
    }
}

/// Why a URL from a slot was refused (worded for the put or the get URL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UrlFault {
    Missing,
    TooLong,
    Whitespace,
    NotHttps,
    NoHost,
    Credentials,
    BadHost,
    BadPort,
}

impl UrlFault {
    fn put(self) -> &'static str {
        match self {
            UrlFault::Missing => "the put URL is empty",
            UrlFault::TooLong => "the put URL is too long",
            UrlFault::Whitespace => "the put URL contains whitespace or control characters",
            UrlFault::NotHttps => "the put URL is not an absolute https URL",
            UrlFault::NoHost => "the put URL has no host",
            UrlFault::Credentials => "the put URL carries credentials",
            UrlFault::BadHost => "the put URL has an invalid host",
            UrlFault::BadPort => "the put URL has an invalid port",
        }
    }
    fn get(self) -> &'static str {
        match self {
            UrlFault::Missing => "the get URL is empty",
            UrlFault::TooLong => "the get URL is too long",
            UrlFault::Whitespace => "the get URL contains whitespace or control characters",
            UrlFault::NotHttps => "the get URL is not an absolute https URL",
            UrlFault::NoHost => "the get URL has no host",
            UrlFault::Credentials => "the get URL carries credentials",
            UrlFault::BadHost => "the get URL has an invalid host",
            UrlFault::BadPort => "the get URL has an invalid port",
        }
    }
}

/// `raw` if it is an absolute `https` URL with a plausible host, else why not. Deliberately
/// stricter than RFC 3986 where leniency only helps an attacker: no user info (a classic
/// way to make a URL look like it goes elsewhere), no backslashes (parsers disagree on
/// them), no whitespace or controls anywhere.
pub(crate) fn https_url(raw: &str) -> Result<String, UrlFault> {
    let url = raw.trim_matches(|c: char| c.is_ascii_whitespace());
    if url.is_empty() {
        return Err(UrlFault::Missing);
    }
    if url.len() > MAX_URL_LEN {
        return Err(UrlFault::TooLong);
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(UrlFault::Whitespace);
    }
    let rest = match url.get(..8) {
        Some(scheme) if scheme.eq_ignore_ascii_case("https://") => &url[8..],
        _ => return Err(UrlFault::NotHttps),
    };
    if url.contains('\\') {
        return Err(UrlFault::BadHost);
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() {
        return Err(UrlFault::NoHost);
    }
    if authority.contains('@') {
        return Err(UrlFault::Credentials);
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (addr, after) = v6.split_once(']').ok_or(UrlFault::BadHost)?;
        if addr.is_empty()
            || !addr
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        {
            return Err(UrlFault::BadHost);
        }
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or(UrlFault::BadPort)?),
        };
        (addr, port)
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(UrlFault::NoHost);
    }
    if !authority.starts_with('[')
        && !host
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '.' | '_'))
    {
        return Err(UrlFault::BadHost);
    }
    if let Some(port) = port {
        let valid = !port.is_empty()
            && port.len() <= 5
            && port.chars().all(|c| c.is_ascii_digit())
            && port.parse::<u16>().is_ok_and(|p| p != 0);
        if !valid {
            return Err(UrlFault::BadPort);
        }
    }
    Ok(url.to_owned())
}

/// The upload service in a disco#info reply, if it announces the feature.
fn upload_service(jid: &str, reply: &Element) -> Option<UploadService> {
    let query = reply.get_child("query", ns::DISCO_INFO)?;
    let announced = query
        .children()
        .any(|c| c.is("feature", ns::DISCO_INFO) && c.attr("var") == Some(NS_HTTP_UPLOAD));
    if !announced {
        return None;
    }
    // XEP-0128: the limit is in the form whose FORM_TYPE is our namespace
    // (ejabberd also sends forms for the legacy namespaces; those are not ours to read).
    let max_file_size = query
        .children()
        .filter(|c| c.is("x", ns::DATA_FORMS))
        .find(|x| form_field(x, "FORM_TYPE").as_deref() == Some(NS_HTTP_UPLOAD))
        .and_then(|x| form_field(x, "max-file-size"))
        .and_then(|v| v.trim().parse::<u64>().ok());
    Some(UploadService {
        jid: jid.to_owned(),
        max_file_size,
    })
}

fn form_field(form: &Element, var: &str) -> Option<String> {
    form.children()
        .find(|f| f.is("field", ns::DATA_FORMS) && f.attr("var") == Some(var))
        .and_then(|f| f.get_child("value", ns::DATA_FORMS))
        .map(|v| v.text())
}

/// The services among a disco#items answer of `domain`: bare domain JIDs (no node, no
/// user part), `domain` itself excluded, each once, at most `MAX_ITEMS`.
pub(crate) fn disco_items(reply: &Element, domain: &str) -> Vec<String> {
    let Some(query) = reply.get_child("query", ns::DISCO_ITEMS) else {
        return Vec::new();
    };
    let mut jids: Vec<String> = Vec::new();
    for item in query.children().filter(|c| c.is("item", ns::DISCO_ITEMS)) {
        if item.attr("node").is_some() {
            continue;
        }
        let Some(jid) = item
            .attr("jid")
            .and_then(|j| xmpp_parsers::jid::Jid::new(j).ok())
        else {
            continue;
        };
        if !jid.is_bare() || jid.node().is_some() {
            continue;
        }
        let jid = jid.as_str().to_owned();
        if jid != domain && !jids.contains(&jid) {
            jids.push(jid);
        }
        if jids.len() == MAX_ITEMS {
            break;
        }
    }
    jids
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xml(s: &str) -> Element {
        s.parse().unwrap()
    }

    fn slot_reply(put: &str, get: &str, headers: &str) -> Element {
        xml(&format!(
            "<iq xmlns='jabber:client' type='result' id='1'>\
             <slot xmlns='urn:xmpp:http:upload:0'>\
             <put url='{put}'>{headers}</put><get url='{get}'/></slot></iq>"
        ))
    }

    const PUT: &str = "https://upload.example.org:5281/upload/abc/file%20name.jpg";
    const GET: &str = "https://download.example.org/abc/file%20name.jpg";

    #[test]
    fn a_good_slot_is_read_with_its_allowed_headers() {
        let slot = parse_slot(&slot_reply(
            PUT,
            GET,
            "<header name='Authorization'>Bearer xyz</header>\
             <header name='cookie'>foo=bar</header>\
             <header name='EXPIRES'> Tue, 1 Jul 2025 00:00:00 GMT </header>",
        ))
        .unwrap();
        assert_eq!(slot.put_url, PUT);
        assert_eq!(slot.get_url, GET);
        assert_eq!(
            slot.put_headers,
            vec![
                ("Authorization".to_owned(), "Bearer xyz".to_owned()),
                ("Cookie".to_owned(), "foo=bar".to_owned()),
                (
                    "Expires".to_owned(),
                    "Tue, 1 Jul 2025 00:00:00 GMT".to_owned()
                ),
            ]
        );
        let debug = format!("{slot:?}");
        assert!(
            !debug.contains("xyz") && !debug.contains("example.org"),
            "{debug}"
        );
    }

    #[test]
    fn other_headers_are_dropped() {
        let slot = parse_slot(&slot_reply(
            PUT,
            GET,
            "<header name='Host'>evil.example</header>\
             <header name='Content-Length'>0</header>\
             <header name='Transfer-Encoding'>chunked</header>\
             <header>nameless</header>\
             <other xmlns='urn:example'>x</other>\
             <header name='Authorization'>Bearer ok</header>",
        ))
        .unwrap();
        assert_eq!(
            slot.put_headers,
            vec![("Authorization".to_owned(), "Bearer ok".to_owned())]
        );
    }

    #[test]
    fn header_injection_refuses_the_slot() {
        for value in [
            "Bearer x&#10;Host: evil",
            "Bearer x&#13;&#10;X-Evil: 1",
            "x&#13;",
            "Bearer x&#x85;y",
        ] {
            let err = parse_slot(&slot_reply(
                PUT,
                GET,
                &format!("<header name='Authorization'>{value}</header>"),
            ))
            .unwrap_err();
            assert!(matches!(err, UploadError::BadSlot(_)), "{value}: {err:?}");
        }
        // Injection in a header we would have dropped anyway is harmless: it is dropped.
        let slot = parse_slot(&slot_reply(PUT, GET, "<header name='X-Y'>a&#10;b</header>"));
        assert!(slot.unwrap().put_headers.is_empty());
    }

    #[test]
    fn too_many_headers_refuse_the_slot() {
        let many = "<header name='Cookie'>a=b</header>".repeat(MAX_HEADERS + 1);
        assert_eq!(
            parse_slot(&slot_reply(PUT, GET, &many)).unwrap_err(),
            UploadError::BadSlot("too many headers")
        );
    }

    #[test]
    fn only_https_urls_are_accepted() {
        for good in [
            "https://h/",
            "https://h",
            "HTTPS://Upload.Example.org/a?b#c",
            "https://127.0.0.1:15281/abc/file",
            "https://[::1]:443/x",
            "https://bücher.example/ä.txt",
            "  https://h/trimmed  ",
        ] {
            assert!(https_url(good).is_ok(), "{good}");
        }
        for (bad, fault) in [
            ("", UrlFault::Missing),
            ("   ", UrlFault::Missing),
            ("http://h/x", UrlFault::NotHttps),
            ("HTTP://h/x", UrlFault::NotHttps),
            ("file:///etc/passwd", UrlFault::NotHttps),
            ("ftp://h/x", UrlFault::NotHttps),
            ("javascript:alert(1)", UrlFault::NotHttps),
            ("/upload/abc", UrlFault::NotHttps),
            ("//h/upload", UrlFault::NotHttps),
            ("upload/abc", UrlFault::NotHttps),
            ("https:/h/x", UrlFault::NotHttps),
            ("https:h/x", UrlFault::NotHttps),
            ("garbage", UrlFault::NotHttps),
            ("https://", UrlFault::NoHost),
            ("https:///path", UrlFault::NoHost),
            ("https://:443/x", UrlFault::NoHost),
            ("https://user:pw@h/x", UrlFault::Credentials),
            ("https://good.example@evil.example/", UrlFault::Credentials),
            ("https://h x/", UrlFault::Whitespace),
            ("https://h/a b", UrlFault::Whitespace),
            ("https://h/\u{0}", UrlFault::Whitespace),
            ("https://h\\@evil/", UrlFault::BadHost),
            ("https://h<x>/", UrlFault::BadHost),
            ("https://[zz]/", UrlFault::BadHost),
            ("https://[::1/", UrlFault::BadHost),
            ("https://h:0/", UrlFault::BadPort),
            ("https://h:/", UrlFault::BadPort),
            ("https://h:65536/", UrlFault::BadPort),
            ("https://h:1:2/", UrlFault::BadPort),
            ("https://[::1]x/", UrlFault::BadPort),
        ] {
            assert_eq!(https_url(bad), Err(fault), "{bad:?}");
        }
        let long = format!("https://h/{}", "a".repeat(MAX_URL_LEN));
        assert_eq!(https_url(&long), Err(UrlFault::TooLong));
    }

    #[test]
    fn a_slot_with_a_bad_url_is_refused_and_the_error_does_not_quote_it() {
        for (put, get, want) in [
            (
                "http://h/secret-put",
                GET,
                "the put URL is not an absolute https URL",
            ),
            (
                PUT,
                "http://h/secret-get",
                "the get URL is not an absolute https URL",
            ),
            (
                PUT,
                "file:///secret-get",
                "the get URL is not an absolute https URL",
            ),
            (
                "/secret-put",
                GET,
                "the put URL is not an absolute https URL",
            ),
            (PUT, "", "the get URL is empty"),
        ] {
            let err = parse_slot(&slot_reply(put, get, "")).unwrap_err();
            assert_eq!(err, UploadError::BadSlot(want));
            assert!(!err.to_string().contains("secret"));
        }
    }

    #[test]
    fn a_slot_missing_a_part_is_an_error() {
        let no_get = xml("<iq xmlns='jabber:client' type='result'><slot xmlns='urn:xmpp:http:upload:0'><put url='https://h/x'/></slot></iq>");
        assert_eq!(
            parse_slot(&no_get).unwrap_err(),
            UploadError::BadSlot("no get URL")
        );
        let no_put = xml("<iq xmlns='jabber:client' type='result'><slot xmlns='urn:xmpp:http:upload:0'><get url='https://h/x'/></slot></iq>");
        assert_eq!(
            parse_slot(&no_put).unwrap_err(),
            UploadError::BadSlot("no put URL")
        );
        let no_url = xml("<iq xmlns='jabber:client' type='result'><slot xmlns='urn:xmpp:http:upload:0'><put/><get url='https://h/x'/></slot></iq>");
        assert_eq!(
            parse_slot(&no_url).unwrap_err(),
            UploadError::BadSlot("no put URL")
        );
        let empty = xml("<iq xmlns='jabber:client' type='result'/>");
        assert_eq!(
            parse_slot(&empty).unwrap_err(),
            UploadError::BadSlot("the reply has no slot")
        );
        // The legacy namespace (URL as text) is not ours.
        let legacy = xml("<iq xmlns='jabber:client' type='result'><slot xmlns='urn:xmpp:http:upload'><put>https://h/x</put><get>https://h/x</get></slot></iq>");
        assert!(matches!(
            parse_slot(&legacy).unwrap_err(),
            UploadError::BadSlot(_)
        ));
    }

    fn error_reply(inner: &str) -> Element {
        xml(&format!(
            "<iq xmlns='jabber:client' type='error' id='1'><error type='modify'>{inner}</error></iq>"
        ))
    }

    #[test]
    fn error_replies_map_to_clear_errors() {
        let too_large = error_reply(
            "<not-acceptable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
             <text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>File too large</text>\
             <file-too-large xmlns='urn:xmpp:http:upload:0'><max-file-size>20000</max-file-size></file-too-large>",
        );
        let err = parse_slot(&too_large).unwrap_err();
        assert_eq!(err, UploadError::FileTooLarge { max: Some(20000) });
        assert!(err.to_string().contains("20000"));
        let garbled = error_reply(
            "<not-acceptable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
             <file-too-large xmlns='urn:xmpp:http:upload:0'><max-file-size>lots</max-file-size></file-too-large>",
        );
        assert_eq!(
            parse_slot(&garbled).unwrap_err(),
            UploadError::FileTooLarge { max: None }
        );
        let type_refused = error_reply(
            "<not-acceptable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
             <text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>File type not allowed</text>",
        );
        assert_eq!(
            parse_slot(&type_refused).unwrap_err(),
            UploadError::NotAcceptable {
                text: Some("File type not allowed".into())
            }
        );
        let quota = error_reply(
            "<resource-constraint xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
             <retry xmlns='urn:xmpp:http:upload:0' stamp='2025-01-01T00:00:00Z'/>",
        );
        assert_eq!(
            parse_slot(&quota).unwrap_err(),
            UploadError::QuotaReached { text: None }
        );
        let forbidden = error_reply("<forbidden xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>");
        assert!(matches!(
            parse_slot(&forbidden).unwrap_err(),
            UploadError::NotAllowed { condition, .. } if condition == "forbidden"
        ));
        let other = error_reply("<bad-request xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>");
        assert!(matches!(
            parse_slot(&other).unwrap_err(),
            UploadError::Refused { condition, .. } if condition == "bad-request"
        ));
        let bare = xml("<iq xmlns='jabber:client' type='error'/>");
        assert!(matches!(
            parse_slot(&bare).unwrap_err(),
            UploadError::Refused { condition, .. } if condition == "undefined-condition"
        ));
    }

    #[test]
    fn only_the_final_path_component_is_sent() {
        assert_eq!(upload_filename("photo.jpg").unwrap(), "photo.jpg");
        assert_eq!(
            upload_filename("/home/me/Pictures/photo.jpg").unwrap(),
            "photo.jpg"
        );
        assert_eq!(
            upload_filename("C:\\Users\\me\\photo.jpg").unwrap(),
            "photo.jpg"
        );
        assert_eq!(upload_filename("../../etc/passwd").unwrap(), "passwd");
        assert_eq!(upload_filename("été 2024.mp4").unwrap(), "été 2024.mp4");
        for bad in [
            "", "   ", "/", "dir/", "dir\\", ".", "..", "a/..", "a\nb", "a\u{7}b",
        ] {
            assert!(
                matches!(upload_filename(bad), Err(UploadError::BadFilename(_))),
                "{bad:?}"
            );
        }
        assert!(upload_filename(&"a".repeat(255)).is_ok());
        assert!(upload_filename(&"a".repeat(256)).is_err());
    }

    #[test]
    fn the_request_carries_name_size_and_type() {
        let r = slot_request("/tmp/x/report.pdf", 0, "application/pdf").unwrap();
        assert!(r.is("request", NS_HTTP_UPLOAD));
        assert_eq!(r.attr("filename"), Some("report.pdf"));
        assert_eq!(r.attr("size"), Some("0"));
        assert_eq!(r.attr("content-type"), Some("application/pdf"));
        let r = slot_request("a.txt", u64::MAX, " text/plain; charset=utf-8 ").unwrap();
        assert_eq!(r.attr("size"), Some("18446744073709551615"));
        assert_eq!(r.attr("content-type"), Some("text/plain; charset=utf-8"));
        for bad in [
            "",
            "text",
            "/plain",
            "text/",
            "te xt/plain",
            "text/plain\r\nX: y",
            "tëxt/plain",
        ] {
            assert_eq!(
                slot_request("a.txt", 1, bad).unwrap_err(),
                UploadError::BadArgument("content type is not a MIME type"),
                "{bad:?}"
            );
        }
        assert!(matches!(
            slot_request("", 1, "text/plain"),
            Err(UploadError::BadFilename(_))
        ));
    }

    #[test]
    fn the_service_and_its_limit_are_read_from_disco_info() {
        let info = xml(
            "<iq xmlns='jabber:client' type='result'><query xmlns='http://jabber.org/protocol/disco#info'>\
             <identity category='store' type='file' name='HTTP File Upload'/>\
             <feature var='urn:xmpp:http:upload'/>\
             <feature var='urn:xmpp:http:upload:0'/>\
             <x xmlns='jabber:x:data' type='result'>\
               <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:http:upload</value></field>\
               <field var='max-file-size'><value>1</value></field></x>\
             <x xmlns='jabber:x:data' type='result'>\
               <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:http:upload:0</value></field>\
               <field var='max-file-size'><value>104857600</value></field></x>\
             </query></iq>",
        );
        assert_eq!(
            upload_service("upload.example.org", &info),
            Some(UploadService {
                jid: "upload.example.org".into(),
                max_file_size: Some(104857600),
            })
        );
        let no_limit = xml(
            "<iq xmlns='jabber:client' type='result'><query xmlns='http://jabber.org/protocol/disco#info'>\
             <feature var='urn:xmpp:http:upload:0'/>\
             <x xmlns='jabber:x:data' type='result'>\
               <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:http:upload:0</value></field>\
               <field var='max-file-size'><value>-5</value></field></x>\
             </query></iq>",
        );
        assert_eq!(
            upload_service("u", &no_limit).map(|s| s.max_file_size),
            Some(None)
        );
        let legacy_only = xml(
            "<iq xmlns='jabber:client' type='result'><query xmlns='http://jabber.org/protocol/disco#info'>\
             <feature var='urn:xmpp:http:upload'/></query></iq>",
        );
        assert_eq!(upload_service("u", &legacy_only), None);
        let nothing = xml("<iq xmlns='jabber:client' type='result'/>");
        assert_eq!(upload_service("u", &nothing), None);
    }

    #[test]
    fn disco_items_are_filtered_and_deduplicated() {
        let items = xml(
            "<iq xmlns='jabber:client' type='result'><query xmlns='http://jabber.org/protocol/disco#items'>\
             <item jid='conference.example.org'/>\
             <item jid='upload.example.org' name='Uploads'/>\
             <item jid='example.org'/>\
             <item jid='example.org' node='some-node'/>\
             <item jid='upload.example.org'/>\
             <item jid='@@bad@@'/>\
             <item/>\
             </query></iq>",
        );
        assert_eq!(
            disco_items(&items, "example.org"),
            vec!["conference.example.org", "upload.example.org"]
        );
        let flood: String = (0..100)
            .map(|i| format!("<item jid='c{i}.example.org'/>"))
            .collect();
        let flood = xml(&format!(
            "<iq xmlns='jabber:client' type='result'><query xmlns='http://jabber.org/protocol/disco#items'>{flood}</query></iq>"
        ));
        assert_eq!(disco_items(&flood, "example.org").len(), MAX_ITEMS);
    }
}
