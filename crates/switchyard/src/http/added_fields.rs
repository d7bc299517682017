//! The fields a request gains on its way upstream, kept beside its header map.
//!
//! Every proxied request gains up to six fields (SPEC 4): `X-Request-Id`,
//! `X-Forwarded-For`, `X-Forwarded-Proto`, `X-Forwarded-Host`, `Forwarded` and `Via`.
//! Inserting them into the request's `http::HeaderMap` costs each a hash, a probe and an
//! insert, and then the HTTP/1.1 client only reads them back out to write them. So a field
//! whose name the client's request does not carry is kept here instead ([`AddedFields`]),
//! and the HTTP/1.1 client writes it straight after the map's fields. A field whose name
//! the request already carries is still edited in the map (a list appended to, a trusted
//! proxy's value kept), so a name is never written twice.
//!
//! The rule that keeps this safe mirrors the one for an upstream's raw response fields
//! (module `raw_fields`): a request's fields are its map *and* its added fields. Whatever
//! reads or edits them beyond the HTTP/1.1 client's write (route `request_headers` edits,
//! the HTTP/2 and upgrade clients, which hand the map to hyper, and the copy kept for a
//! retry) first moves the added fields into the map ([`into_map`],
//! [`AddedFields::append_to`]); from then on the map is the whole truth. The added fields
//! ride on the request body ([`super::body::RequestBody`]), which goes wherever the head
//! goes.

use http::header::{Entry, FORWARDED, VIA};
use http::{HeaderMap, HeaderValue, Request};

use super::body::RequestBody;
use super::forwarding::{
    X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO, X_REQUEST_ID, append_to_list,
};

/// The added fields not (yet) in a request's map: a handle, boxed so that the request
/// body carrying it stays small to move (most requests carry four or more fields).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddedFields(Option<Box<AddedValues>>);

/// The values of [`AddedFields`], each field at most once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddedValues {
    /// `X-Request-Id`: a fresh id, when the request carried none.
    pub request_id: Option<HeaderValue>,
    /// `X-Forwarded-For`: the peer's address, when the request carried no list.
    pub forwarded_for: Option<HeaderValue>,
    /// `X-Forwarded-Proto`, when no trusted peer set one.
    pub forwarded_proto: Option<HeaderValue>,
    /// `X-Forwarded-Host`, when no trusted peer set one.
    pub forwarded_host: Option<HeaderValue>,
    /// `Forwarded`: this hop's element, when the request carried no list.
    pub forwarded: Option<HeaderValue>,
    /// `Via`: this hop's entry, when the request carried no list.
    pub via: Option<HeaderValue>,
}

impl AddedValues {
    /// Every field's name and value (if set), in the order they are written.
    fn slots(&self) -> [(&'static str, Option<&HeaderValue>); 6] {
        [
            ("x-request-id", self.request_id.as_ref()),
            ("x-forwarded-for", self.forwarded_for.as_ref()),
            ("x-forwarded-proto", self.forwarded_proto.as_ref()),
            ("x-forwarded-host", self.forwarded_host.as_ref()),
            ("forwarded", self.forwarded.as_ref()),
            ("via", self.via.as_ref()),
        ]
    }
}

impl AddedFields {
    /// The fields `values` holds (nothing is boxed when it holds none).
    pub fn new(values: AddedValues) -> AddedFields {
        AddedFields((values != AddedValues::default()).then(|| Box::new(values)))
    }

    /// The values, to set one.
    pub fn values_mut(&mut self) -> &mut AddedValues {
        self.0.get_or_insert_default()
    }

    /// The fields, lowercase names first, in the order they are written.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &HeaderValue)> {
        self.0.as_deref().into_iter().flat_map(|values| {
            values
                .slots()
                .into_iter()
                .filter_map(|(name, value)| Some((name, value?)))
        })
    }

    /// Calls `each` with every field, in the order of [`AddedFields::iter`]. (A plain
    /// loop: the HTTP/1.1 client writes every request's fields with it.)
    pub fn for_each(&self, mut each: impl FnMut(&'static str, &HeaderValue)) {
        let Some(values) = self.0.as_deref() else {
            return;
        };
        for (name, value) in values.slots() {
            if let Some(value) = value {
                each(name, value);
            }
        }
    }

    /// Whether no field is kept here.
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }

