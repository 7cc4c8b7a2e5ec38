//! Plain GET requests: the embedded demo page, and `--static DIR` with safe path handling.

use std::process::Command;

use testkit::{herald_bin, http_request, Server};

fn get(server: &Server, path: &str) -> testkit::HttpResponse {
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    http_request(server.addr, request.as_bytes()).0
}

#[test]
fn the_demo_page_is_served_at_the_root() {
    let server = Server::start(&[]);
    for path in ["/", "/index.html", "/?topic=x&connect"] {
        let response = get(&server, path);
        assert_eq!(response.status, 200, "{path}");
        assert_eq!(
            response.header("content-type"),
            Some("text/html; charset=utf-8")
        );
        let body = String::from_utf8_lossy(&response.body);
        assert!(
            body.contains("from \"/herald-client.js\""),
            "{path}: the page uses the client library served next to it"
        );
        assert!(
            !body.contains("https://") && !body.contains("http://"),
            "no CDN or external URL"
        );
    }
}

/// `GET /herald-client.js` is the client library of clients/js, byte for byte, as a JavaScript
/// module, with the demo page and with `--static` alike (pages import it with no build step).
#[test]
fn the_client_library_is_served_as_javascript() {
    let source = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/clients/js/src/herald-client.js"
    ))
    .expect("clients/js/src/herald-client.js");
    let dir = std::env::temp_dir().join(format!("herald-static-client-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let dir_arg = dir.display().to_string();
    for args in [vec![], vec!["--static", dir_arg.as_str()]] {
        let server = Server::start(&args);
        for path in ["/herald-client.js", "/herald-client.js?v=0.1.0"] {
            let response = get(&server, path);
            assert_eq!(response.status, 200, "{path} {args:?}");
            assert_eq!(
                response.header("content-type"),
                Some("text/javascript; charset=utf-8"),
                "{path} {args:?}"
            );
            assert!(response.body == source, "{path} {args:?}: not the library");
            assert!(String::from_utf8_lossy(&response.body).contains("export class Herald"));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn static_dir_serves_files_with_types_and_refuses_escapes() {
    let dir = std::env::temp_dir().join(format!("herald-static-{}", std::process::id()));
    let site = dir.join("site");
    std::fs::create_dir_all(site.join("css")).expect("dirs");
    std::fs::write(site.join("index.html"), "<h1>mine</h1>").expect("index");
    std::fs::write(site.join("css/app.css"), "body{}").expect("css");
    std::fs::write(dir.join("secret.txt"), "outside").expect("secret");
    let site_arg = site.display().to_string();
    let server = Server::start(&["--static", &site_arg]);

    let index = get(&server, "/");
    assert_eq!(
        (index.status, index.body.as_slice()),
        (200, &b"<h1>mine</h1>"[..])
    );
    let css = get(&server, "/css/app.css");
    assert_eq!(css.status, 200);
    assert_eq!(css.header("content-type"), Some("text/css; charset=utf-8"));
    // Never the file outside the directory, nor a directory listing. (Paths that are valid
    // topic names answer 426, the others 404.)
    for (escape, status) in [
        ("/../secret.txt", 426),
        ("/%2e%2e/secret.txt", 404),
        ("/css/../../secret.txt", 426),
        ("/css", 426),
        ("/css/", 426),
    ] {
        let response = get(&server, escape);
        assert_eq!(response.status, status, "{escape}");
        assert!(
            !String::from_utf8_lossy(&response.body).contains("outside"),
            "{escape}"
        );
    }
    assert_eq!(
        get(&server, "/chat").status,
        426,
        "a topic path without a file is a WebSocket endpoint"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_missing_static_dir_is_a_startup_error() {
    let output = Command::new(herald_bin())
        .args(["--listen", "127.0.0.1:0", "--static", "/no/such/dir"])
        .output()
        .expect("run herald");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--static /no/such/dir"), "{stderr}");
}
