//! The dashboard at `GET /` (SPEC section 5): one page a person on call reads, served from
//! the binary itself.
//!
//! Why it looks like this:
//! - The page, its script and its style sheet are embedded with `include_str!`, so a
//!   balancer on a machine with no route to the internet (the usual case) still shows it,
//!   and the page a binary serves always matches the API that binary speaks.
//! - The balancer does no work for the page beyond the views it already has: the script
//!   polls `/api/v1/clusters`, `/api/v1/listeners`, `/api/v1/config`, `/api/v1/reloads` and
//!   `/metrics`, and computes rates and percentiles itself from the differences between
//!   scrapes. Nobody watching costs nothing.
//! - The page only reads. It offers no drain or reload buttons, so it needs no credentials
//!   and cannot be turned against the balancer by a cross-site request.
//! - Every response carries a strict Content-Security-Policy: scripts, styles and fetches
//!   from this origin only, no inline code, no framing. The script also never writes markup
//!   (names from the configuration reach the page as text), the policy is the second line.

use http::{HeaderValue, Response, header};

use super::api::Body;

/// One embedded file of the dashboard.
#[derive(Debug)]
pub struct Asset {
    /// The admin path it is served at.
    pub path: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its contents.
    pub body: &'static str,
}

/// The path of the page itself.
pub const PAGE_PATH: &str = "/";
/// The path of the page's script.
pub const SCRIPT_PATH: &str = "/dashboard/dashboard.js";
/// The path of the page's style sheet.
pub const STYLE_PATH: &str = "/dashboard/dashboard.css";

/// The page.
pub static PAGE: Asset = Asset {
    path: PAGE_PATH,
    content_type: "text/html; charset=utf-8",
    body: include_str!("dashboard/index.html"),
};

/// The script that polls the API and renders the panels.
pub static SCRIPT: Asset = Asset {
    path: SCRIPT_PATH,
    content_type: "text/javascript; charset=utf-8",
    body: include_str!("dashboard/dashboard.js"),
};

/// The style sheet (state colours, tables).
pub static STYLE: Asset = Asset {
    path: STYLE_PATH,
    content_type: "text/css; charset=utf-8",
    body: include_str!("dashboard/dashboard.css"),
};

/// Every file of the dashboard.
pub static ASSETS: [&Asset; 3] = [&PAGE, &SCRIPT, &STYLE];

/// The policy on every dashboard response: nothing from another origin, no inline script or
/// style, no plugins, no framing (the page cannot be overlaid by another site), and no
/// form submissions or `<base>` tricks.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// The embedded file served at `path`, if any.
pub fn asset(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().copied().find(|a| a.path == path)
}

/// The response for `asset`, with the security headers. `no-cache` lets a browser keep the
/// file but makes it ask again, so an upgraded binary's page is never mixed with an old
/// script.
pub fn serve(asset: &Asset) -> Response<Body> {
    let mut response = Response::new(Body::from(asset.body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The values of every `attribute="..."` in `html`.
    fn attribute_values<'a>(html: &'a str, attribute: &str) -> Vec<&'a str> {
        let needle = format!("{attribute}=\"");
        html.match_indices(&needle)
            .filter_map(|(at, _)| {
                let rest = &html[at + needle.len()..];
                rest.find('"').map(|end| &rest[..end])
            })
            .collect()
    }

    #[test]
    fn the_page_loads_only_its_own_embedded_files() {
        let mut referenced = attribute_values(PAGE.body, "src");
        referenced.extend(attribute_values(PAGE.body, "href"));
        assert_eq!(referenced.len(), 2, "one script and one style sheet");
        for path in referenced {
            let found = asset(path).unwrap_or_else(|| panic!("{path} is not embedded"));
            assert_ne!(found.path, PAGE_PATH);
        }
    }

    #[test]
    fn no_asset_names_another_origin() {
        for asset in ASSETS {
            for scheme in ["http://", "https://", "//cdn", "@import", "url("] {
                assert!(
                    !asset.body.contains(scheme),
                    "{} mentions {scheme:?}: the dashboard must fetch nothing from outside",
                    asset.path
                );
            }
        }
    }

    #[test]
    fn the_script_never_parses_strings_as_markup_or_code() {
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
            "setAttribute(\"on",
        ] {
            assert!(!SCRIPT.body.contains(sink), "dashboard.js uses {sink}");
        }
    }

    #[test]
    fn every_asset_is_served_with_its_type_and_the_strict_policy() {
        for asset in ASSETS {
            let response = serve(asset);
            let headers = response.headers();
            assert_eq!(headers[header::CONTENT_TYPE], asset.content_type);
            assert_eq!(
                headers[header::CONTENT_SECURITY_POLICY],
                CONTENT_SECURITY_POLICY
            );
            assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY");
        }
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe"));
        assert!(CONTENT_SECURITY_POLICY.starts_with("default-src 'none'"));
    }

    #[test]
    fn unknown_paths_are_not_assets() {
        assert!(asset("/dashboard/").is_none());
        assert!(asset("/dashboard/../Cargo.toml").is_none());
        assert!(asset("/index.html").is_none());
        assert_eq!(asset("/").map(|a| a.path), Some(PAGE_PATH));
    }
}
