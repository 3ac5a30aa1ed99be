//! The browsable API page at `/docs`: Swagger UI over `/openapi.json`, from
//! files compiled into the binary (`crates/server/assets/`, its README names
//! the package and version), so nothing is downloaded at build or run time
//! and the page works offline. Like `/openapi.json` it is kept out of the
//! API description: it is not part of the API, and the contract tests fuzz
//! what the description lists.

use actix_web::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, LOCATION, X_CONTENT_TYPE_OPTIONS,
};
use actix_web::{web, HttpResponse};

/// One file served under `/docs`.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    /// Our own files are revalidated so a new binary's page shows at once;
    /// the vendored ones change only with an upgrade, and a day keeps
    /// reloads cheap without pinning an old copy for long after one.
    cache: &'static str,
    body: &'static [u8],
}

const OURS: &str = "no-cache";
const VENDORED: &str = "public, max-age=86400";

const ASSETS: &[Asset] = &[
    Asset {
        path: "/docs",
        content_type: "text/html; charset=utf-8",
        cache: OURS,
        body: include_bytes!("../../assets/docs.html"),
    },
    Asset {
        path: "/docs/docs-init.js",
        content_type: "text/javascript; charset=utf-8",
        cache: OURS,
        body: include_bytes!("../../assets/docs-init.js"),
    },
    Asset {
        path: "/docs/swagger-ui-bundle.js",
        content_type: "text/javascript; charset=utf-8",
        cache: VENDORED,
        body: include_bytes!("../../assets/swagger-ui/swagger-ui-bundle.js"),
    },
    Asset {
        path: "/docs/swagger-ui.css",
        content_type: "text/css; charset=utf-8",
        cache: VENDORED,
        body: include_bytes!("../../assets/swagger-ui/swagger-ui.css"),
    },
    Asset {
        path: "/docs/favicon-32x32.png",
        content_type: "image/png",
        cache: VENDORED,
        body: include_bytes!("../../assets/swagger-ui/favicon-32x32.png"),
    },
];

/// `/docs/` sends the browser to `/docs`: the page's links are absolute,
/// but a typed trailing slash should not meet a 404.
const SLASHED: &str = "/docs/";

/// The page may load this service's own files and call its API, nothing
/// else. Swagger UI sets inline `style` attributes, hence `'unsafe-inline'`
/// for styles only; its icons are `data:` images.
const PAGE_POLICY: &str =
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// Every path served here (for the 405 that other methods get).
pub fn paths() -> impl Iterator<Item = &'static str> {
    ASSETS.iter().map(|a| a.path).chain([SLASHED])
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    for asset in ASSETS {
        cfg.route(asset.path, web::get().to(move || serve(asset)));
    }
    cfg.route(
        SLASHED,
        web::get().to(|| async {
            HttpResponse::PermanentRedirect()
                .insert_header((LOCATION, "/docs"))
                .finish()
        }),
    );
}

async fn serve(asset: &'static Asset) -> HttpResponse {
    let mut res = HttpResponse::Ok();
    res.content_type(asset.content_type)
        .insert_header((CACHE_CONTROL, asset.cache))
        .insert_header((X_CONTENT_TYPE_OPTIONS, "nosniff"));
    if asset.content_type.starts_with("text/html") {
        res.insert_header((CONTENT_SECURITY_POLICY, PAGE_POLICY));
    }
    res.body(asset.body)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The `src` and `href` values of the page.
    fn references(html: &str) -> Vec<&str> {
        let mut found = Vec::new();
        for attr in ["src=\"", "href=\""] {
            for (at, _) in html.match_indices(attr) {
                let rest = &html[at + attr.len()..];
                found.push(&rest[..rest.find('"').unwrap()]);
            }
        }
        found
    }

    #[test]
    fn the_page_references_only_files_served_here() {
        let html = std::str::from_utf8(ASSETS[0].body).unwrap();
        let refs = references(html);
        assert!(refs.len() >= 4, "{refs:?}");
        for r in refs {
            assert!(
                r == "/openapi.json" || ASSETS.iter().any(|a| a.path == r),
                "{r} is not served by this module"
            );
        }
        assert!(!html.contains("<script>"), "no inline script");
        assert!(ASSETS.iter().all(|a| !a.body.is_empty()));
    }
}
