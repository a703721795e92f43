//! A fleet with an output root isolates its tenants: files go to the
//! tenant's own directory (specs name a directory relative to it, an
//! absolute or escaping one is refused at submit, a symlink out of it fails
//! the export at finalize), a spec may read only its tenant's secrets, and a
//! tenant id that could not name a directory is refused.

mod common;

use std::time::Duration;

use common::{assert_csv_matches_source, isolated_fleet, spec_toml, wait_settled};
use pagefleet_shared::model::ExportState;
use pagefleet_shared::spec::ExportSpec;
use pagefleet_tests::mock::{MockConfig, MockServer, Style};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_reaches_only_its_own_directory_and_secrets() {
    let (seed, records) = (41, 120);
    let mock = MockServer::start(MockConfig::new(seed, records))
        .await
        .unwrap();
    let (fleet, token) = isolated_fleet(1, &mock).await;
    let root = fleet.root.clone();
    let (acme, _) = fleet.tenant_client("acme").await;
    let spec_in = |name: &str, dir: &str| {
        let toml = spec_toml(name, &mock, Style::Offset, &fleet.out_dir, 50, &token);
        let mut spec = ExportSpec::from_toml(&toml).unwrap();
        spec.output.dir = dir.to_string();
        spec
    };

    // A relative directory lands under the tenant's own directory.
    let id = acme
        .submit(&spec_in("orders", "nightly/orders"), None)
        .await
        .unwrap()
        .id;
    let status = wait_settled(&acme, id, Duration::from_secs(60)).await;
    assert_eq!(status.state, ExportState::Completed, "{status:?}");
    assert_csv_matches_source(&root.join("acme/nightly/orders/orders.csv"), seed, records);

    // An absolute directory, or one climbing out, is refused at submit.
    for dir in [fleet.out_dir.display().to_string(), "../other".to_string()] {
        let err = acme
            .submit(&spec_in("escape", &dir), None)
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(422), "{dir}: {err}");
        assert!(err.to_string().contains("output.dir"), "{dir}: {err}");
    }

    // Secrets that are not the tenant's are refused at submit: the fleet's
    // own settings, another tenant's, any file.
    for secret in [
        r#"{ env = "PAGEFLEET_DATABASE_URL" }"#,
        r#"{ env = "PAGEFLEET_SECRET_globex__TOKEN" }"#,
        r#"{ env = "PAGEFLEET_SECRET_acme-prod__TOKEN" }"#,
        r#"{ env = "PAGEFLEET_SECRET_Acme__TOKEN" }"#,
        r#"{ file = "/etc/hostname" }"#,
    ] {
        let toml = spec_toml("steal", &mock, Style::Offset, &fleet.out_dir, 50, &token)
            .replace(&format!(r#"{{ env = "{token}" }}"#), secret);
        let mut spec = ExportSpec::from_toml(&toml).unwrap();
        spec.output.dir = "steal".into();
        let err = acme.submit(&spec, None).await.unwrap_err();
        assert_eq!(err.status(), Some(422), "{secret}: {err}");
        assert!(
            err.to_string().contains("source.auth.secret"),
            "{secret}: {err}"
        );
    }

    // A symlink in the tenant's directory pointing out of it: the export
    // fails at finalize, naming why without the server's paths, and nothing
    // is written or created out there.
    let elsewhere = fleet.out_dir.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, root.join("acme/link")).unwrap();
    for (name, dir) in [
        ("linked", "link"),
        ("linkedsub", "link/sub"),
        // Through a file an earlier export wrote: refused, not an I/O error
        // naming the server's paths.
        ("throughfile", "nightly/orders/orders.csv/sub"),
    ] {
        let id = acme.submit(&spec_in(name, dir), None).await.unwrap().id;
        let status = wait_settled(&acme, id, Duration::from_secs(60)).await;
        assert_eq!(status.state, ExportState::Failed, "{status:?}");
        let error = status.error.clone().unwrap_or_default();
        assert!(
            error.contains("outside the tenant's directory") || error.contains("not a directory"),
            "{error}"
        );
        assert!(
            !error.contains(&*fleet.out_dir.to_string_lossy()),
            "{error}"
        );
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0, "{dir}");
    }

    // A tenant id that could not name a directory is refused, not mapped
    // to another tenant.
    let http = reqwest::Client::new();
    for tenant in ["../acme", ".hidden", "a/b", "acme__x"] {
        let response = http
            .get(format!("{}/v1/exports", fleet.api_url))
            .bearer_auth(fleet.admin_token.reveal())
            .header("x-pagefleet-tenant", tenant)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 400, "tenant {tenant:?}");
    }
    // And another tenant sees none of acme's exports.
    let (other, _) = fleet.tenant_client("globex").await;
    assert!(other.list().await.unwrap().is_empty());
    fleet.stop().await;
    mock.shutdown().await;
}
