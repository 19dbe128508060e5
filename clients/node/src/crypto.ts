// What a cove participant computes itself (docs/bus.md §7-§9): the manifest digest, the signed
// statements, the evidence check, and libsodium's key exchange and secretstream. Everything here
// mirrors a C++ function named in the comments.
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import sodium from "libsodium-wrappers";

export const ready = sodium.ready;
export { sodium };

export function sha3(data: Uint8Array): Uint8Array {
  return new Uint8Array(crypto.createHash("sha3-256").update(data).digest());
}

export function hex(b: Uint8Array): string {
  return Buffer.from(b).toString("hex");
}

function u32be(n: number): Uint8Array {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, n);
  return out;
}

/** Length-prefixed field: u32be(len) || bytes (crypto_statements.cpp put_field). */
function lp(x: Uint8Array | string): Uint8Array[] {
  const b = typeof x === "string" ? new TextEncoder().encode(x) : x;
  return [u32be(b.length), b];
}

function concat(parts: Uint8Array[]): Uint8Array {
  return new Uint8Array(Buffer.concat(parts));
}

const ascii = (s: string) => new TextEncoder().encode(s);

export type AlgoTypeName = "bin" | "python" | "wasm";

/** cove::manifest, with every user_key as DER SubjectPublicKeyInfo. */
export interface ManifestSpec {
  id: string;
  name: string;
  description: string;
  datasets: { filename: string; hash: Uint8Array; userKey: Uint8Array }[];
  algorithm: { hash: Uint8Array; userKey: Uint8Array; algoType: AlgoTypeName; args: string[] };
  consumers: Uint8Array[];
  timeoutSeconds: number;
}

/** cove::manifest_digest (common/src/manifest.cpp), docs/bus.md §8.1. */
export function manifestDigest(m: ManifestSpec): Uint8Array {
  const parts: Uint8Array[] = [ascii("cove-manifest-v1"), ...lp(m.id), ...lp(m.name), ...lp(m.description)];
  parts.push(u32be(m.datasets.length));
  for (const d of m.datasets) parts.push(...lp(d.filename), ...lp(d.hash), ...lp(d.userKey));
  parts.push(...lp(m.algorithm.hash), ...lp(m.algorithm.userKey), ...lp(m.algorithm.algoType));
  parts.push(u32be(m.algorithm.args.length));
  for (const a of m.algorithm.args) parts.push(...lp(a));
  parts.push(u32be(m.consumers.length));
  for (const c of m.consumers) parts.push(...lp(c));
  parts.push(u32be(m.timeoutSeconds));
  return sha3(concat(parts));
}

/** crypto::upload_statement (common/src/crypto_statements.cpp), docs/bus.md §8.2. */
export function uploadStatement(
  computationId: string,
  manifestDigest: Uint8Array,
  role: "algorithm" | "dataset",
  filename: string,
  plaintextHash: Uint8Array,
  agentKx: Uint8Array,
  uploaderKx: Uint8Array,
): Uint8Array {
  return concat([
    ascii("cove-upload-v1"),
    ...lp(computationId),
    ...lp(manifestDigest),
    ...lp(role),
    ...lp(filename),
    ...lp(plaintextHash),
    ...lp(agentKx),
    ...lp(uploaderKx),
  ]);
}

/** crypto::result_statement, docs/bus.md §9. */
export function resultStatement(computationId: string, manifestDigest: Uint8Array, consumerDer: Uint8Array, agentKx: Uint8Array): Uint8Array {
  return concat([ascii("cove-result-v1"), ...lp(computationId), ...lp(manifestDigest), ...lp(consumerDer), ...lp(agentKx)]);
}

/** crypto::evidence_report_data: SHA-512 of the tag and the length-prefixed keys and nonce. */
export function evidenceReportData(kx: Uint8Array, sign: Uint8Array, nonce: Uint8Array): Uint8Array {
  const msg = concat([ascii("cove-evidence-v1"), ...lp(kx), ...lp(sign), ...lp(nonce)]);
  return new Uint8Array(crypto.createHash("sha512").update(msg).digest());
}

// ---- participant keys (Ed25519 here; cove also accepts ECDSA P-256 and RSA) -----------------

export interface Participant {
  key: crypto.KeyObject;  // Ed25519 private key
  der: Uint8Array;        // DER SubjectPublicKeyInfo: what the manifest names
}

