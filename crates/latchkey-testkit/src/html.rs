//! Reading Latchkey's HTML pages the way a browser submits them: the hidden fields of a
//! form, with character references decoded.

/// Every `<input type="hidden" name="…" value="…">` of a page (the server writes the
/// attributes in exactly that order), unescaped.
pub fn hidden_fields(html: &str) -> Vec<(String, String)> {
    html.split(r#"<input type="hidden" name=""#)
        .skip(1)
        .filter_map(|tag| {
            let (name, rest) = tag.split_once('"')?;
            let (value, _) = rest.strip_prefix(r#" value=""#)?.split_once('"')?;
            Some((unescape(name), unescape(value)))
        })
        .collect()
}

/// Decodes the character references in an attribute value (named ones and `&#NN;` /
/// `&#xHH;`); anything else is kept as it is.
pub fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some((before, after)) = rest.split_once('&') {
        out.push_str(before);
        let decoded =
            after.split_once(';').and_then(|(entity, tail)| decode_entity(entity).map(|c| (c, tail)));
        if let Some((c, tail)) = decoded {
            out.push(c);
            rest = tail;
        } else {
            out.push('&');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The character of one reference, without its `&` and `;`.
fn decode_entity(entity: &str) -> Option<char> {
    match entity {
        "amp" => Some('&'),
        "quot" => Some('"'),
        "apos" => Some('\''),
        "lt" => Some('<'),
        "gt" => Some('>'),
        _ => {
            let number = entity.strip_prefix('#')?;
            let code = match number.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => number.parse().ok()?,
            };
            char::from_u32(code)
        }
    }
}
