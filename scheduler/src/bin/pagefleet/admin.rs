//! `pagefleet admin token create|revoke|ls`: the operator's side of API
//! tokens. Needs an admin token in `PAGEFLEET_TOKEN`.

use clap::Subcommand;

use pagefleet_scheduler::admin::CreateToken;
use pagefleet_scheduler::client::ApiClient;
use pagefleet_scheduler::terminal::shown;

use crate::{parse_id, print_json, Failure};

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// API tokens: each acts for one tenant, or is an admin token.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a token and print it (shown this once; only its hash is kept).
    Create {
        /// The tenant the token acts for.
        #[arg(long, required_unless_present = "admin", conflicts_with = "admin")]
        tenant: Option<String>,
        /// An admin token instead (manages tokens, acts for any tenant).
        #[arg(long)]
        admin: bool,
        /// Whose token this is, for `ls`.
        #[arg(long, default_value = "")]
        label: String,
    },
    /// Revoke a token by its id; requests with it fail from now on.
    Revoke { id: String },
    /// List tokens (ids, tenants, labels; never the tokens).
    Ls,
}

pub async fn run(client: &ApiClient, command: AdminCommand, json: bool) -> Result<u8, Failure> {
    let AdminCommand::Token { command } = command;
    match command {
        TokenCommand::Create {
            tenant,
            admin,
            label,
        } => {
            let request = CreateToken {
                tenant,
                admin,
                label,
            };
            let created = client.create_token(&request).await?;
            if json {
                print_json(&created);
            } else {
                eprintln!(
                    "token {} created for {}; it is shown only now:",
                    created.record.id,
                    whose(created.record.tenant_id.as_deref())
                );
                println!("{}", created.token);
            }
            Ok(0)
        }
        TokenCommand::Revoke { id } => {
            let id = parse_id(&id)?;
            let record = client.revoke_token(id).await?;
            if json {
                print_json(&record);
            } else {
                println!("token {} revoked", record.id);
            }
            Ok(0)
        }
        TokenCommand::Ls => {
            let tokens = client.tokens().await?;
            if json {
                print_json(&tokens);
                return Ok(0);
            }
            println!("{:<36}  {:<16}  {:<8}  LABEL", "ID", "TENANT", "STATE");
            for t in tokens {
                let state = if t.revoked_at.is_some() {
                    "revoked"
                } else {
                    "live"
                };
                println!(
                    "{:<36}  {:<16}  {:<8}  {}",
                    t.id,
                    whose(t.tenant_id.as_deref()),
                    state,
                    shown(&t.label)
                );
            }
            Ok(0)
        }
    }
}

fn whose(tenant: Option<&str>) -> String {
    match tenant {
        Some(t) => format!("tenant {t}"),
        None => "admin".to_string(),
    }
}
