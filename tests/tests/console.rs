//! The web console end to end in headless Chromium (Debian's `chromium`
//! and `chromium-driver`, which `make test` installs where it can): an
//! export blocked on a dead letter is found in the console, a dry run
//! prices its replay and changes nothing, the replay that follows it lands
//! the page, and the export completes. Screenshots of each step are saved
//! under `target/console-screenshots/`.
//!
//! Also, without a browser: a form without the session's token is
//! refused, a page without a session sends to the sign-in, another
//! tenant's export is not there, and the pages forbid framing and scripts.

mod common;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{spec_toml, Fleet};
use fantoccini::{Client, ClientBuilder, Locator};
use pagefleet_shared::model::ExportState;
use pagefleet_shared::spec::ExportSpec;
use pagefleet_tests::mock::{MockConfig, MockServer, Style};

const CHROMIUM: &str = "/usr/bin/chromium";
const DRIVER: &str = "/usr/bin/chromedriver";

const FORM: &str = "application/x-www-form-urlencoded";

fn form(fields: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish()
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
}

/// chromedriver on a port of its own, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start() -> Driver {
        let port = free_port();
        let child = Command::new(DRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "chromedriver is not listening"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn browser(driver: &Driver) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": CHROMIUM,
            "args": ["--headless", "--no-sandbox", "--disable-gpu",
                     "--disable-background-networking", "--window-size=1400,1000"],
        }),
    );
    ClientBuilder::rustls()
        .expect("a WebDriver client")
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a Chromium session")
}

fn screenshots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn shot(client: &Client, name: &str) {
    let png = client.screenshot().await.expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG"), "{name} is a PNG");
    std::fs::write(screenshots().join(format!("{name}.png")), png).unwrap();
}

async fn text_of(client: &Client, css: &str) -> String {
    client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .text()
        .await
        .unwrap()
}

async fn click(client: &Client, css: &str) {
    client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap();
}

