//! `--html FILE`: one self-contained HTML report (no network needed to open it) drawn from the
//! same JSON object `--json` prints, so the picture and the numbers cannot disagree.
//!
//! The page (`report.html`) takes a list of named runs: the loadtest writes a list of one;
//! `benches/compare_html.py` fills the same page with several runs (Herald, uWebSockets.js,
//! Node `ws`) overlaid. The SVG drawing code is the dashboard's (`src/site/chart.js`).

use serde_json::{json, Value};

use super::Run;

/// The page, with [`CHART_SLOT`] and [`RUNS_SLOT`] to fill.
pub const TEMPLATE: &str = include_str!("report.html");
/// The dashboard's chart code, shared.
const CHART_JS: &str = include_str!("../../../../src/site/chart.js");
/// Where [`CHART_JS`] goes.
const CHART_SLOT: &str = "/*HERALD_CHART_JS*/";
/// Where the runs go: a JS array literal of `{name, report}`.
const RUNS_SLOT: &str = "/*HERALD_RUNS*/[]";

/// The page for `runs` (`{name, report}` objects, `report` as `--json` prints it).
pub fn page(runs: &Value) -> String {
    // `</` inside a string would end the script element early; JSON allows `<\/`.
    let runs = runs.to_string().replace("</", "<\\/");
    TEMPLATE
        .replacen(CHART_SLOT, CHART_JS, 1)
        .replacen(RUNS_SLOT, &runs, 1)
}

impl Run<'_> {
    /// The `--html` page of this run.
    pub fn html(&self) -> String {
        let name = self.cfg.targets.first().map_or("run", |t| t.url.as_str());
        page(&json!([{ "name": name, "report": self.json() }]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_inlines_the_chart_code_and_the_runs() {
        let html = page(&json!([{ "name": "a</script>", "report": {"x": 1} }]));
        assert!(html.contains("const HeraldChart"));
        assert!(!html.contains(CHART_SLOT));
        assert!(html.contains(r#"[{"name":"a<\/script>","report":{"x":1}}]"#));
        assert!(!html.contains("src=\"http"), "nothing is fetched");
    }
}
