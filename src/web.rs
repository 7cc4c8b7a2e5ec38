//! Plain (non-upgrade) `GET` pages: the demo page embedded in the binary, or, with
//! `--static DIR`, files under that directory with safe path handling (no `..` escape, no
//! symlink escape, only regular files, bounded size) and a content type by extension.
//!
//! Sans network IO: a request target goes in, a [`Page`] comes out, and the caller writes the
//! HTTP response. The only IO is reading the requested file from `DIR` (a blocking read on the
//! calling thread, bounded by [`MAX_FILE_SIZE`]).

use std::fs;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

/// The embedded demo page, so `GET /` works with no files next to the binary.
pub const INDEX_HTML: &str = include_str!("web/index.html");

/// The `herald-client` library (clients/js), served at `GET /herald-client.js` whatever
/// `--static` says, so any page can `import { Herald } from '/herald-client.js'` with no build
/// step and always gets the client that matches this server.
pub const CLIENT_JS: &str = include_str!("../clients/js/src/herald-client.js");

/// Content type of JavaScript modules (the client library and `.js`/`.mjs` files).
const JAVASCRIPT: &str = "text/javascript; charset=utf-8";

/// Largest static file served. Bigger files are answered as [`Page::NotFound`]: the whole body
/// is held in memory, and a fan-out server is no file host.
pub const MAX_FILE_SIZE: u64 = 16 * 1024 * 1024;

/// Content type of HTML, the embedded page's and `.html` files'.
const HTML: &str = "text/html; charset=utf-8";

/// What a plain GET of a page path gets; the caller turns it into `200` or `404`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Page {
    /// Answer `200` with this `Content-Type` and body.
    Found {
        content_type: &'static str,
        body: Vec<u8>,
    },
    /// Answer `404`: no such page, or a path that is refused (escape attempt, bad encoding,
    /// directory, hidden file, special file, file over [`MAX_FILE_SIZE`]).
    NotFound,
}

/// Serve `target` (request target, may have a query string) either from the embedded page
/// (`/` and `/index.html` only, when `static_dir` is None) or from files under `static_dir`.
/// `/herald-client.js` is always the embedded client library.
///
/// Under `static_dir`, a path ending in `/` means its `index.html`; names starting with `.`
/// (hidden files, `..`) are never served.
pub fn lookup(target: &str, static_dir: Option<&Path>) -> Page {
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    if path == "/herald-client.js" {
        return Page::Found {
            content_type: JAVASCRIPT,
            body: CLIENT_JS.as_bytes().to_vec(),
        };
    }
    match static_dir {
        None if path == "/" || path == "/index.html" => Page::Found {
            content_type: HTML,
            body: INDEX_HTML.as_bytes().to_vec(),
        },
        None => Page::NotFound,
        Some(dir) => serve_file(dir, path).unwrap_or(Page::NotFound),
    }
}

/// The file under `dir` that `path` names, or `None` for anything refused.
fn serve_file(dir: &Path, path: &str) -> Option<Page> {
    let rel = relative_path(path)?;
    let root = dir.canonicalize().ok()?;
    // Resolves every symlink; the result must still be inside the root.
    let full = root.join(&rel).canonicalize().ok()?;
    if !full.starts_with(&root) {
        return None;
    }
    // Check before opening: opening a FIFO would block.
    let meta = fs::metadata(&full).ok()?;
    if !meta.is_file() || meta.len() > MAX_FILE_SIZE {
        return None;
    }
    let file = fs::File::open(&full).ok()?;
    let mut body = Vec::with_capacity(usize::try_from(meta.len()).ok()?);
    // `take` keeps a file that grew since the check from exceeding the cap.
    file.take(MAX_FILE_SIZE + 1).read_to_end(&mut body).ok()?;
    if body.len() as u64 > MAX_FILE_SIZE {
        return None;
    }
    Some(Page::Found {
        content_type: content_type(&full),
        body,
    })
}

