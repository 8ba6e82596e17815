//! Interoperability with an independent, OpenID-certified relying party in another language:
//! `openid-client` 6 (on `oauth4webapi`) drives the server with DPoP through discovery, the
//! code flow with PKCE, userinfo and refresh, for a public and a confidential client, and
//! again against a server with `dpop_nonce = true` (its automatic `use_dpop_nonce` retry);
//! and OpenID Connect logout: `buildEndSessionUrl`, back-channel logout tokens checked with
//! `jose`, and refused end-session requests (`interop/node/logout.test.mjs`); and the device
//! flow (`initiateDeviceAuthorization`, `pollDeviceAuthorizationGrant`, `/device` approved
//! and denied; `interop/node/device.test.mjs`); and `buildAuthorizationUrlWithPAR` with
//! `require_par`, DPoP at the push, and `resource` at every grant
//! (`interop/node/par.test.mjs`); and `dynamicClientRegistration` in open and token mode
//! (`interop/node/registration.test.mjs`); and `PrivateKeyJwt` client authentication with
//! registered keys and a served `jwks_uri`, and a replayed assertion refused
//! (`interop/node/private-key-jwt.test.mjs`).
//! The tests themselves are in `interop/node/`; `interop/node/run-local.sh` starts
//! the two servers from the binary built here, creates the user and the clients with the
//! CLI, and runs it. `npm ci` there first (scripts/test does).

#[tokio::test]
async fn openid_client_drives_the_code_flow_refresh_and_userinfo_with_dpop() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../interop/node");
    let out = tokio::process::Command::new("bash")
        .arg("run-local.sh")
        .current_dir(&dir)
        .env("LATCHKEY_BIN", env!("CARGO_BIN_EXE_latchkey-node"))
        .output()
        .await
        .expect("bash and Node.js 20 or newer must be installed");
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "openid-client interop failed:\n{report}");
    assert!(
        report.contains("# fail 0") && report.contains("# todo 0"),
        "every test ran and passed:\n{report}"
    );
    // Every file ran: 11 tests of the flows with DPoP, 6 of logout, 5 of the device flow,
    // 7 of PAR and resource indicators, 5 of dynamic registration, 4 of private_key_jwt.
    assert!(report.contains("# pass 38"), "{report}");
}
