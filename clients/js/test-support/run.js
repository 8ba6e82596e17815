// `npm test`: runs `node --test test/` against a Latchkey server, notes-api and an admin
// endpoint. With LATCHKEY_URL, NOTES_URL and ADMIN_URL set (the Rust harness,
// crates/latchkey-testkit/tests/http/client_js.rs, sets them for servers it runs in-process),
// it uses those. With none set, it starts what that harness starts, from the workspace's
// own binaries: `latchkey serve` on a free port with a fresh SQLite database in a temporary
// directory, a feed client registered with `latchkey client add`, notes-api following its
// revocation feed, and ADMIN_URL/set-roles, which runs `latchkey user set-roles`; and stops
// them all at the end. Node 20 builtins only. It must not leave a process or a directory
// behind, whatever way the tests end.
import { spawn, execFile } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const packageDir = path.resolve(here, '..');
const workspace = path.resolve(packageDir, '../..');
const VARS = ['LATCHKEY_URL', 'NOTES_URL', 'ADMIN_URL'];

/** Stops with one line on stderr. */
function die(line) {
  process.stderr.write(`${line}\n`);
  process.exit(1);
}

/** The newest build of `name` in the workspace's target directory (debug or release). */
function binary(name) {
  const target = process.env.CARGO_TARGET_DIR ? path.resolve(workspace, process.env.CARGO_TARGET_DIR) : path.join(workspace, 'target');
  const found = ['debug', 'release']
    .map((profile) => path.join(target, profile, name))
    .filter((file) => existsSync(file))
    .sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs);
  return found[0] ?? null;
}

/** A port that was free a moment ago. The server must know its URL before it starts (it is
 * the issuer, which notes-api also checks tokens against), so port 0 will not do; a port
 * taken meanwhile makes the server exit, and startProcess's caller tries another. */
function freePort() {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

/** The environment for a child: ours without LATCHKEY_* and NOTES_API_* settings, so the
 * servers run with defaults, as the Rust harness's do, whatever the shell has set. */
function cleanEnv(extra) {
  const env = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !k.startsWith('LATCHKEY_') && !k.startsWith('NOTES_API_')),
  );
  return { ...env, NO_COLOR: '1', ...extra };
}

const children = new Set();

/** Starts `file args` and resolves once `url` answers HTTP at all; rejects with the
 * process's output when it exits first or stays silent for 60 s. */
