//! Content parts of a chat message that are not text: images, audio, files.
//!
//! The guard scans text only, so every other part is content that reaches a model
//! unscanned, and a part that *points* somewhere (an `http` image URL, a `file_id`)
//! makes the model's host fetch or read something on the tenant's behalf: an SSRF
//! path into the model network, or another tenant's file in a shared upstream
//! account. So: a part is refused unless the tenant's pack opens its type
//! (`ContentPolicy`); an opened type is accepted only inline and size-capped; an
//! `http(s)` image URL is fetched by Bulkhead itself (`crate::fetch`) and sent on as a
//! `data:` URL; a `file_id` is always refused.
//!
//! Two steps, both without IO: `sanitize_parts` (at parse time: the part's shape,
//! its known fields only, the refusals that hold for every tenant) and `admit` (once
//! the tenant's pack is known: the allow-list and the size caps, and which URLs to
//! fetch). Must never: let a part of an unknown type, a `file_id` or a non-`data:`
//! URL through to an upstream.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::openai::{Message, RequestError};

/// A type of content part a pack may open. Text (and `refusal` on assistant
/// messages) is always accepted and is not listed here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartType {
    ImageUrl,
    InputAudio,
    File,
}

impl PartType {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ImageUrl => "image_url",
            Self::InputAudio => "input_audio",
            Self::File => "file",
        }
    }
}

/// A pack's `[content]` table: the non-text part types its tenants may send.
/// Empty (the default): text only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContentPolicy {
    #[serde(default)]
    pub allow: Vec<PartType>,
}

impl ContentPolicy {
    /// Text only: what a pack without a `[content]` table means.
    pub fn is_unset(&self) -> bool {
        self.allow.is_empty()
    }

    pub fn allows(&self, t: PartType) -> bool {
        self.allow.contains(&t)
    }
}

/// Limits on the parts an opened type may carry.
#[derive(Debug, Clone, Copy)]
pub struct ContentLimits {
    /// The largest part, decoded (an image, fetched or inline; audio; a file).
    pub part_bytes_max: usize,
    /// The most image URLs one request may ask Bulkhead to fetch.
    pub fetches_max: usize,
}

/// 5 MiB: a photo at the resolution models read.
pub const PART_BYTES_MAX_DEFAULT: usize = 5 * 1024 * 1024;

impl Default for ContentLimits {
    fn default() -> Self {
        Self {
            part_bytes_max: PART_BYTES_MAX_DEFAULT,
            fetches_max: 8,
        }
    }
}

/// Image media types a model may receive. Not `image/svg+xml`: SVG is markup,
/// text the guard would not scan.
pub const IMAGE_TYPES: &[&str] = &["image/png", "image/jpeg", "image/gif", "image/webp"];

/// Audio formats of `input_audio` (OpenAI's).
const AUDIO_FORMATS: &[&str] = &["wav", "mp3"];

/// An `http(s)` image URL that `admit` accepted: Bulkhead fetches it, and
/// `set_image_data` puts what it fetched in its place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFetch {
    pub message: usize,
    pub part: usize,
    pub url: String,
}

impl ImageFetch {
    /// How errors name the part: `messages[2].content[1]`.
    pub fn at(&self) -> String {
        at(self.message, self.part)
    }
}

fn at(message: usize, part: usize) -> String {
    format!("messages[{message}].content[{part}]")
}

fn refused(message: usize, part: usize, why: impl std::fmt::Display) -> RequestError {
    RequestError::Invalid(format!("{}: {why}", at(message, part)))
}

/// A message's content parts, each checked for its shape and rebuilt from its
/// known fields (anything else in a part is dropped, as in a message). Refused for
/// every tenant: a part of an unknown type, a `refusal` part outside an assistant
/// message, a `file_id`.
pub fn sanitize_parts(
    message: usize,
    role: &str,
    parts: Vec<Value>,
) -> Result<Vec<Value>, RequestError> {
    parts
        .into_iter()
        .enumerate()
        .map(|(j, part)| sanitize_part(message, j, role, part))
        .collect()
}

