// The cove bus from Node.js: connecting to a locked coved bus (TLS + nkey),
// building and reading cove.v1.Envelope buffers, request/reply with typed
// errors. docs/bus.md §1-§4 is the contract this file follows.
import * as fs from "node:fs";
import { KeyObject, createPrivateKey } from "node:crypto";
import * as tls from "node:tls";
import * as path from "node:path";
import * as flatbuffers from "flatbuffers";
import { connect, nkeyAuthenticator, ErrorCode as NatsErrorCode, NatsConnection, NatsError } from "nats";

import { Body } from "./gen/cove/v1/body";
import { Envelope } from "./gen/cove/v1/envelope";
import { Error as ErrorBody } from "./gen/cove/v1/error";
import { ErrorCode } from "./gen/cove/v1/error-code";
import { encodeUserSeed, nkeyPublicFromSeed } from "./nkeys";

/** cove's limit for one bus message (bus::max_envelope_size, docs/bus.md §1). */
export const maxEnvelope = 1024 * 1024;

/** A failed request: an Error body from cove, or a transport failure mapped to a cove code. */
export class CoveError extends globalThis.Error {
  constructor(
    public readonly code: ErrorCode | number,
    message: string,
  ) {
    super(message);
  }
  get codeName(): string {
    return ErrorCode[this.code] ?? "unknown";
  }
  override toString(): string {
    return `${this.codeName}: ${this.message}`;
  }
}

export interface BusOptions {
  /** nats://, or tls:// for coved's locked embedded bus. Default: first line of <state>/nats.url. */
  url?: string;
  /** coved's state directory (default as cove's: $COVE_STATE_DIR, /var/lib/cove as root, ...); supplies nats.url, bus/ca.pem, bus/admin.seed. */
  stateDir?: string;
  /** PEM file of the CA that signed the server certificate (default <state>/bus/ca.pem). */
  caFile?: string;
  /**
   * The bus identity: a file with an nkey seed "SU..." (e.g. <state>/bus/admin.seed, the default)
   * or an Ed25519 participant key as PKCS#8 PEM (`cove keys generate`), whose seed is the nkey seed.
   */
  nkeyFile?: string;
  /** An encoded nkey seed "SU..." (instead of nkeyFile). */
  nkeySeed?: string;
  name?: string;
}

/** Reads a seed file: "SU..." as is, or an Ed25519 private key PEM converted to an nkey seed. */
export function loadNkeySeed(file: string): string {
  const text = fs.readFileSync(file, "utf8").trim();
  if (text.startsWith("SU")) return text;
  return nkeySeedOf(createPrivateKey(text), file);
}

/** The nkey seed of an Ed25519 private key: its 32-byte seed, encoded. */
export function nkeySeedOf(key: KeyObject, what = "key"): string {
  if (key.asymmetricKeyType !== "ed25519") throw new CoveError(ErrorCode.invalid_request, `${what}: only Ed25519 keys are nkeys`);
  const der = key.export({ format: "der", type: "pkcs8" });
  return encodeUserSeed(der.subarray(der.length - 32));  // PKCS#8 Ed25519: the 32-byte seed ends the DER
}

/** cove::default_state_dir (common/src/paths.cpp). */
export function defaultStateDir(): string {
  const env = process.env;
  if (env.COVE_STATE_DIR) return env.COVE_STATE_DIR;
  if (process.getuid?.() === 0) return "/var/lib/cove";
  if (env.XDG_STATE_HOME) return path.join(env.XDG_STATE_HOME, "cove");
  if (env.HOME) return path.join(env.HOME, ".local", "state", "cove");
  return "/tmp/cove";
}

export interface Bus {
  nc: NatsConnection;
  url: string;
  /** The nkey public key "U..." this connection authenticated with ("" without one). */
  user: string;
}

/**
 * Connects as coved's own tools do (cli/src/client.cpp bus_options): for a tls:// URL, the CA and
 * the admin seed under <state>/bus/ unless given. Every user may subscribe only to its own inbox
 * "_INBOX.<nkey public key>", so the inbox prefix must be set accordingly.
 */