    /// Moves the fields into `headers`: the lists (`X-Forwarded-For`, `Forwarded`, `Via`)
    /// are appended to, the others set where the map has none, as if they had gone into
    /// the map in the first place.
    pub fn append_to(self, headers: &mut HeaderMap) {
        let Some(values) = self.0 else { return };
        let AddedValues {
            request_id,
            forwarded_for,
            forwarded_proto,
            forwarded_host,
            forwarded,
            via,
        } = *values;
        let lists = [
            (X_FORWARDED_FOR, forwarded_for),
            (FORWARDED, forwarded),
            (VIA, via),
        ];
        for (name, value) in lists {
            if let Some(value) = value {
                append_to_list(headers, name, value);
            }
        }
        let singles = [
            (X_REQUEST_ID, request_id),
            (X_FORWARDED_PROTO, forwarded_proto),
            (X_FORWARDED_HOST, forwarded_host),
        ];
        for (name, value) in singles {
            if let (Some(value), Entry::Vacant(slot)) = (value, headers.entry(name)) {
                slot.insert(value);
            }
        }
    }
}

/// Moves `request`'s added fields into its map, for a reader of the whole map.
pub fn into_map(request: &mut Request<RequestBody>) {
    let added = request.body_mut().take_added_fields();
    added.append_to(request.headers_mut());
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http::HeaderName;

    fn value(text: &'static str) -> Option<HeaderValue> {
        Some(HeaderValue::from_static(text))
    }

    fn every_field() -> AddedFields {
        AddedFields::new(AddedValues {
            request_id: value("id-1"),
            forwarded_for: value("192.0.2.7"),
            forwarded_proto: value("https"),
            forwarded_host: value("example.com"),
            forwarded: value("for=192.0.2.7"),
            via: value("1.1 switchyard"),
        })
    }

    #[test]
    fn the_fields_are_listed_in_write_order_and_absent_ones_skipped() {
        let mut added = every_field();
        added.values_mut().forwarded_host = None;
        let listed: Vec<(&str, &str)> = added
            .iter()
            .map(|(name, value)| (name, value.to_str().unwrap()))
            .collect();
        assert_eq!(
            listed,
            [
                ("x-request-id", "id-1"),
                ("x-forwarded-for", "192.0.2.7"),
                ("x-forwarded-proto", "https"),
                ("forwarded", "for=192.0.2.7"),
                ("via", "1.1 switchyard"),
            ]
        );
        assert!(!added.is_empty());
        assert!(AddedFields::default().is_empty());
        assert_eq!(
            AddedFields::new(AddedValues::default()),
            AddedFields::default(),
            "nothing boxed for no field"
        );
    }

    #[test]
    fn moving_into_a_map_appends_to_lists_and_fills_only_empty_singles() {
        let mut map = HeaderMap::new();
        map.insert(X_FORWARDED_FOR, HeaderValue::from_static("10.0.0.1"));
        map.insert(VIA, HeaderValue::from_static("1.0 edge"));
        map.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
        every_field().append_to(&mut map);
        let get = |name: &HeaderName| -> Vec<&str> {
            map.get_all(name)
                .iter()
                .map(|v| v.to_str().unwrap())
                .collect()
        };
        assert_eq!(get(&X_FORWARDED_FOR), ["10.0.0.1, 192.0.2.7"]);
        assert_eq!(get(&VIA), ["1.0 edge, 1.1 switchyard"]);
        assert_eq!(get(&X_FORWARDED_PROTO), ["http"]);
        assert_eq!(get(&X_FORWARDED_HOST), ["example.com"]);
        assert_eq!(get(&FORWARDED), ["for=192.0.2.7"]);
        assert_eq!(get(&X_REQUEST_ID), ["id-1"]);
        assert_eq!(map.len(), 6);
    }

    #[test]
    fn a_request_moves_its_added_fields_into_its_map_once() {
        let mut request = Request::new(RequestBody::empty().with_added_fields(every_field()));
        into_map(&mut request);
        assert_eq!(request.headers().len(), 6);
        assert!(request.body_mut().take_added_fields().is_empty());
        into_map(&mut request);
        assert_eq!(request.headers().len(), 6);
    }
}