fn sanitize_part(i: usize, j: usize, role: &str, part: Value) -> Result<Value, RequestError> {
    let Value::Object(mut part) = part else {
        return Err(RequestError::Invalid(format!(
            "messages[{i}].content parts must be objects"
        )));
    };
    let Some(Value::String(kind)) = part.remove("type") else {
        return Err(refused(i, j, "a content part needs a string `type`"));
    };
    let field = |part: &mut Map<String, Value>, name: &str| part.remove(name);
    match kind.as_str() {
        "text" => match field(&mut part, "text") {
            Some(Value::String(t)) => Ok(json!({"type": "text", "text": t})),
            _ => Err(refused(i, j, "a text part needs a string `text`")),
        },
        "refusal" if role == "assistant" => match field(&mut part, "refusal") {
            Some(Value::String(t)) => Ok(json!({"type": "refusal", "refusal": t})),
            _ => Err(refused(i, j, "a refusal part needs a string `refusal`")),
        },
        "refusal" => Err(refused(
            i,
            j,
            "refusal parts are only accepted in assistant messages",
        )),
        "image_url" => {
            let Some(Value::Object(mut image)) = field(&mut part, "image_url") else {
                return Err(refused(
                    i,
                    j,
                    "an image_url part needs an `image_url` object",
                ));
            };
            let Some(Value::String(url)) = image.remove("url") else {
                return Err(refused(i, j, "image_url.url must be a string"));
            };
            let mut out = Map::new();
            out.insert("url".into(), Value::String(url));
            match image.remove("detail") {
                None | Some(Value::Null) => {}
                Some(Value::String(d)) if matches!(d.as_str(), "auto" | "low" | "high") => {
                    out.insert("detail".into(), Value::String(d));
                }
                Some(_) => {
                    return Err(refused(i, j, "image_url.detail must be auto, low or high"));
                }
            }
            Ok(json!({"type": "image_url", "image_url": out}))
        }
        "input_audio" => {
            let Some(Value::Object(mut audio)) = field(&mut part, "input_audio") else {
                return Err(refused(
                    i,
                    j,
                    "an input_audio part needs an `input_audio` object",
                ));
            };
            match (audio.remove("data"), audio.remove("format")) {
                (Some(Value::String(data)), Some(Value::String(format)))
                    if AUDIO_FORMATS.contains(&format.as_str()) =>
                {
                    Ok(
                        json!({"type": "input_audio", "input_audio": {"data": data, "format": format}}),
                    )
                }
                _ => Err(refused(
                    i,
                    j,
                    format!(
                        "input_audio needs base64 `data` and a `format` of {}",
                        AUDIO_FORMATS.join(", ")
                    ),
                )),
            }
        }
        "file" => {
            let Some(Value::Object(mut file)) = field(&mut part, "file") else {
                return Err(refused(i, j, "a file part needs a `file` object"));
            };
            if file.get("file_id").is_some_and(|v| !v.is_null()) {
                // Upstream file ids live in the upstream account, which every tenant
                // shares: one tenant could name another's upload.
                return Err(refused(
                    i,
                    j,
                    "file_id is not accepted: uploaded files live in an upstream account shared by every tenant; send the file inline as file_data",
                ));
            }
            let Some(Value::String(data)) = file.remove("file_data") else {
                return Err(refused(i, j, "a file part needs inline `file_data`"));
            };
            let mut out = Map::new();
            out.insert("file_data".into(), Value::String(data));
            match file.remove("filename") {
                None | Some(Value::Null) => {}
                Some(Value::String(n)) if n.len() <= 255 && !n.contains(char::is_control) => {
                    out.insert("filename".into(), Value::String(n));
                }
                Some(_) => {
                    return Err(refused(i, j, "file.filename must be a short string"));
                }
            }
            Ok(json!({"type": "file", "file": out}))
        }
        other => Err(refused(
            i,
            j,
            format!(
                "content parts of type {:?} are not accepted (text, image_url, input_audio, file)",
                other.chars().take(40).collect::<String>()
            ),
        )),
    }
}

