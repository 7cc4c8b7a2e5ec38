//! The pages Herald serves to plain (non-upgrade) `GET` requests: the demo page embedded in
//! the binary, or, with `--static DIR`, the files under that directory.
//!
//! Why everything is loaded at start: a worker thread must never wait for a disk. Reading a
//! file on request would stall every connection of that worker for as long as the read
//! takes, so [`Site::load`] reads the whole directory once, before the workers start, within
//! a size cap (a fan-out server is no file host), and each page's HTTP response is built
//! then. Serving a page is a hash lookup and a reference-count bump. Files changed after the
//! start are not seen until the next start.
//!
//! Path handling stays safe: no `..` escape, no symlink escape, only regular files, no
//! hidden names; a request target is decoded and checked the same way before the lookup.

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use bytes::Bytes;

use crate::proto::http::HttpError;
use crate::proto::topic;

/// The embedded demo page, so `GET /` works with no files next to the binary.
pub const INDEX_HTML: &str = include_str!("index.html");

/// The live dashboard (`--dashboard`), served at `GET /dashboard` whatever `--static` says.
/// One file: its script and drawing (SVG) are inline, so it needs no network but the server.
pub const DASHBOARD_HTML: &str = include_str!("dashboard.html");

/// The SVG chart code the dashboard page inlines (and the loadtest's HTML reports too), in
/// place of its `/*HERALD_CHART_JS*/` line.
pub const CHART_JS: &str = include_str!("chart.js");

/// The line of [`DASHBOARD_HTML`] that [`CHART_JS`] replaces.
pub const CHART_JS_SLOT: &str = "/*HERALD_CHART_JS*/";

/// The `herald-client` library (clients/js), served at `GET /herald-client.js` whatever
/// `--static` says, so any page can `import { Herald } from '/herald-client.js'` with no build
/// step and always gets the client that matches this server.
pub const CLIENT_JS: &str = include_str!("../../clients/js/src/herald-client.js");

/// Where [`CLIENT_JS`] is served.
const CLIENT_JS_PATH: &str = "herald-client.js";

/// Content type of JavaScript modules (the client library and `.js`/`.mjs` files).
const JAVASCRIPT: &str = "text/javascript; charset=utf-8";

/// Largest static file served. Bigger files are skipped (answered 404): every body is held in
/// memory.
pub const MAX_FILE_SIZE: u64 = 16 * 1024 * 1024;

/// Most bytes of files one `--static DIR` may hold; more is a start-up error, not a silent cut.
pub const MAX_SITE_BYTES: u64 = 64 * 1024 * 1024;

/// Most files one `--static DIR` may hold (bounds the table and the start-up walk).
pub const MAX_SITE_FILES: usize = 10_000;

/// Content type of HTML, the embedded page's and `.html` files'.
const HTML: &str = "text/html; charset=utf-8";

/// What a plain GET of a page path gets (see [`Site::lookup`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Page {
    /// Answer `200` with this `Content-Type` and body.
    Found {
        content_type: &'static str,
        body: Bytes,
    },
    /// Answer `404`: no such page, or a path that is refused (escape attempt, bad encoding,
    /// directory, hidden file, special file, file over [`MAX_FILE_SIZE`]).
    NotFound,
}

/// Why `--static DIR` could not be loaded: a start-up error naming the directory.
#[derive(Debug, thiserror::Error)]
pub enum SiteError {
    #[error("--static {0}: not a readable directory")]
    NotADirectory(PathBuf),
    #[error("--static {dir}: {path}: {error}")]
    Read {
        dir: PathBuf,
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("--static {0}: holds more than {MAX_SITE_BYTES} bytes of files; Herald keeps them in memory and is no file host")]
    TooLarge(PathBuf),
    #[error("--static {0}: holds more than {MAX_SITE_FILES} files")]
    TooManyFiles(PathBuf),
}

/// One page: its whole `200` response, built once; the body is its tail.
#[derive(Debug)]
struct Entry {
    content_type: &'static str,
    response: Bytes,
    head_len: usize,
}

impl Entry {
    fn new(content_type: &'static str, body: &[u8]) -> Self {
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
             Cache-Control: no-cache\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let mut response = Vec::with_capacity(head.len() + body.len());
        response.extend_from_slice(head.as_bytes());
        response.extend_from_slice(body);
        Entry {
            content_type,
            head_len: head.len(),
            response: response.into(),
        }
    }
}