export function participantFrom(key: crypto.KeyObject): Participant {
  if (key.asymmetricKeyType !== "ed25519") throw new Error("this example client signs with Ed25519 keys only");
  const der = new Uint8Array(crypto.createPublicKey(key).export({ type: "spki", format: "der" }));
  return { key, der };
}

export function loadParticipant(file: string): Participant {
  return participantFrom(crypto.createPrivateKey(fs.readFileSync(file, "utf8")));
}

export function sign(p: Participant, statement: Uint8Array): Uint8Array {
  return new Uint8Array(crypto.sign(null, statement, p.key));  // Ed25519 over the raw statement
}

/**
 * Unwraps ResultReady.wrapped_key (crypto::unwrap_key, common/src/crypto_seal.cpp) for an
 * Ed25519 consumer: 0x01 || crypto_box_seal(key) to the X25519 form of the consumer's key.
 */
export function unwrapKey(p: Participant, wrapped: Uint8Array): Uint8Array {
  if (wrapped.length < 1 || wrapped[0] !== 0x01) throw new Error("wrapped key: not the Ed25519 format (0x01)");
  const pkcs8 = p.key.export({ type: "pkcs8", format: "der" });
  const seed = new Uint8Array(pkcs8.subarray(pkcs8.length - 32));
  const edPk = p.der.subarray(p.der.length - 32);
  const edSk = concat([seed, edPk]);  // libsodium's 64-byte layout: seed || public key
  const xPk = sodium.crypto_sign_ed25519_pk_to_curve25519(edPk);
  const xSk = sodium.crypto_sign_ed25519_sk_to_curve25519(edSk);
  return sodium.crypto_box_seal_open(wrapped.subarray(1), xPk, xSk);
}

// ---- attestation (docs/bus.md §7) ------------------------------------------------------------

export interface Policy {
  measurements?: string[];
  host_data?: string;
  allow_debug?: boolean;
  trusted_roots?: string[];
  [other: string]: unknown;
}

export interface Verified {
  measurement: string;
  version: number;
}

function pemCerts(text: string): crypto.X509Certificate[] {
  const blocks = text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  return blocks.map((b) => new crypto.X509Certificate(b));
}

/** Little-endian 72-byte field holding a P-384 scalar -> 48 big-endian bytes. */
function leScalar(b: Uint8Array): Buffer {
  return Buffer.from(b.subarray(0, 48)).reverse();
}

/**
 * Verifies an agent's SEV-SNP (or simulated SEV-SNP) evidence the way cli/src/client.cpp does,
 * minus the VCEK extension checks (TCB and chip id against the VCEK) and the TCB/chip/product
 * policy keys, which attest/ implements and this example leaves out: chain to a trusted ARK,
 * report signature, REPORT_DATA binding of the two agent keys and the nonce, measurement, debug.
 */