/// Checks every non-text part of sanitized messages against the tenant's pack and
/// the size caps, and returns the image URLs to fetch. Pure: the fetch is the
/// caller's.
pub fn admit(
    messages: &[Message],
    policy: &ContentPolicy,
    limits: ContentLimits,
) -> Result<Vec<ImageFetch>, RequestError> {
    let mut fetches = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let Some(Value::Array(parts)) = m.0.get("content") else {
            continue;
        };
        for (j, part) in parts.iter().enumerate() {
            let kind = match part.get("type").and_then(Value::as_str) {
                Some("image_url") => PartType::ImageUrl,
                Some("input_audio") => PartType::InputAudio,
                Some("file") => PartType::File,
                // Text and refusal; `sanitize_parts` let nothing else through.
                _ => continue,
            };
            if !policy.allows(kind) {
                return Err(refused(
                    i,
                    j,
                    format!("{} parts are not allowed for this tenant", kind.as_str()),
                ));
            }
            let text = |pointer: &str| part.pointer(pointer).and_then(Value::as_str).unwrap_or("");
            match kind {
                PartType::ImageUrl => {
                    let url = text("/image_url/url");
                    if has_scheme(url, "data:") {
                        check_data_url(url, IMAGE_TYPES, limits)
                            .map_err(|why| refused(i, j, format!("image_url: {why}")))?;
                    } else if has_scheme(url, "https:") || has_scheme(url, "http:") {
                        if fetches.len() == limits.fetches_max {
                            return Err(refused(
                                i,
                                j,
                                format!(
                                    "at most {} image URLs per request; send more images inline as data: URLs",
                                    limits.fetches_max
                                ),
                            ));
                        }
                        fetches.push(ImageFetch {
                            message: i,
                            part: j,
                            url: url.to_owned(),
                        });
                    } else {
                        return Err(refused(
                            i,
                            j,
                            "image_url.url must be a data: URL or an http(s) URL",
                        ));
                    }
                }
                PartType::InputAudio => {
                    check_base64(text("/input_audio/data"), limits)
                        .map_err(|why| refused(i, j, format!("input_audio.data: {why}")))?;
                }
                PartType::File => {
                    let data = text("/file/file_data");
                    let checked = if has_scheme(data, "data:") {
                        check_data_url(data, &[], limits)
                    } else {
                        check_base64(data, limits)
                    };
                    checked.map_err(|why| refused(i, j, format!("file.file_data: {why}")))?;
                }
            }
        }
    }
    Ok(fetches)
}

fn has_scheme(url: &str, scheme: &str) -> bool {
    url.get(..scheme.len())
        .is_some_and(|s| s.eq_ignore_ascii_case(scheme))
}

/// A `data:<type>;base64,<data>` URL of one of `types` (any type when empty),
/// at most the part cap decoded.
fn check_data_url(url: &str, types: &[&str], limits: ContentLimits) -> Result<(), String> {
    let rest = &url["data:".len()..];
    let Some((head, data)) = rest.split_once(',') else {
        return Err("a data: URL needs a comma before its data".into());
    };
    let Some(media_type) = head.strip_suffix(";base64") else {
        return Err("a data: URL must be base64 (data:<type>;base64,…)".into());
    };
    let media_type = media_type.to_ascii_lowercase();
    if !types.is_empty() && !types.contains(&media_type.as_str()) {
        return Err(format!(
            "the media type must be one of {}, not {:?}",
            types.join(", "),
            media_type.chars().take(60).collect::<String>()
        ));
    }
    check_base64(data, limits)
}

/// Standard base64 (padded or not) of at most the part cap decoded. Checked by
/// its length and alphabet, without decoding: this runs on the async path.
fn check_base64(data: &str, limits: ContentLimits) -> Result<(), String> {
    let body = data.trim_end_matches('=');
    if body.is_empty()
        || body.len() % 4 == 1
        || data.len() - body.len() > 2
        || !body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
    {
        return Err("must be non-empty standard base64".into());
    }
    let decoded = body.len() / 4 * 3 + (body.len() % 4).saturating_sub(1);
    if decoded > limits.part_bytes_max {
        return Err(format!(
            "{decoded} bytes decoded, more than the {} bytes a part may have",
            limits.part_bytes_max
        ));
    }
    Ok(())
}