/// Every page Herald serves, by relative path (`index.html`, `css/app.css`), loaded at
/// start and shared by all workers.
#[derive(Debug)]
pub struct Site {
    pages: HashMap<String, Entry>,
    /// [`DASHBOARD_HTML`]'s response (served only with `--dashboard`: the worker decides).
    dashboard: Entry,
}

impl Site {
    /// The embedded pages (`--static` not given): the demo page at `/` and `/index.html`,
    /// and the client library.
    pub fn embedded() -> Self {
        let mut pages = HashMap::new();
        pages.insert(
            "index.html".to_owned(),
            Entry::new(HTML, INDEX_HTML.as_bytes()),
        );
        Site::with_client(pages)
    }

    /// `pages` and the client library at `/herald-client.js` (it wins over a file of that
    /// name: a page must get the client that speaks this server's protocol).
    fn with_client(mut pages: HashMap<String, Entry>) -> Self {
        pages.insert(
            CLIENT_JS_PATH.to_owned(),
            Entry::new(JAVASCRIPT, CLIENT_JS.as_bytes()),
        );
        Site {
            pages,
            dashboard: Entry::new(
                HTML,
                DASHBOARD_HTML
                    .replacen(CHART_JS_SLOT, CHART_JS, 1)
                    .as_bytes(),
            ),
        }
    }

    /// The whole `200` response of the dashboard page.
    pub fn dashboard(&self) -> Bytes {
        self.dashboard.response.clone()
    }

    /// The embedded pages, or every servable file under `static_dir` (and the client
    /// library), read now.
    pub fn load(static_dir: Option<&Path>) -> Result<Self, SiteError> {
        let Some(dir) = static_dir else {
            return Ok(Site::embedded());
        };
        let root = dir
            .canonicalize()
            .ok()
            .filter(|r| r.is_dir())
            .ok_or_else(|| SiteError::NotADirectory(dir.to_owned()))?;
        let mut walk = Walk {
            dir,
            root: &root,
            pages: HashMap::new(),
            bytes: 0,
            ancestors: Vec::new(),
        };
        walk.directory(&root, "")?;
        Ok(Site::with_client(walk.pages))
    }

    /// Look `target` up (a request target; a query string is ignored). A path ending in `/`
    /// means its `index.html`.
    pub fn lookup(&self, target: &str) -> Page {
        match self.entry(target) {
            Some(e) => Page::Found {
                content_type: e.content_type,
                body: e.response.slice(e.head_len..),
            },
            None => Page::NotFound,
        }
    }

    /// The answer to a plain `GET` of `target`: the page's `200` response, else 426 for a
    /// topic path (it is a WebSocket endpoint) and 404 for anything else.
    pub fn response(&self, target: &str) -> Result<Bytes, HttpError> {
        match self.entry(target) {
            Some(e) => Ok(e.response.clone()),
            None if topic::topic_from_target(target).is_ok() => Err(HttpError::UpgradeRequired),
            None => Err(HttpError::NotFound),
        }
    }

    fn entry(&self, target: &str) -> Option<&Entry> {
        let path = target.split_once('?').map_or(target, |(p, _)| p);
        self.pages.get(&relative_path(path)?)
    }
}

/// The start-up walk over `--static DIR`.
struct Walk<'a> {
    dir: &'a Path,
    root: &'a Path,
    pages: HashMap<String, Entry>,
    bytes: u64,
    /// The directories being walked, outermost first (canonical paths): a symlink back to
    /// one of them is a loop and is not followed. (A link to another directory inside the
    /// root is followed: its files are served under both names, as the old per-request
    /// lookup did.)
    ancestors: Vec<PathBuf>,
}

