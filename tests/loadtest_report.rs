//! `loadtest --html`: one run against a real Herald writes the JSON report and the HTML report;
//! the HTML opens in real Chromium without script errors, and every plotted series is the
//! JSON report's data (the percentile plot, the per-second rate, p99 and server CPU).

use std::process::Command;

use serde_json::Value;
use testkit::browser::{save_artifact, Chrome};
use testkit::Server;

/// `[[x, y], …]` of one plotted series.
fn points(v: &Value) -> Vec<(f64, Option<f64>)> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list of points: {v}"))
        .iter()
        .map(|p| (p[0].as_f64().unwrap(), p[1].as_f64()))
        .collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * a.abs().max(1.0)
}

#[test]
fn the_html_report_plots_what_the_json_report_says() {
    let server = Server::start(&["--threads", "2"]);
    let html = save_artifact("loadtest-report.html", b"");
    let output = Command::new(testkit::workspace_bin("loadtest"))
        .args(["--url", &server.url("report"), "--connections", "100"])
        .args(["--publishers", "2", "--rate", "300", "--duration", "4"])
        .args(["--warmup", "1", "--procs", "1", "--json"])
        .args(["--server-pid", &server.pid().to_string()])
        .arg("--html")
        .arg(&html)
        .output()
        .expect("run loadtest");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "loadtest failed: {stderr}");
    let report: Value = serde_json::from_slice(&output.stdout).expect("one JSON object");

    // The JSON's per-second series covers the measured window.
    let samples = report["series"]["samples"]
        .as_array()
        .expect("series.samples");
    let window = report["series"]["window_start_s"]
        .as_f64()
        .expect("window start");
    let measuring = samples.iter().filter(|s| s["phase"] == "measuring").count();
    assert!(
        (3..=5).contains(&measuring),
        "{measuring} measured seconds of 4"
    );
    let received: u64 = samples
        .iter()
        .map(|s| s["received"].as_u64().unwrap())
        .sum();
    assert!(
        received > 0 && received <= report["received_total"].as_u64().unwrap(),
        "per-second deliveries add up to at most the total: {received}"
    );
    assert!(samples
        .iter()
        .any(|s| s["server_ns_per_delivery"].as_f64() > Some(0.0)));
    let distribution = points(&report["latency_distribution_us"]);
    assert!(distribution.len() > 5);
    assert!(close(distribution.last().unwrap().0, 100.0));

    let chrome = Chrome::launch(false);
    let page = chrome.page(&format!("file://{}", html.display()));
    page.wait_for(
        "window.reportReady",
        "the report to draw",
        "window.__errors",
    );
    assert_eq!(
        page.eval("window.__errors"),
        serde_json::json!([]),
        "no JS errors"
    );
    let plotted = page.eval("window.plotted");

    let latency = points(&plotted["chart-latency"][0]["points"]);
    assert_eq!(latency.len(), distribution.len());
    for ((px, py), (jx, jy)) in latency.iter().zip(&distribution) {
        assert!(
            close(*px, *jx) && py == jy,
            "plotted ({px}, {py:?}) vs JSON ({jx}, {jy:?})"
        );
    }
    let connect = points(&plotted["chart-connect"][0]["points"]);
    assert_eq!(connect, points(&report["connect_latency_distribution_us"]));

    let per_second = |chart: &str, i: usize, field: &str| {
        let got = points(&plotted[chart][i]["points"]);
        assert_eq!(got.len(), samples.len(), "{chart}: one point per second");
        for ((x, y), s) in got.iter().zip(samples) {
            assert!(
                close(*x, s["t_s"].as_f64().unwrap() - window),
                "{chart}: x {x}"
            );
            assert_eq!(*y, s[field].as_f64(), "{chart}: {field} at {x}");
        }
    };
    per_second("chart-rate", 0, "received");
    per_second("chart-p99", 0, "p99_us");
    per_second("chart-p99", 1, "p50_us");
    per_second("chart-anomalies", 0, "duplicates");
    per_second("chart-anomalies", 1, "out_of_order");
    let cpu = points(&plotted["chart-cpu"][0]["points"]);
    let cpu_json: Vec<f64> = samples
        .iter()
        .filter_map(|s| s["server_ns_per_delivery"].as_f64())
        .collect();
    assert_eq!(
        cpu.iter().map(|p| p.1.unwrap()).collect::<Vec<_>>(),
        cpu_json
    );
    let summary = page.eval("document.getElementById('summary').innerText");
    let lost = format!("\t{}\t", report["lost"]);
    let connections = format!("\t{}\t", report["connections"]);
    let text = summary.as_str().unwrap();
    assert!(
        text.contains(&lost) && text.contains(&connections),
        "{summary}"
    );
    save_artifact("loadtest-report.png", &page.screenshot_png());
}
