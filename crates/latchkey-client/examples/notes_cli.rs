//! A command-line client of notes-api built on `latchkey-client`: signs in once, keeps the
//! session in a file, and calls the API with single-flight refresh and one re-auth message.
//!
//! ```sh
//! export LATCHKEY_URL=http://127.0.0.1:8080 NOTES_URL=http://127.0.0.1:8090
//! cargo run -p latchkey-client --example notes_cli -- login alice   # reads the password from stdin
//! cargo run -p latchkey-client --example notes_cli -- add "buy milk"
//! cargo run -p latchkey-client --example notes_cli -- list
//! cargo run -p latchkey-client --example notes_cli -- whoami
//! cargo run -p latchkey-client --example notes_cli -- logout
//! ```

#![allow(clippy::print_stdout, clippy::print_stderr, reason = "a command-line example prints")]

use std::sync::Arc;

use latchkey_client::reqwest::{Method, Response};
use latchkey_client::{Client, Error, TokenStorage};

/// Keeps the session in a file next to the user's other settings (mode 0600 is the app's
/// job in real life; this example keeps it simple).
struct FileStorage(std::path::PathBuf);

#[async_trait::async_trait]
impl TokenStorage for FileStorage {
    async fn get(&self, _key: &str) -> Option<String> {
        std::fs::read_to_string(&self.0).ok()
    }

    async fn set(&self, _key: &str, value: String) {
        let _ = std::fs::write(&self.0, value);
    }

    async fn remove(&self, _key: &str) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let issuer = std::env::var("LATCHKEY_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".into());
    let api = std::env::var("NOTES_URL").unwrap_or_else(|_| "http://127.0.0.1:8090".into());
    let file = std::env::temp_dir().join("notes-cli.session");
    // The token goes to the issuer and to notes-api, and nowhere else.
    let client = Client::builder(issuer)
        .api_origin(&api)
        .storage(Arc::new(FileStorage(file)))
        .on_reauth(|reason| {
            eprintln!("Your session ended ({}). Run `notes_cli login USERNAME` again.", reason.as_str());
        })
        .build()?;
    client.resume().await;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["login", username] => {
            let mut password = String::new();
            std::io::stdin().read_line(&mut password)?;
            client
                .login(username, password.trim_end_matches(['\r', '\n']))
                .await
                .map(|_| "Signed in.".to_owned())
        }
        ["logout"] => client.logout().await.map(|()| "Signed out.".to_owned()),
        ["whoami"] => text(client.get(&format!("{api}/whoami")).await).await,
        ["list"] => text(client.get(&format!("{api}/notes")).await).await,
        ["add", note] => {
            let body = serde_json::json!({"text": note});
            text(client.request(Method::POST, &format!("{api}/notes"), |r| r.json(&body)).await).await
        }
        ["delete", id] => {
            text(client.request(Method::DELETE, &format!("{api}/notes/{id}"), |r| r).await).await
        }
        _ => {
            eprintln!("usage: notes_cli login USERNAME | logout | whoami | list | add TEXT | delete ID");
            std::process::exit(2);
        }
    };
    match result {
        Ok(out) => println!("{out}"),
        Err(Error::NotSignedIn) => eprintln!("Not signed in: run `notes_cli login USERNAME`."),
        Err(e) => eprintln!("{e}"),
    }
    Ok(())
}

async fn text(res: Result<Response, Error>) -> Result<String, Error> {
    let res = res?;
    let status = res.status();
    let body = res.text().await.map_err(Error::transport)?;
    Ok(format!("{status} {body}"))
}