export function verifyEvidence(
  report: Uint8Array,
  certChainPem: string,
  kx: Uint8Array,
  signPk: Uint8Array,
  nonce: Uint8Array,
  policy: Policy,
  policyDir: string,
): Verified {
  const fail = (why: string): never => {
    throw new Error(why);
  };
  if (report.length !== 1184) fail(`report: ${report.length} bytes, expected 1184`);
  const dv = new DataView(report.buffer, report.byteOffset, report.byteLength);
  const version = dv.getUint32(0x00, true);
  if (version < 2 || version > 5) fail(`report: version ${version}`);
  if (dv.getUint32(0x34, true) !== 1) fail("report: signature algorithm is not ECDSA P-384/SHA-384");
  if (kx.length !== 32 || signPk.length !== 32) fail("evidence: agent public keys must be 32 bytes each");

  // Chain: VCEK, ASK, ARK; the ARK byte-equal to a trusted root; each signs the next.
  const certs = pemCerts(certChainPem);
  if (certs.length < 3) fail("cert chain: expected VCEK, ASK and ARK");
  const [vcek, ask, ark] = certs;
  const roots = (policy.trusted_roots ?? []).map((r) =>
    r.includes("-----BEGIN") ? r : fs.readFileSync(path.resolve(policyDir, r), "utf8"),
  );
  const trusted = roots.flatMap(pemCerts).some((root) => root.raw.equals(ark.raw));
  if (!trusted) fail(`cert chain: ARK '${ark.subject.replace(/\n/g, ", ")}' is not one of the trusted roots`);
  if (!ark.verify(ark.publicKey)) fail("cert chain: ARK is not self-signed");
  if (!ask.verify(ark.publicKey)) fail("cert chain: ARK did not sign the ASK");
  if (!vcek.verify(ask.publicKey)) fail("cert chain: ASK did not sign the VCEK");
  const now = Date.now();
  for (const c of [vcek, ask, ark])
    if (now < Date.parse(c.validFrom) || now > Date.parse(c.validTo)) fail(`cert chain: '${c.subject}' is not valid now`);
  const vcekKey = vcek.publicKey;
  if (vcekKey.asymmetricKeyType !== "ec" || vcekKey.asymmetricKeyDetails?.namedCurve !== "secp384r1")
    fail("cert chain: the VCEK key is not EC P-384");

  // Report signature: ECDSA P-384/SHA-384 over [0, 0x2A0); R at 0x2A0, S at 0x2E8, little-endian.
  const sig = Buffer.concat([leScalar(report.subarray(0x2a0, 0x2e8)), leScalar(report.subarray(0x2e8, 0x330))]);
  if (!crypto.verify("sha384", report.subarray(0, 0x2a0), { key: vcekKey, dsaEncoding: "ieee-p1363" }, sig))
    fail("signature: the VCEK did not sign this report");

  // Binding: REPORT_DATA (0x50, 64 bytes) = evidence_report_data(kx, sign, our nonce).
  const want = evidenceReportData(kx, signPk, nonce);
  if (!Buffer.from(report.subarray(0x50, 0x90)).equals(Buffer.from(want)))
    fail("report_data: does not bind the agent's keys and our nonce");

  const measurement = hex(report.subarray(0x90, 0xc0));
  const ms = (policy.measurements ?? []).map((m) => m.toLowerCase());
  if (ms.length > 0 && !ms.includes(measurement)) fail(`measurement: got ${measurement}, expected one of ${ms.join(", ")}`);
  if (policy.host_data !== undefined && hex(report.subarray(0xc0, 0xe0)) !== policy.host_data.toLowerCase())
    fail("host_data: differs from the policy");
  const guestPolicy = dv.getBigUint64(0x08, true);
  if (!policy.allow_debug && guestPolicy & (1n << 19n)) fail(`allow_debug: guest policy 0x${guestPolicy.toString(16)} allows debugging`);
  return { measurement, version };
}

// ---- sealing (docs/bus.md §8.3, §9) ---------------------------------------------------------

/** An upload's sealing state: an ephemeral crypto_kx client key and a secretstream push state. */
export class Sealer {
  readonly ephemeralPk: Uint8Array;
  readonly header: Uint8Array;
  private readonly state: sodium.StateAddress;

  constructor(agentKx: Uint8Array) {
    const eph = sodium.crypto_kx_keypair();
    // The stream key is the client's tx key; the agent derives the same as its server-side rx.
    const { sharedTx } = sodium.crypto_kx_client_session_keys(eph.publicKey, eph.privateKey, agentKx);
    const init = sodium.crypto_secretstream_xchacha20poly1305_init_push(sharedTx);
    this.ephemeralPk = eph.publicKey;
    this.header = init.header;
    this.state = init.state;
  }

  push(plain: Uint8Array, last: boolean): Uint8Array {
    const tag = last
      ? sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL
      : sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE;
    return sodium.crypto_secretstream_xchacha20poly1305_push(this.state, plain, null, tag);
  }
}

/** A result stream's pull state. */
export class Opener {
  private readonly state: sodium.StateAddress;
  constructor(key: Uint8Array, header: Uint8Array) {
    this.state = sodium.crypto_secretstream_xchacha20poly1305_init_pull(header, key);
  }
  /** Plaintext and whether the chunk carried TAG_FINAL; throws when authentication fails. */
  pull(cipher: Uint8Array): { plain: Uint8Array; final: boolean } {
    const r = sodium.crypto_secretstream_xchacha20poly1305_pull(this.state, cipher, null);
    if (!r) throw new Error("result chunk failed authentication");
    return { plain: r.message, final: r.tag === sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL };
  }
}