/// The `data:` URL of fetched image bytes.
pub fn data_url(media_type: &str, bytes: &[u8]) -> String {
    use base64::Engine as _;
    format!(
        "data:{media_type};base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// Puts a fetched image's `data:` URL where the part's URL was.
pub fn set_image_data(messages: &mut [Message], fetch: &ImageFetch, data_url: String) {
    let slot = messages
        .get_mut(fetch.message)
        .and_then(|m| m.0.get_mut("content"))
        .and_then(|c| c.get_mut(fetch.part))
        .and_then(|p| p.pointer_mut("/image_url/url"));
    // `admit` found an image URL at exactly this place in these messages.
    debug_assert!(slot.is_some(), "the fetched part is where admit found it");
    if let Some(slot) = slot {
        *slot = Value::String(data_url);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::{RequestLimits, parse_chat};

    fn parse(messages: Value) -> Result<Vec<Message>, RequestError> {
        let body = json!({"model": "m", "messages": messages});
        parse_chat(
            &serde_json::to_vec(&body).unwrap(),
            RequestLimits::default(),
        )
        .map(|r| r.messages)
    }

    fn refusal(r: Result<impl std::fmt::Debug, RequestError>) -> String {
        match r {
            Err(RequestError::Invalid(m)) => m,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    fn user(parts: Value) -> Value {
        json!([{"role": "system", "content": "s"}, {"role": "user", "content": parts}])
    }

    fn image(url: &str) -> Value {
        json!({"type": "image_url", "image_url": {"url": url}})
    }

    const PNG_1: &str = "data:image/png;base64,iVBORw0KGgo=";

    fn allow(types: &[PartType]) -> ContentPolicy {
        ContentPolicy {
            allow: types.to_vec(),
        }
    }

    fn check(messages: Value, policy: &ContentPolicy) -> Result<Vec<ImageFetch>, RequestError> {
        admit(&parse(messages)?, policy, ContentLimits::default())
    }

    #[test]
    fn unknown_types_file_ids_and_misplaced_refusals_are_refused_for_everyone() {
        let m = refusal(parse(user(
            json!([{"type": "video_url", "video_url": {"url": "x"}}]),
        )));
        assert!(
            m.starts_with("messages[1].content[0]: ") && m.contains("video_url"),
            "{m}"
        );
        let m = refusal(parse(user(
            json!([{"type": "text", "text": "a"}, {"type": "file", "file": {"file_id": "file-abc"}}]),
        )));
        assert!(
            m.starts_with("messages[1].content[1]: file_id is not accepted"),
            "{m}"
        );
        let m = refusal(parse(user(json!([{"type": "refusal", "refusal": "no"}]))));
        assert!(m.contains("only accepted in assistant messages"), "{m}");
        let m = refusal(parse(user(json!([{"text": "no type"}]))));
        assert!(m.contains("string `type`"), "{m}");
        let m = refusal(parse(user(json!([{"type": "text", "text": 7}]))));
        assert!(m.contains("string `text`"), "{m}");
        let m = refusal(parse(user(
            json!([{"type": "image_url", "image_url": {"url": PNG_1, "detail": "max"}}]),
        )));
        assert!(m.contains("detail"), "{m}");
        // The same shapes pass where they belong.
        parse(json!([{"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]}]))
            .unwrap();
    }

    #[test]
    fn parts_keep_only_their_known_fields() {
        let m = parse(user(json!([
            {"type": "text", "text": "a", "image_url": {"url": "http://169.254.169.254/"}},
            {"type": "image_url", "image_url": {"url": PNG_1, "detail": "low", "x": 1}, "file": {}},
            {"type": "file", "file": {"file_data": "AAAA", "filename": "a.pdf", "file_id": null}},
        ])))
        .unwrap();
        assert_eq!(
            m[1].0["content"],
            json!([
                {"type": "text", "text": "a"},
                {"type": "image_url", "image_url": {"url": PNG_1, "detail": "low"}},
                {"type": "file", "file": {"file_data": "AAAA", "filename": "a.pdf"}},
            ])
        );
    }

    #[test]
    fn a_default_tenant_gets_text_only_and_the_part_is_named() {
        let text_only = ContentPolicy::default();
        assert!(
            check(user(json!([{"type": "text", "text": "hi"}])), &text_only)
                .unwrap()
                .is_empty()
        );
        assert!(
            check(json!([{"role": "user", "content": "hi"}]), &text_only)
                .unwrap()
                .is_empty()
        );
        for (part, name) in [
            (image(PNG_1), "image_url"),
            (image("https://example.com/cat.png"), "image_url"),
            (
                json!({"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}),
                "input_audio",
            ),
            (
                json!({"type": "file", "file": {"file_data": "AAAA"}}),
                "file",
            ),
        ] {
            let m = refusal(check(
                user(json!([{"type": "text", "text": "a"}, part])),
                &text_only,
            ));
            assert_eq!(
                m,
                format!("messages[1].content[1]: {name} parts are not allowed for this tenant")
            );
        }
        // Opening one type opens only that one.
        let m = refusal(check(
            user(
                json!([{"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]),
            ),
            &allow(&[PartType::ImageUrl]),
        ));
        assert!(m.contains("input_audio parts are not allowed"), "{m}");
    }

    #[test]
    fn opened_types_are_inline_capped_or_fetched() {
        let all = allow(&[PartType::ImageUrl, PartType::InputAudio, PartType::File]);
        let limits = ContentLimits {
            part_bytes_max: 6,
            fetches_max: 1,
        };
        let check = |parts: Value| parse(user(parts)).and_then(|m| admit(&m, &all, limits));
        // Inline, within the cap.
        assert!(
            check(json!([image("DATA:image/PNG;base64,AAAAAAAA")]))
                .unwrap()
                .is_empty()
        );
        check(
            json!([{"type": "input_audio", "input_audio": {"data": "AAAAAAA=", "format": "mp3"}}]),
        )
        .unwrap();
        check(json!([{"type": "file", "file": {"file_data": "data:application/pdf;base64,AAAAAAAA"}}])).unwrap();
        // Over the cap (9 bytes decoded), not base64, not an image, other schemes.
        for (parts, needle) in [
            (
                json!([image("data:image/png;base64,AAAAAAAAAAAA")]),
                "9 bytes decoded",
            ),
            (
                json!([{"type": "input_audio", "input_audio": {"data": "AAAAAAAAAAAA", "format": "wav"}}]),
                "9 bytes decoded",
            ),
            (
                json!([{"type": "file", "file": {"file_data": "AAAAAAAAAAAA"}}]),
                "9 bytes decoded",
            ),
            (json!([image("data:image/png;base64,AA$A")]), "base64"),
            (json!([image("data:image/png,rawbytes")]), "must be base64"),
            (
                json!([image("data:image/svg+xml;base64,AAAA")]),
                "media type",
            ),
            (json!([image("data:text/html;base64,AAAA")]), "media type"),
            (
                json!([image("file:///etc/passwd")]),
                "data: URL or an http(s) URL",
            ),
            (
                json!([image("gopher://10.0.0.1/")]),
                "data: URL or an http(s) URL",
            ),
            (
                json!([{"type": "input_audio", "input_audio": {"data": "AAAA", "format": "flac"}}]),
                "format",
            ),
        ] {
            let m = refusal(check(parts.clone()));
            assert!(
                m.starts_with("messages[1].content[0]: ") && m.contains(needle),
                "{parts}: {m}"
            );
        }
        // An http(s) URL is a fetch, not a passthrough; the number of fetches is capped.
        let fetches =
            check(json!([{"type": "text", "text": "look"}, image("HTTPS://example.com/cat.png")]))
                .unwrap();
        assert_eq!(
            fetches,
            [ImageFetch {
                message: 1,
                part: 1,
                url: "HTTPS://example.com/cat.png".into()
            }]
        );
        let m = refusal(check(json!([
            image("http://a.example/1.png"),
            image("http://a.example/2.png")
        ])));
        assert!(
            m.starts_with("messages[1].content[1]: at most 1 image URLs"),
            "{m}"
        );
    }

    #[test]
    fn a_fetched_image_replaces_its_url() {
        let mut m = parse(user(
            json!([{"type": "text", "text": "a"}, image("https://example.com/x.png")]),
        ))
        .unwrap();
        let fetch = ImageFetch {
            message: 1,
            part: 1,
            url: "https://example.com/x.png".into(),
        };
        set_image_data(&mut m, &fetch, data_url("image/png", b"\x89PNG"));
        assert_eq!(
            m[1].0["content"][1]["image_url"]["url"],
            "data:image/png;base64,iVBORw=="
        );
        assert_eq!(m[1].text(), "a");
    }
}