/// The text of `css` once it contains `wanted` (a click's page may still
/// be loading).
async fn wait_for_text(client: &Client, css: &str, wanted: &str) -> String {
    let started = Instant::now();
    loop {
        if let Ok(element) = client.find(Locator::Css(css)).await {
            if let Ok(text) = element.text().await {
                if text.contains(wanted) {
                    return text;
                }
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{css} never said {wanted:?}: {}",
            client.source().await.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operator_finds_a_blocked_export_dry_runs_and_replays_it_in_the_browser() {
    if !std::path::Path::new(CHROMIUM).exists() || !std::path::Path::new(DRIVER).exists() {
        eprintln!(
            "console: SKIPPED: {CHROMIUM} or {DRIVER} is missing and could not be installed \
             (apt-get install chromium chromium-driver); the browser test did not run"
        );
        return;
    }
    const RECORDS: usize = 500;
    let mock = MockServer::start(MockConfig::new(81, RECORDS))
        .await
        .unwrap();
    mock.set_fail_records(vec![250]);
    let token = common::secret_env("default", &mock.config().token);
    let fleet = Fleet::start(1).await;
    let toml = spec_toml("console", &mock, Style::Offset, &fleet.out_dir, 100, &token);
    let id = fleet.submit_toml(&toml).await;
    let status = fleet.wait(id, Duration::from_secs(60)).await;
    assert_eq!(status.state, ExportState::Blocked, "{status:?}");

    let driver = Driver::start();
    let client = browser(&driver).await;
    let base = fleet.api_url.clone();
    client
        .goto(&format!("{base}/console/exports"))
        .await
        .unwrap();
    assert!(client
        .current_url()
        .await
        .unwrap()
        .path()
        .ends_with("/console/login"));
    client
        .find(Locator::Css("input[name=token]"))
        .await
        .unwrap()
        .send_keys(fleet.admin_token.reveal())
        .await
        .unwrap();
    click(&client, "button[type=submit]").await;
    // A click returns before the page it leads to has loaded: wait for it.
    let listed = wait_for_text(&client, "main table", "blocked").await;
    assert!(listed.contains("console"), "{listed}");
    shot(&client, "01-exports").await;

    client
        .goto(&format!("{base}/console/exports/{id}"))
        .await
        .unwrap();
    assert_eq!(text_of(&client, "#state").await, "blocked");
    shot(&client, "02-export-blocked").await;
    click(&client, "main a[href^='/console/dlq?export=']").await;
    wait_for_text(&client, "#counts", "1 open dead letter(s)").await;
    assert!(text_of(&client, "#letters").await.contains("404"));
    shot(&client, "03-dead-letters").await;

    click(&client, "#dry-run").await;
    let outcome = wait_for_text(&client, "#outcome", "Would replay").await;
    assert!(
        outcome.contains("Would replay 1 page(s) of 1 export(s)"),
        "{outcome}"
    );
    assert!(text_of(&client, "#cost")
        .await
        .contains("at least 1 request(s)"));
    shot(&client, "04-dry-run").await;
    let status = fleet.api.status(id).await.unwrap();
    assert_eq!(
        (status.state, status.dead_letters_open),
        (ExportState::Blocked, 1),
        "a dry run changes nothing"
    );

    mock.set_fail_records(Vec::new());
    click(&client, "#replay").await;
    let outcome = wait_for_text(&client, "#outcome", "replayed").await;
    assert!(outcome.contains("replayed 1 page(s)"), "{outcome}");
    shot(&client, "05-replayed").await;

    let started = Instant::now();
    loop {
        client
            .goto(&format!("{base}/console/exports/{id}"))
            .await
            .unwrap();
        if text_of(&client, "#state").await == "completed" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the export did not complete"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    shot(&client, "06-export-completed").await;
    client.goto(&format!("{base}/console/audit")).await.unwrap();
    let audit = text_of(&client, "#audit").await;
    assert!(audit.contains("dlq.replay"), "{audit}");
    shot(&client, "07-audit").await;
    client.close().await.unwrap();
    assert_eq!(
        fleet.api.status(id).await.unwrap().state,
        ExportState::Completed
    );
    fleet.stop().await;
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_refuses_foreign_forms_and_other_tenants_and_cannot_be_framed() {
    let mock = MockServer::start(MockConfig::new(82, 100)).await.unwrap();
    let token = common::secret_env("acme", &mock.config().token);
    let fleet = Fleet::start(1).await;
    let (acme, _) = fleet.tenant_client("acme").await;
    let (_, globex_token) = fleet.tenant_client("globex").await;
    let toml = spec_toml(
        "mine",
        &mock,
        Style::Offset,
        std::path::Path::new("mine"),
        50,
        &token,
    );
    let id = acme
        .submit(&ExportSpec::from_toml(&toml).unwrap(), None)
        .await
        .unwrap()
        .id;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let base = &fleet.api_url;

    // No session: to the sign-in.
    let answer = http
        .get(format!("{base}/console/exports"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 303);
    assert_eq!(answer.headers()["location"], "/console/login");
    // A bad token signs nobody in.
    let answer = http
        .post(format!("{base}/console/login"))
        .header("content-type", FORM)
        .body(form(&[("token", "pft_not_a_token")]))
        .send()
        .await
        .unwrap();
    assert!(answer.headers().get("set-cookie").is_none());

    // Globex, signed in, finds nothing of acme's.
    let answer = http
        .post(format!("{base}/console/login"))
        .header("content-type", FORM)
        .header("sec-fetch-site", "same-origin")
        .body(form(&[("token", globex_token.reveal())]))
        .send()
        .await
        .unwrap();
    let set_cookies: Vec<String> = (answer.headers().get_all("set-cookie").iter())
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert_eq!(set_cookies.len(), 2, "{set_cookies:?}");
    for set in &set_cookies {
        for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/console"] {
            assert!(set.contains(attribute), "{attribute} in {set}");
        }
    }
    assert_eq!(
        answer.headers()["cache-control"],
        "no-store",
        "even on the redirect"
    );
    let cookie = (set_cookies.iter())
        .map(|v| v.split(';').next().unwrap().to_string())
        .collect::<Vec<_>>()
        .join("; ");
    let get = |path: String, cookie: String| {
        let http = http.clone();
        async move {
            http.get(format!("{base}{path}"))
                .header("cookie", cookie)
                .send()
                .await
                .unwrap()
        }
    };
    let listing = get("/console/exports".into(), cookie.clone()).await;
    assert_eq!(listing.status().as_u16(), 200);
    let csp = listing.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("frame-ancestors 'none'") && csp.contains("default-src 'none'"),
        "{csp}"
    );
    assert_eq!(listing.headers()["x-frame-options"], "DENY");
    let html = listing.text().await.unwrap();
    assert!(
        !html.contains(globex_token.reveal()),
        "the token is never in a page"
    );
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a form token on the page")
        .to_string();
    assert_eq!(
        get(format!("/console/exports/{id}"), cookie.clone())
            .await
            .status()
            .as_u16(),
        404
    );

    // A cookie planted beside the console's own (another path or domain)
    // makes no session.
    let planted = format!("{cookie}; pagefleet_console=pft_planted");
    assert_eq!(
        get("/console/exports".into(), planted)
            .await
            .status()
            .as_u16(),
        303
    );

    let post = |path: String, fields: Vec<(&'static str, String)>, site: &'static str| {
        let (http, cookie) = (http.clone(), cookie.clone());
        async move {
            let pairs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
            http.post(format!("{base}{path}"))
                .header("cookie", cookie)
                .header("content-type", FORM)
                .header("sec-fetch-site", site)
                .body(form(&pairs))
                .send()
                .await
                .unwrap()
        }
    };
    // With its own valid form token, globex still reaches nothing of acme's.
    let cancel = format!("/console/exports/{id}/cancel");
    let answer = post(cancel.clone(), vec![("csrf", csrf.clone())], "same-origin").await;
    assert_eq!(answer.status().as_u16(), 404);
    let dry = post(
        "/console/dlq/discard".into(),
        vec![
            ("csrf", csrf.clone()),
            ("export", id.to_string()),
            ("reason", "x".into()),
            ("dry_run", "true".into()),
        ],
        "same-origin",
    )
    .await;
    assert_eq!(dry.status().as_u16(), 200);
    assert!(dry
        .text()
        .await
        .unwrap()
        .contains("Would discard 0 page(s)"));
    // No filter and no "every letter" box: refused, not everything.
    let everything = post(
        "/console/dlq/replay".into(),
        vec![("csrf", csrf.clone()), ("dry_run", "true".into())],
        "same-origin",
    )
    .await;
    assert_eq!(everything.status().as_u16(), 422);
    // A form another site posts is refused, sign-in too.
    let forged = post(cancel.clone(), vec![("csrf", csrf.clone())], "cross-site").await;
    assert_eq!(forged.status().as_u16(), 403);
    let forged_login = post(
        "/console/login".into(),
        vec![("token", "pft_x".into())],
        "cross-site",
    )
    .await;
    assert_eq!(forged_login.status().as_u16(), 403);
    // A form without the session's token is refused, whatever it asks.
    for (path, token) in [
        (cancel.clone(), "0".repeat(32)),
        ("/console/dlq/replay".to_string(), String::new()),
    ] {
        let answer = post(path.clone(), vec![("csrf", token)], "same-origin").await;
        assert_eq!(answer.status().as_u16(), 403, "{path}");
    }
    let status = acme.status(id).await.unwrap();
    assert_ne!(status.state, ExportState::Cancelled);
    fleet.stop().await;
    mock.shutdown().await;
}
