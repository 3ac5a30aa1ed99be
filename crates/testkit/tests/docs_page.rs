//! The browsable API page at `/docs`: served by the binary itself from
//! vendored files, same-origin only, and outside the API description.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use commerce_testkit::{split, TestApp};

/// The `src` and `href` values of a page.
fn references(html: &str) -> Vec<String> {
    let mut found = Vec::new();
    for attr in ["src=\"", "href=\""] {
        for (at, _) in html.match_indices(attr) {
            let rest = &html[at + attr.len()..];
            found.push(rest[..rest.find('"').unwrap()].to_owned());
        }
    }
    found
}

fn content_type(res: &reqwest::Response) -> String {
    res.headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_and_every_file_it_loads_are_served_here() {
    let app = TestApp::spawn().await;
    let res = app.client.get(app.url("/docs")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        content_type(&res).starts_with("text/html"),
        "{}",
        content_type(&res)
    );
    let policy = res
        .headers()
        .get("content-security-policy")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(policy.contains("script-src 'self'"), "{policy}");
    let html = res.text().await.unwrap();
    assert!(!html.contains("http://") && !html.contains("https://"));
    assert!(!html.contains("<script>"), "no inline script");

    let refs = references(&html);
    assert!(refs.iter().any(|r| r.ends_with(".js")), "{refs:?}");
    assert!(refs.iter().any(|r| r.ends_with(".css")), "{refs:?}");
    for r in &refs {
        // Same origin: an absolute path, not `//host/...` nor a URL.
        assert!(r.starts_with('/') && !r.starts_with("//"), "{r}");
        let res = app.client.get(app.url(r)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{r}");
        let expected = match r.rsplit('.').next() {
            Some("js") => "text/javascript",
            Some("css") => "text/css",
            Some("png") => "image/png",
            Some("json") => "application/json",
            other => panic!("{r}: unexpected kind of file {other:?}"),
        };
        let got = content_type(&res);
        assert!(got.starts_with(expected), "{r}: {got}");
        assert!(!res.bytes().await.unwrap().is_empty(), "{r}");
    }

    // The scripts the page loads start the UI on this service's description.
    let init = app
        .client
        .get(app.url("/docs/docs-init.js"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(init.contains("\"/openapi.json\""), "{init}");
    assert!(refs.iter().any(|r| r == "/docs/docs-init.js"), "{refs:?}");

    // A typed trailing slash lands on the page.
    let res = app.client.get(app.url("/docs/")).send().await.unwrap();
    assert_eq!((res.status().as_u16(), res.url().path()), (200, "/docs"));

    // Not part of the API: the description (which the contract tests fuzz)
    // does not list it.
    let (status, spec) = app.get_json("/openapi.json", None).await;
    assert_eq!(status, 200);
    let paths = spec["paths"].as_object().unwrap();
    assert!(!paths.is_empty());
    assert!(paths.keys().all(|p| !p.starts_with("/docs")), "{paths:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_methods_on_the_page_are_405_and_unknown_files_404() {
    let app = TestApp::spawn().await;
    for (method, path) in [
        (reqwest::Method::POST, "/docs"),
        (reqwest::Method::DELETE, "/docs"),
        (reqwest::Method::POST, "/docs/swagger-ui-bundle.js"),
        (reqwest::Method::PUT, "/docs/swagger-ui.css"),
    ] {
        let res = app
            .client
            .request(method.clone(), app.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 405, "{method} {path}");
        assert_eq!(
            res.headers().get("allow").unwrap(),
            "GET",
            "{method} {path}"
        );
        let (_, body) = split(res).await;
        assert_eq!(body["code"], "method_not_allowed", "{method} {path}");
    }
    let (status, body) = app.get_json("/docs/nothing-here.js", None).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
}