async function startProcess(label, file, args, env, url) {
  const child = spawn(file, args, { env: cleanEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  let output = '';
  const keep = (chunk) => { output = (output + chunk).slice(-8000); };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  let exited = null;
  child.once('exit', (code, signal) => { exited = signal ?? code; children.delete(child); });
  for (let i = 0; i < 600; i += 1) {
    if (exited !== null) throw new Error(`${label} exited (${exited}) before it answered:\n${output}`);
    const isUp = await fetch(url).then(() => true, () => false);
    if (isUp) return child;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${label} did not answer at ${url} within 60 s:\n${output}`);
}

/** Runs the `latchkey` CLI on the database; resolves with its standard output. */
function cli(latchkey, databaseUrl, args) {
  return new Promise((resolve, reject) => {
    execFile(latchkey, ['--database-url', databaseUrl, ...args], { env: cleanEnv({}) }, (err, stdout, stderr) => {
      if (err) reject(new Error(`latchkey ${args.join(' ')} failed: ${stderr || err.message}`));
      else resolve(stdout);
    });
  });
}

/** Stops every child (SIGTERM, the servers' graceful shutdown; SIGKILL after 5 s). */
async function stopAll() {
  await Promise.all([...children].map((child) => new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) { resolve(); return; }
    const force = setTimeout(() => child.kill('SIGKILL'), 5000);
    child.once('exit', () => { clearTimeout(force); resolve(); });
    child.kill('SIGTERM');
  })));
}

async function startServers(latchkey, notesApi, dir) {
  const databaseUrl = `sqlite://${path.join(dir, 'latchkey.db')}`;
  let latchkeyUrl;
  for (let attempt = 1; ; attempt += 1) {
    const port = await freePort();
    latchkeyUrl = `http://127.0.0.1:${port}`;
    try {
      await startProcess('latchkey serve', latchkey, [
        '--database-url', databaseUrl, 'serve', '--listen', `127.0.0.1:${port}`, '--issuer', latchkeyUrl,
      ], { RUST_LOG: 'warn' }, `${latchkeyUrl}/jwks.json`);
      break;
    } catch (e) {
      if (attempt === 3) throw e;
    }
  }
  // notes-api reads the revocation feed as a client with the scope revocations:read; its
  // secret goes through the environment, not the command line other users can read.
  const feed = JSON.parse(await cli(latchkey, databaseUrl, [
    'client', 'add', '--name', 'notes-api', '--grant-types', 'client_credentials', '--scopes', 'revocations:read',
  ]));
  let notesUrl;
  for (let attempt = 1; ; attempt += 1) {
    const port = await freePort();
    notesUrl = `http://127.0.0.1:${port}`;
    try {
      await startProcess('notes-api', notesApi, ['--issuer', latchkeyUrl, '--listen', `127.0.0.1:${port}`], {
        NOTES_API_FEED_CLIENT_ID: feed.client_id,
        NOTES_API_FEED_CLIENT_SECRET: feed.client_secret,
        RUST_LOG: 'warn',
      }, `${notesUrl}/whoami`);
      break;
    } catch (e) {
      if (attempt === 3) throw e;
    }
  }
  // What only an administrator can do, as the Rust harness's endpoint does it.
  const admin = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://admin');
    if (req.method !== 'POST' || url.pathname !== '/set-roles') { res.writeHead(404).end(); return; }
    const args = ['user', 'set-roles', url.searchParams.get('user') ?? '', url.searchParams.get('roles') ?? ''];
    cli(latchkey, databaseUrl, args).then(() => res.writeHead(200).end(), () => res.writeHead(400).end());
  });
  await new Promise((resolve) => admin.listen(0, '127.0.0.1', resolve));
  return { latchkeyUrl, notesUrl, adminUrl: `http://127.0.0.1:${admin.address().port}`, admin };
}

function runTests(env) {
  return new Promise((resolve) => {
    const tests = spawn(process.execPath, ['--test', ...process.argv.slice(2), 'test/'], {
      cwd: packageDir, env, stdio: 'inherit',
    });
    children.add(tests);
    tests.once('exit', (code, signal) => { children.delete(tests); resolve(code ?? (signal ? 1 : 0)); });
  });
}

const given = VARS.filter((v) => process.env[v]);
if (given.length === VARS.length) {
  process.exitCode = await runTests(process.env);
} else if (given.length > 0) {
  die(`Set all of ${VARS.join(', ')} to test against running servers, or none to start them here (${given.join(', ')} set).`);
} else {
  const latchkey = binary('latchkey');
  const notesApi = binary('notes-api');
  if (!latchkey || !notesApi) {
    die('The tests need the latchkey and notes-api binaries: run `cargo build -p latchkey -p notes-api` in the workspace root, then `npm test` again.');
  }
  const dir = mkdtempSync(path.join(os.tmpdir(), 'latchkey-js-'));
  let admin = null;
  const cleanUp = async () => {
    admin?.close();
    await stopAll();
    rmSync(dir, { recursive: true, force: true });
  };
  for (const signal of ['SIGINT', 'SIGTERM']) {
    process.once(signal, () => { cleanUp().finally(() => process.exit(130)); });
  }
  try {
    const servers = await startServers(latchkey, notesApi, dir);
    admin = servers.admin;
    console.log(`Testing against ${path.relative(workspace, latchkey)} at ${servers.latchkeyUrl} and ${path.relative(workspace, notesApi)} at ${servers.notesUrl}`);
    process.exitCode = await runTests({
      ...process.env,
      LATCHKEY_URL: servers.latchkeyUrl,
      NOTES_URL: servers.notesUrl,
      ADMIN_URL: servers.adminUrl,
    });
  } catch (e) {
    process.stderr.write(`${e.message}\n`);
    process.exitCode = 1;
  } finally {
    await cleanUp();
  }
}