impl Walk<'_> {
    /// Load the servable files under `path` (canonical, inside the root), whose relative
    /// URL path is `prefix`.
    fn directory(&mut self, path: &Path, prefix: &str) -> Result<(), SiteError> {
        if self.ancestors.iter().any(|a| a == path) {
            return Ok(());
        }
        self.ancestors.push(path.to_owned());
        let walked = self.entries(path, prefix);
        self.ancestors.pop();
        walked
    }

    fn entries(&mut self, path: &Path, prefix: &str) -> Result<(), SiteError> {
        let read_error = |error| SiteError::Read {
            dir: self.dir.to_owned(),
            path: path.to_owned(),
            error,
        };
        let mut names: Vec<_> = fs::read_dir(path)
            .map_err(read_error)?
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        names.sort();
        for name in names {
            // Names that cannot be requested are never served: hidden ones, non-UTF-8 ones.
            let Some(name) = name.to_str().filter(|n| !n.starts_with('.')) else {
                continue;
            };
            // Resolves every symlink; the result must still be inside the root.
            let Ok(full) = path.join(name).canonicalize() else {
                continue;
            };
            if !full.starts_with(self.root) {
                continue;
            }
            let rel = format!("{prefix}{name}");
            let Ok(meta) = fs::metadata(&full) else {
                continue;
            };
            if meta.is_dir() {
                self.directory(&full, &format!("{rel}/"))?;
            } else if meta.is_file() && meta.len() <= MAX_FILE_SIZE {
                self.file(&full, rel)?;
            }
        }
        Ok(())
    }

    fn file(&mut self, full: &Path, rel: String) -> Result<(), SiteError> {
        if self.pages.len() >= MAX_SITE_FILES {
            return Err(SiteError::TooManyFiles(self.dir.to_owned()));
        }
        let file = fs::File::open(full).map_err(|error| SiteError::Read {
            dir: self.dir.to_owned(),
            path: full.to_owned(),
            error,
        })?;
        let mut body = Vec::new();
        // `take` keeps a file that grew since its size was read from exceeding the cap.
        file.take(MAX_FILE_SIZE + 1)
            .read_to_end(&mut body)
            .map_err(|error| SiteError::Read {
                dir: self.dir.to_owned(),
                path: full.to_owned(),
                error,
            })?;
        if body.len() as u64 > MAX_FILE_SIZE {
            return Ok(());
        }
        self.bytes += body.len() as u64;
        if self.bytes > MAX_SITE_BYTES {
            return Err(SiteError::TooLarge(self.dir.to_owned()));
        }
        let entry = Entry::new(content_type(full), &body);
        self.pages.insert(rel, entry);
        Ok(())
    }
}