/// Turn a URL path (`/a/b%20c.txt`) into a relative file path (`a/b c.txt`), refusing bad
/// percent-encodings, NUL, backslashes, `..`, hidden names and anything not a plain name.
fn relative_path(path: &str) -> Option<PathBuf> {
    let rest = path.strip_prefix('/')?;
    let decoded = String::from_utf8(percent_decode(rest)?).ok()?;
    if decoded.contains(['\0', '\\']) {
        return None;
    }
    let mut rel = PathBuf::new();
    for segment in decoded.split('/') {
        if segment.is_empty() {
            continue;
        }
        if segment.starts_with('.') {
            return None;
        }
        let mut parts = Path::new(segment).components();
        match (parts.next(), parts.next()) {
            (Some(Component::Normal(name)), None) => rel.push(name),
            _ => return None,
        }
    }
    if decoded.is_empty() || decoded.ends_with('/') {
        rel.push("index.html");
    }
    Some(rel)
}

/// Decode `%XX` escapes; `None` for a `%` not followed by two hex digits.
fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let hex = |b: u8| char::from(b).to_digit(16);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = hex(*bytes.get(i + 1)?)?;
            let lo = hex(*bytes.get(i + 2)?)?;
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

/// Content type by (case-insensitive) extension; unknown ones are opaque bytes.
fn content_type(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    match ext.as_str() {
        "html" | "htm" => HTML,
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => JAVASCRIPT,
        "json" | "map" => "application/json; charset=utf-8",
        "txt" => "text/plain; charset=utf-8",
        "svg" => "image/svg+xml; charset=utf-8",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "wasm" => "application/wasm",
        "woff2" => "font/woff2",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir =
                std::env::temp_dir().join(format!("herald-web-{tag}-{}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn write(&self, rel: &str, body: &[u8]) {
            let path = self.0.join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, body).unwrap();
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn found(page: Page) -> (&'static str, Vec<u8>) {
        match page {
            Page::Found { content_type, body } => (content_type, body),
            Page::NotFound => panic!("expected a page, got NotFound"),
        }
    }

    #[test]
    fn embedded_page_is_served_for_root_and_index() {
        for target in [
            "/",
            "/index.html",
            "/index.html?x=1",
            "/?topic=demo&connect",
        ] {
            let (ty, body) = found(lookup(target, None));
            assert_eq!(ty, "text/html; charset=utf-8", "{target}");
            assert_eq!(body, INDEX_HTML.as_bytes(), "{target}");
        }
        for target in ["/other", "/index.htm", "/web/index.html", "", "index.html"] {
            assert_eq!(lookup(target, None), Page::NotFound, "{target}");
        }
    }

    #[test]
    fn the_client_library_is_served_with_or_without_static_dir() {
        let dir = TempDir::new("client");
        dir.write("herald-client.js", b"// not the library");
        for static_dir in [None, Some(dir.0.as_path())] {
            for target in ["/herald-client.js", "/herald-client.js?v=1"] {
                let (ty, body) = found(lookup(target, static_dir));
                assert_eq!(ty, "text/javascript; charset=utf-8", "{target}");
                assert_eq!(body, CLIENT_JS.as_bytes(), "{target}");
            }
        }
        assert_eq!(lookup("/herald-client.jsx", None), Page::NotFound);
    }

    #[test]
    fn embedded_page_has_the_ids_tests_rely_on() {
        for id in [
            "topic",
            "connect",
            "state",
            "text",
            "send-text",
            "file",
            "send-file",
            "hex",
            "send-hex",
            "log",
        ] {
            assert!(INDEX_HTML.contains(&format!("id=\"{id}\"")), "#{id}");
        }
        // The page uses the client library the server serves itself.
        assert!(INDEX_HTML.contains("from \"/herald-client.js\""));
        assert!(!INDEX_HTML.contains("http://") && !INDEX_HTML.contains("https://"));
    }

    #[test]
    fn files_are_served_with_their_content_type() {
        let dir = TempDir::new("serve");
        dir.write("index.html", b"<p>home</p>");
        dir.write("app.JS", b"let x = 1;");
        dir.write("sub/index.html", b"<p>sub</p>");
        dir.write("img/logo.png", b"\x89PNG");
        dir.write("data.bin", b"\0\x01");
        dir.write("with space.txt", b"hi");
        let d = Some(dir.0.as_path());

        assert_eq!(found(lookup("/", d)), (HTML, b"<p>home</p>".to_vec()));
        assert_eq!(found(lookup("/index.html?v=2", d)).1, b"<p>home</p>");
        assert_eq!(
            found(lookup("/app.JS", d)),
            ("text/javascript; charset=utf-8", b"let x = 1;".to_vec())
        );
        assert_eq!(found(lookup("/sub/", d)).1, b"<p>sub</p>");
        assert_eq!(found(lookup("//sub//index.html", d)).1, b"<p>sub</p>");
        assert_eq!(found(lookup("/img/logo.png", d)).0, "image/png");
        assert_eq!(found(lookup("/data.bin", d)).0, "application/octet-stream");
        assert_eq!(
            found(lookup("/with%20space.txt", d)),
            ("text/plain; charset=utf-8", b"hi".to_vec())
        );
        assert_eq!(lookup("/missing.html", d), Page::NotFound);
    }

    #[test]
    fn escapes_and_bad_paths_are_refused() {
        let dir = TempDir::new("escape");
        dir.write("a/x", b"inside");
        dir.write(".secret", b"hidden");
        dir.write("sub/file.txt", b"x");
        let d = Some(dir.0.as_path());
        assert_eq!(found(lookup("/a/x", d)).1, b"inside");

        for target in [
            "/../etc/passwd",
            "/%2e%2e/x",
            "/%2E%2E%2Fetc%2Fpasswd",
            "/a/../../x",
            "/a/../a/x",
            "/./a/x",
            "/a%5c..%5cx",
            "/a\\x",
            "/a/x%00",
            "/a/x%",
            "/a/x%2",
            "/a/%zz",
            "/%ff",
            "/.secret",
            "/sub",
            "/a",
            "etc/passwd",
            "http://host/a/x",
        ] {
            assert_eq!(lookup(target, d), Page::NotFound, "{target}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_must_stay_inside() {
        let outside = TempDir::new("outside");
        outside.write("secret.txt", b"secret");
        let dir = TempDir::new("links");
        dir.write("real.txt", b"real");
        std::os::unix::fs::symlink(outside.0.join("secret.txt"), dir.0.join("out.txt")).unwrap();
        std::os::unix::fs::symlink(&outside.0, dir.0.join("outdir")).unwrap();
        std::os::unix::fs::symlink(dir.0.join("real.txt"), dir.0.join("alias.txt")).unwrap();
        let d = Some(dir.0.as_path());

        assert_eq!(lookup("/out.txt", d), Page::NotFound);
        assert_eq!(lookup("/outdir/secret.txt", d), Page::NotFound);
        assert_eq!(found(lookup("/alias.txt", d)).1, b"real");
    }

    #[test]
    fn oversized_files_are_not_served() {
        let dir = TempDir::new("big");
        let big = fs::File::create(dir.0.join("big.bin")).unwrap();
        big.set_len(MAX_FILE_SIZE + 1).unwrap(); // sparse: costs no disk
        let edge = fs::File::create(dir.0.join("edge.bin")).unwrap();
        edge.set_len(MAX_FILE_SIZE).unwrap();
        let d = Some(dir.0.as_path());

        assert_eq!(lookup("/big.bin", d), Page::NotFound);
        assert_eq!(found(lookup("/edge.bin", d)).1.len() as u64, MAX_FILE_SIZE);
    }

    #[test]
    fn a_missing_static_dir_serves_nothing() {
        let dir = TempDir::new("gone");
        let gone = dir.0.join("nope");
        assert_eq!(lookup("/", Some(&gone)), Page::NotFound);
    }
}
