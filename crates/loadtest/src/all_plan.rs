//! `loadtest all`'s plan: every scenario (plus product-detail again with the
//! detail cache off), each entry's options and its own command line.

use crate::options::RunOptions;
use crate::scenarios::{Scenario, SCENARIOS};

/// One run of `all`: a scenario, maybe with its own settings and label.
#[derive(Debug, Clone)]
pub struct Entry {
    pub scenario: &'static Scenario,
    /// Applied after the command line's `--set`s, so they win.
    pub settings: Vec<(String, String)>,
    pub label: Option<&'static str>,
}

/// Every scenario in `SCENARIOS` order that `only` (empty: all) keeps and
/// `skip` leaves; product-detail is followed by its cache-off baseline
/// (issue 5).
pub fn plan(only: &[String], skip: &[String]) -> Vec<Entry> {
    let mut out = Vec::new();
    for s in SCENARIOS {
        let wanted = only.is_empty() || only.iter().any(|n| n == s.name);
        if !wanted || skip.iter().any(|n| n == s.name) {
            continue;
        }
        out.push(Entry {
            scenario: s,
            settings: Vec::new(),
            label: None,
        });
        if s.name == "product-detail" {
            out.push(Entry {
                scenario: s,
                settings: vec![("catalog.detail_cache".to_owned(), "false".to_owned())],
                label: Some("nocache"),
            });
        }
    }
    out
}

impl Entry {
    /// `all`'s options turned into this entry's run.
    pub fn options(&self, base: &RunOptions) -> RunOptions {
        let mut o = base.clone();
        o.scenario = self.scenario.name.to_owned();
        o.settings.extend(self.settings.iter().cloned());
        o.label = match (&base.label, self.label) {
            (Some(a), Some(b)) => Some(format!("{a}-{b}")),
            (Some(a), None) => Some(a.clone()),
            (None, b) => b.map(str::to_owned),
        };
        o.only.clear();
        o.skip.clear();
        o
    }

    /// The command line that runs this entry alone (for its report):
    /// `all`'s arguments without `all`, `--only`, `--skip` and `--label`,
    /// then the entry's `--set`s and label.
    pub fn argv(&self, all_argv: &[String], label: Option<&str>) -> Vec<String> {
        let mut out = vec![self.scenario.name.to_owned()];
        let mut it = all_argv.iter().skip(1);
        while let Some(arg) = it.next() {
            if matches!(arg.as_str(), "--only" | "--skip" | "--label") {
                it.next();
                continue;
            }
            // The same options written `--only=a,b` (clap takes that form).
            if ["--only=", "--skip=", "--label="]
                .iter()
                .any(|p| arg.starts_with(p))
            {
                continue;
            }
            out.push(arg.clone());
        }
        for (k, v) in &self.settings {
            out.push("--set".to_owned());
            out.push(format!("{k}={v}"));
        }
        if let Some(l) = label {
            out.push("--label".to_owned());
            out.push(l.to_owned());
        }
        out
    }
}

/// An entry for a test: the named scenario, and with a label the
/// cache-off settings.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) fn test_entry(name: &str, label: Option<&'static str>) -> Entry {
    Entry {
        scenario: crate::scenarios::find(name).unwrap(),
        settings: match label {
            Some(_) => vec![("catalog.detail_cache".into(), "false".into())],
            None => vec![],
        },
        label,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{self, Command};

    use super::test_entry as entry;

    #[test]
    fn plan_is_every_scenario_plus_the_cache_off_baseline() {
        let p = plan(&[], &[]);
        assert_eq!(p.len(), SCENARIOS.len() + 1);
        let names: Vec<String> = p
            .iter()
            .map(|e| format!("{}{}", e.scenario.name, e.label.unwrap_or("")))
            .collect();
        let at = names.iter().position(|n| n == "product-detail").unwrap();
        assert_eq!(names[at + 1], "product-detailnocache");
        assert_eq!(
            p[at + 1].settings,
            vec![("catalog.detail_cache".to_owned(), "false".to_owned())]
        );
        assert_eq!(names[0], "coupon-peak");

        let only: Vec<String> = vec!["order".into(), "product-detail".into()];
        let p = plan(&only, &[]);
        let names: Vec<&str> = p.iter().map(|e| e.scenario.name).collect();
        // SCENARIOS order, not --only's.
        assert_eq!(names, ["product-detail", "product-detail", "order"]);

        let p = plan(&[], &["product-detail".to_owned()]);
        assert!(p.iter().all(|e| e.scenario.name != "product-detail"));
        assert_eq!(p.len(), SCENARIOS.len() - 1);
    }

    fn all_opts(line: &str) -> (Vec<String>, RunOptions) {
        let argv: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        match cli::parse(&argv) {
            Ok(Command::All(o)) => (argv, *o),
            other => panic!("{other:?}"),
        }
    }

    fn plain_entry_options(base: &RunOptions) -> RunOptions {
        entry("charge", None).options(base)
    }

    #[test]
    fn an_entry_is_the_run_its_command_line_says() {
        let (argv, base) = all_opts(
            "all --quick --only product-detail,charge --set http.workers=1 --label n1 --no-ceiling",
        );
        for e in plan(&base.only, &base.skip) {
            let o = e.options(&base);
            let line = e.argv(&argv, o.label.as_deref());
            match cli::parse(&line) {
                Ok(Command::Run(parsed)) => assert_eq!(*parsed, o, "{line:?}"),
                other => panic!("{line:?}: {other:?}"),
            }
        }
        let nocache = entry("product-detail", Some("nocache"));
        let o = nocache.options(&base);
        assert_eq!(o.label.as_deref(), Some("n1-nocache"));
        assert_eq!(
            o.settings,
            vec![
                ("http.workers".to_owned(), "1".to_owned()),
                ("catalog.detail_cache".to_owned(), "false".to_owned()),
            ]
        );
        assert_eq!(
            nocache.argv(&argv, o.label.as_deref()).join(" "),
            "product-detail --quick --set http.workers=1 --no-ceiling \
             --set catalog.detail_cache=false --label n1-nocache"
        );
        let (argv, base) = all_opts("all --only=charge --label=n1 --quick");
        let o = plain_entry_options(&base);
        assert_eq!(
            entry("charge", None)
                .argv(&argv, o.label.as_deref())
                .join(" "),
            "charge --quick --label n1"
        );
        let (argv, base) = all_opts("all");
        let plain = entry("charge", None);
        assert_eq!(plain.options(&base).label, None);
        assert_eq!(plain.argv(&argv, None), vec!["charge".to_owned()]);
    }
}