export async function connectBus(o: BusOptions): Promise<Bus> {
  const stateDir = o.stateDir ?? defaultStateDir();
  let url = o.url ?? process.env.COVE_NATS_URL ?? "";
  if (!url) {
    const f = path.join(stateDir, "nats.url");
    if (fs.existsSync(f)) url = fs.readFileSync(f, "utf8").split("\n")[0].trim();
  }
  if (!url) url = "nats://127.0.0.1:4222";
  let caFile = o.caFile ?? process.env.COVE_NATS_CA ?? "";
  let nkeyFile = o.nkeyFile ?? process.env.COVE_NKEY_SEED ?? "";
  if (url.startsWith("tls://")) {
    const bus = path.join(stateDir, "bus");
    if (!caFile && fs.existsSync(path.join(bus, "ca.pem"))) caFile = path.join(bus, "ca.pem");
    if (!nkeyFile && !o.nkeySeed && fs.existsSync(path.join(bus, "admin.seed"))) nkeyFile = path.join(bus, "admin.seed");
  }
  let user = "";
  const opts: Parameters<typeof connect>[0] = {
    servers: url.replace(/^(tls|nats):\/\//, ""),
    name: o.name ?? "cove-node-client",
    maxReconnectAttempts: 0,
    timeout: 5000,
  };
  if (url.startsWith("tls://") || caFile) {
    // nats.js sends no server name for an IP address, and Node then checks the certificate
    // against "localhost": check it against the host we dialled instead.
    const host = new URL(url.replace(/^tls:/, "nats:")).hostname.replace(/^\[(.*)\]$/, "$1");
    opts.tls = {
      ...(caFile ? { caFile } : {}),
      checkServerIdentity: (_name: string, cert: tls.PeerCertificate) => tls.checkServerIdentity(host, cert),
    } as NonNullable<typeof opts.tls>;
  }
  if (o.nkeySeed || nkeyFile) {
    const seed = o.nkeySeed ?? loadNkeySeed(nkeyFile);
    user = nkeyPublicFromSeed(seed);
    opts.authenticator = nkeyAuthenticator(new TextEncoder().encode(seed));
    opts.inboxPrefix = `_INBOX.${user}`;
  }
  const nc = await connect(opts);
  return { nc, url, user };
}

/** Builds an Envelope ("COV1") around a body built by `body(builder)`. */
export function envelope(type: Body, body: (b: flatbuffers.Builder) => flatbuffers.Offset, size = 256): Uint8Array {
  const b = new flatbuffers.Builder(size);
  const off = body(b);
  const sender = b.createString("node-client");
  const cid = b.createString("");
  Envelope.startEnvelope(b);
  Envelope.addSchemaVersion(b, 1);
  Envelope.addCorrelationId(b, cid);
  Envelope.addSender(b, sender);
  Envelope.addSentAtNs(b, BigInt(Date.now()) * 1000000n);
  Envelope.addBodyType(b, type);
  Envelope.addBody(b, off);
  Envelope.finishEnvelopeBuffer(b, Envelope.endEnvelope(b));
  return b.asUint8Array();
}

/**
 * Reads a received Envelope. The JavaScript FlatBuffers runtime has no verifier, so this checks
 * what it can (size, identifier, body type) and a reader must still treat every field as
 * optional; a malformed buffer throws from the accessors, which callers turn into an error.
 */
export function openEnvelope(data: Uint8Array): Envelope {
  if (data.length < 8 || data.length > maxEnvelope)
    throw new CoveError(ErrorCode.invalid_request, `envelope of ${data.length} bytes`);
  const bb = new flatbuffers.ByteBuffer(data);
  if (!Envelope.bufferHasIdentifier(bb)) throw new CoveError(ErrorCode.invalid_request, "not a COV1 envelope");
  return Envelope.getRootAsEnvelope(bb);
}

/** The body of `env` if it has type `type`; an Error body becomes a thrown CoveError. */
export function bodyAs<T>(env: Envelope, type: Body, make: () => T): T {
  const got = env.bodyType();
  if (got === Body.Error) {
    const e = env.body(new ErrorBody()) as ErrorBody;
    const code = ErrorCode[e.code()] === undefined ? ErrorCode.unknown : e.code();
    throw new CoveError(code, e.message() ?? "");
  }
  if (got !== type)
    throw new CoveError(ErrorCode.invalid_request, `expected ${Body[type]} body, got ${Body[got] ?? `unknown(${got})`}`);
  const body = env.body(make()) as T | null;
  if (body === null) throw new CoveError(ErrorCode.invalid_request, `${Body[type]} body missing`);
  return body;
}

/** One request with a deadline; the reply must be `replyType` or Error. */
export async function request<T>(
  bus: Bus,
  subject: string,
  payload: Uint8Array,
  replyType: Body,
  make: () => T,
  timeoutMs = 10000,
): Promise<T> {
  let msg;
  try {
    msg = await bus.nc.request(subject, payload, { timeout: timeoutMs });
  } catch (err) {
    const e = err as NatsError;
    if (e.code === NatsErrorCode.NoResponders) throw new CoveError(ErrorCode.unavailable, `no service answers on ${subject}`);
    if (e.code === NatsErrorCode.Timeout) throw new CoveError(ErrorCode.timeout, `no reply on ${subject} within ${timeoutMs} ms`);
    if (e.code === NatsErrorCode.PermissionsViolation) throw new CoveError(ErrorCode.unauthorized, `the bus refused: ${e.message}`);
    throw new CoveError(ErrorCode.internal, `${subject}: ${e.message}`);
  }
  return bodyAs(openEnvelope(msg.data), replyType, make);
}

/** "cove.v1.cvm.<id>.<leaf>" after the id check of docs/bus.md §5. */
export function cvmSubject(cvmId: string, leaf: string): string {
  if (!/^[a-z0-9-]{1,64}$/.test(cvmId)) throw new CoveError(ErrorCode.invalid_request, `'${cvmId}' is not a valid CVM id`);
  return `cove.v1.cvm.${cvmId}.${leaf}`;
}