/// Turn a URL path (`/a/b%20c.txt`) into a page's relative path (`a/b c.txt`), refusing bad
/// percent-encodings, NUL, backslashes, `..`, hidden names and anything not a plain name.
fn relative_path(path: &str) -> Option<String> {
    let rest = path.strip_prefix('/')?;
    let decoded = String::from_utf8(percent_decode(rest)?).ok()?;
    if decoded.contains(['\0', '\\']) {
        return None;
    }
    let mut rel = Vec::new();
    for segment in decoded.split('/') {
        if segment.is_empty() {
            continue;
        }
        if segment.starts_with('.') {
            return None;
        }
        let mut parts = Path::new(segment).components();
        match (parts.next(), parts.next()) {
            (Some(Component::Normal(_)), None) => rel.push(segment),
            _ => return None,
        }
    }
    if decoded.is_empty() || decoded.ends_with('/') {
        rel.push("index.html");
    }
    Some(rel.join("/"))
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
    use crate::ops::stats::Reject;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn site(dir: Option<&Path>) -> Site {
        Site::load(dir).expect("site loads")
    }

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
            Page::Found { content_type, body } => (content_type, body.to_vec()),
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
            let (ty, body) = found(Site::embedded().lookup(target));
            assert_eq!(ty, "text/html; charset=utf-8", "{target}");
            assert_eq!(body, INDEX_HTML.as_bytes(), "{target}");
        }
        for target in ["/other", "/index.htm", "/web/index.html", "", "index.html"] {
            assert_eq!(Site::embedded().lookup(target), Page::NotFound, "{target}");
        }
    }

    #[test]
    fn the_client_library_is_served_with_or_without_static_dir() {
        let dir = TempDir::new("client");
        dir.write("herald-client.js", b"// not the library");
        for site in [Site::embedded(), site(Some(dir.0.as_path()))] {
            for target in ["/herald-client.js", "/herald-client.js?v=1"] {
                let (ty, body) = found(site.lookup(target));
                assert_eq!(ty, "text/javascript; charset=utf-8", "{target}");
                assert_eq!(body, CLIENT_JS.as_bytes(), "{target}");
            }
            assert_eq!(site.lookup("/herald-client.jsx"), Page::NotFound);
        }
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
        let d = site(Some(dir.0.as_path()));

        assert_eq!(found(d.lookup("/")), (HTML, b"<p>home</p>".to_vec()));
        assert_eq!(found(d.lookup("/index.html?v=2")).1, b"<p>home</p>");
        assert_eq!(
            found(d.lookup("/app.JS")),
            ("text/javascript; charset=utf-8", b"let x = 1;".to_vec())
        );
        assert_eq!(found(d.lookup("/sub/")).1, b"<p>sub</p>");
        assert_eq!(found(d.lookup("//sub//index.html")).1, b"<p>sub</p>");
        assert_eq!(found(d.lookup("/img/logo.png")).0, "image/png");
        assert_eq!(found(d.lookup("/data.bin")).0, "application/octet-stream");
        assert_eq!(
            found(d.lookup("/with%20space.txt")),
            ("text/plain; charset=utf-8", b"hi".to_vec())
        );
        assert_eq!(d.lookup("/missing.html"), Page::NotFound);
    }

    #[test]
    fn escapes_and_bad_paths_are_refused() {
        let dir = TempDir::new("escape");
        dir.write("a/x", b"inside");
        dir.write(".secret", b"hidden");
        dir.write("sub/file.txt", b"x");
        let d = site(Some(dir.0.as_path()));
        assert_eq!(found(d.lookup("/a/x")).1, b"inside");

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
            assert_eq!(d.lookup(target), Page::NotFound, "{target}");
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
        let d = site(Some(dir.0.as_path()));

        assert_eq!(d.lookup("/out.txt"), Page::NotFound);
        assert_eq!(d.lookup("/outdir/secret.txt"), Page::NotFound);
        assert_eq!(found(d.lookup("/alias.txt")).1, b"real");
    }

    #[cfg(unix)]
    #[test]
    fn symlinked_directories_inside_serve_and_loops_end() {
        let dir = TempDir::new("loops");
        dir.write("a/x.txt", b"x");
        std::os::unix::fs::symlink(dir.0.join("a"), dir.0.join("alias")).unwrap();
        std::os::unix::fs::symlink(&dir.0, dir.0.join("a/up")).unwrap();
        let d = site(Some(dir.0.as_path()));
        assert_eq!(found(d.lookup("/a/x.txt")).1, b"x");
        assert_eq!(found(d.lookup("/alias/x.txt")).1, b"x");
        // a/up is the root again: a loop, not followed (the walk ends).
        assert_eq!(d.lookup("/a/up/a/x.txt"), Page::NotFound);
    }

    #[test]
    fn oversized_files_are_not_served() {
        let dir = TempDir::new("big");
        let big = fs::File::create(dir.0.join("big.bin")).unwrap();
        big.set_len(MAX_FILE_SIZE + 1).unwrap(); // sparse: costs no disk
        let edge = fs::File::create(dir.0.join("edge.bin")).unwrap();
        edge.set_len(MAX_FILE_SIZE).unwrap();
        let d = site(Some(dir.0.as_path()));

        assert_eq!(d.lookup("/big.bin"), Page::NotFound);
        assert_eq!(found(d.lookup("/edge.bin")).1.len() as u64, MAX_FILE_SIZE);
    }

    #[test]
    fn a_missing_static_dir_is_refused_at_load() {
        let dir = TempDir::new("gone");
        let gone = dir.0.join("nope");
        assert!(matches!(
            Site::load(Some(&gone)),
            Err(SiteError::NotADirectory(_))
        ));
    }

    #[test]
    fn pages_are_read_once_at_load() {
        let dir = TempDir::new("once");
        dir.write("a.txt", b"before");
        let d = site(Some(dir.0.as_path()));
        dir.write("a.txt", b"after");
        dir.write("new.txt", b"new");
        assert_eq!(found(d.lookup("/a.txt")).1, b"before");
        assert_eq!(d.lookup("/new.txt"), Page::NotFound);
    }

    #[test]
    fn a_site_over_the_cap_is_refused_at_load() {
        let dir = TempDir::new("cap");
        for i in 0..=(MAX_SITE_BYTES / MAX_FILE_SIZE) {
            let f = fs::File::create(dir.0.join(format!("{i}.bin"))).unwrap();
            f.set_len(MAX_FILE_SIZE).unwrap(); // sparse: costs no disk
        }
        assert!(matches!(
            Site::load(Some(dir.0.as_path())),
            Err(SiteError::TooLarge(_))
        ));
    }

    #[test]
    fn responses_and_refusals() {
        let site = Site::embedded();
        let status = |target: &str| site.response(target).map_err(|e| e.status().0);
        assert_eq!(status("/chat").unwrap_err(), 426);
        assert_eq!(status("/no%20such").unwrap_err(), 404);
        assert!(status("/")
            .unwrap()
            .starts_with(b"HTTP/1.1 200 OK\r\nContent-Type: text/html"));
        let reason = |target: &str| Reject::from(&site.response(target).unwrap_err()).label();
        assert_eq!(reason("/chat"), "upgrade_required");
        assert_eq!(reason("/no%20such"), "not_found");
    }
}
