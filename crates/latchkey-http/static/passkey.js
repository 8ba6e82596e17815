// Passkeys on the pages (SPEC 11): "Sign in with a passkey" on the sign-in page and the
// second step, "Add a passkey" on the account page. The only script the pages load, and
// only for these buttons: they stay hidden where WebAuthn is unavailable, and every other
// form works without JavaScript. Requests carry the page's CSRF token; the server checks
// it and the Origin header like any form post.
"use strict";

(function () {
  if (!window.PublicKeyCredential || !navigator.credentials) {
    return;
  }

  function fromBase64url(text) {
    const base64 = text.replace(/-/g, "+").replace(/_/g, "/");
    const binary = atob(base64 + "===".slice((base64.length + 3) % 4));
    return Uint8Array.from(binary, (c) => c.charCodeAt(0)).buffer;
  }

  function toBase64url(buffer) {
    const bytes = new Uint8Array(buffer);
    let binary = "";
    for (const b of bytes) {
      binary += String.fromCharCode(b);
    }
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  // WebAuthn's options from their JSON form (binary values base64url).
  function creationOptions(json) {
    if (PublicKeyCredential.parseCreationOptionsFromJSON) {
      return PublicKeyCredential.parseCreationOptionsFromJSON(json);
    }
    const options = Object.assign({}, json);
    options.challenge = fromBase64url(json.challenge);
    options.user = Object.assign({}, json.user, { id: fromBase64url(json.user.id) });
    options.excludeCredentials = (json.excludeCredentials || []).map((c) =>
      Object.assign({}, c, { id: fromBase64url(c.id) }),
    );
    return options;
  }

  function requestOptions(json) {
    if (PublicKeyCredential.parseRequestOptionsFromJSON) {
      return PublicKeyCredential.parseRequestOptionsFromJSON(json);
    }
    const options = Object.assign({}, json);
    options.challenge = fromBase64url(json.challenge);
    options.allowCredentials = (json.allowCredentials || []).map((c) =>
      Object.assign({}, c, { id: fromBase64url(c.id) }),
    );
    return options;
  }

  // The credential in its JSON form, as `toJSON()` gives where browsers have it.
  function credentialJson(credential) {
    if (typeof credential.toJSON === "function") {
      return credential.toJSON();
    }
    const response = {};
    for (const name of ["clientDataJSON", "attestationObject", "authenticatorData", "signature", "userHandle"]) {
      if (credential.response[name]) {
        response[name] = toBase64url(credential.response[name]);
      }
    }
    return {
      id: credential.id,
      rawId: toBase64url(credential.rawId),
      type: credential.type,
      response: response,
      clientExtensionResults: credential.getClientExtensionResults(),
    };
  }

  async function post(url, body) {
    const response = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) {
      throw new Error(answer.error_description || "The server refused the passkey.");
    }
    return answer;
  }

  function say(text) {
    const status = document.getElementById("passkey-status");
    if (status) {
      status.textContent = text;
    }
  }

  const signIn = document.getElementById("passkey-sign-in");
  if (signIn) {
    signIn.hidden = false;
    document.getElementById("passkey-sign-in-button").addEventListener("click", async () => {
      say("");
      try {
        const start = await post("/auth/passkeys/login/start", {});
        const credential = await navigator.credentials.get({ publicKey: requestOptions(start.publicKey) });
        const done = await post("/login/passkey", {
          csrf: signIn.dataset.csrf,
          return_to: signIn.dataset.returnTo,
          challenge_id: start.challenge_id,
          credential: credentialJson(credential),
          // On the second step after the password, the passkey finishes that sign-in.
          mfa_token: signIn.dataset.mfaToken || undefined,
        });
        window.location.assign(done.redirect);
      } catch (e) {
        say(e.name === "NotAllowedError" ? "Signing in with a passkey was cancelled." : e.message);
      }
    });
  }

  const add = document.getElementById("passkey-add");
  if (add) {
    add.hidden = false;
    document.getElementById("passkey-add-button").addEventListener("click", async () => {
      say("");
      try {
        const start = await post("/account/passkeys/start", { csrf: add.dataset.csrf });
        const credential = await navigator.credentials.create({ publicKey: creationOptions(start.publicKey) });
        const done = await post("/account/passkeys/finish", {
          csrf: add.dataset.csrf,
          challenge_id: start.challenge_id,
          credential: credentialJson(credential),
          name: document.getElementById("passkey-name").value,
        });
        say("Passkey added: " + done.name + ".");
      } catch (e) {
        say(e.name === "NotAllowedError" ? "Adding a passkey was cancelled." : e.message);
      }
    });
  }
})();
