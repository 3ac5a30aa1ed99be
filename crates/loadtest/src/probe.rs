//! Which routes the running server has, read from `GET /openapi.json`, so a
//! scenario whose endpoints have not landed yet is reported as unavailable.

use crate::scenarios::Endpoint;
use serde_json::Value;
use std::collections::BTreeSet;

/// `/api/v1/orders/{order_id}/payment` -> `/api/v1/orders/{}/payment`.
pub fn normalize(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut in_param = false;
    for c in path.chars() {
        match c {
            '{' => {
                in_param = true;
                out.push_str("{}");
            }
            '}' => in_param = false,
            c if !in_param => out.push(c),
            _ => {}
        }
    }
    let trimmed = out.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".to_owned()
    } else {
        trimmed.to_owned()
    }
}

/// `(METHOD, normalized path)` of every operation in an OpenAPI document.
pub fn routes(openapi: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    if let Some(paths) = openapi.get("paths").and_then(Value::as_object) {
        for (path, item) in paths {
            if let Some(ops) = item.as_object() {
                for method in ops.keys() {
                    let m = method.to_ascii_uppercase();
                    if ["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&m.as_str()) {
                        out.insert((m, normalize(path)));
                    }
                }
            }
        }
    }
    out
}

/// The needed endpoints the server does not list.
pub fn missing(needs: &[Endpoint], have: &BTreeSet<(String, String)>) -> Vec<Endpoint> {
    needs
        .iter()
        .filter(|e| !have.contains(&(e.method.to_owned(), normalize(e.path))))
        .copied()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenarios;
    use serde_json::json;

    #[test]
    fn normalizes_parameter_names() {
        assert_eq!(
            normalize("/api/v1/orders/{order_id}/payment"),
            "/api/v1/orders/{}/payment"
        );
        assert_eq!(
            normalize("/api/v1/orders/{id}/payment/"),
            "/api/v1/orders/{}/payment"
        );
        assert_eq!(normalize("/"), "/");
    }

    #[test]
    fn finds_missing_endpoints() {
        let doc = json!({"paths": {
            "/api/v1/auth/token": {"post": {}},
            "/api/v1/me/balance": {"get": {}},
            "/api/v1/me/balance/charge": {"post": {}, "parameters": []},
        }});
        let have = routes(&doc);
        assert!(have.contains(&("GET".to_owned(), "/api/v1/me/balance".to_owned())));
        assert_eq!(have.len(), 3, "non-method keys are ignored");
        let charge = scenarios::find("charge").unwrap();
        assert!(missing(charge.needs, &have).is_empty());
        let peak = scenarios::find("coupon-peak").unwrap();
        let gone: Vec<&str> = missing(peak.needs, &have).iter().map(|e| e.path).collect();
        assert_eq!(
            gone,
            vec![
                "/admin/coupons",
                "/api/v1/coupons/{id}/issue",
                "/api/v1/me/coupons"
            ]
        );
    }

    #[test]
    fn parameter_names_may_differ_from_the_design() {
        let doc = json!({"paths": {"/api/v1/coupons/{coupon_id}/issue": {"post": {}}}});
        let need = [scenarios::Endpoint {
            method: "POST",
            path: "/api/v1/coupons/{id}/issue",
        }];
        assert!(missing(&need, &routes(&doc)).is_empty());
    }
}
