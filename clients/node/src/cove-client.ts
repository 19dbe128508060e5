// cove-client: an example cove bus client in Node.js (README.md "Clients", docs/bus.md §13).
//
//   node cove-client.js [--state-dir DIR] [--url URL] [--ca FILE] [--nkey-seed FILE] run
//        --algo FILE [--algo-type bin|python|wasm] [--dataset FILE]... [--key ED25519.pem]
//        [--policy FILE] [--out result.zip] [--ttl SECONDS] [--deadline SECONDS] [--keep]
//        [--participant-bus]
//
// It creates a CVM, starts a computation whose manifest it builds from the files (one
// participant key owns the algorithm and every dataset and consumes the result), attests the
// agent, uploads sealed and signed, follows the events until the run ends, fetches and unseals
// the result and removes the CVM. With --participant-bus the uploads and the download go over a
// second connection authenticated with the participant's own key (docs/bus.md §1.2). One line per step on stdout; exit 0 on Complete, 3 when the
// computation Failed, 1 on any other error, 2 on a bad command line.
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import * as flatbuffers from "flatbuffers";
import { ErrorCode as NatsErrorCode, NatsError, Subscription } from "nats";

import { Bus, BusOptions, CoveError, bodyAs, connectBus, cvmSubject, defaultStateDir, envelope, nkeySeedOf, openEnvelope, request } from "./bus";
import * as cc from "./crypto";
import { AgentState } from "./gen/cove/v1/agent-state";
import { AlgoType } from "./gen/cove/v1/algo-type";
import { Algorithm } from "./gen/cove/v1/algorithm";
import { AttestationRequest } from "./gen/cove/v1/attestation-request";
import { Backend } from "./gen/cove/v1/backend";
import { Body } from "./gen/cove/v1/body";
import { Chunk } from "./gen/cove/v1/chunk";
import { ChunkAck } from "./gen/cove/v1/chunk-ack";
import { ComputationStart } from "./gen/cove/v1/computation-start";
import { ComputationStatus } from "./gen/cove/v1/computation-status";
import { Consumer } from "./gen/cove/v1/consumer";
import { CvmCreate } from "./gen/cove/v1/cvm-create";
import { CvmInfo } from "./gen/cove/v1/cvm-info";
import { CvmRef } from "./gen/cove/v1/cvm-ref";
import { CvmState } from "./gen/cove/v1/cvm-state";
import { Dataset } from "./gen/cove/v1/dataset";
import { ErrorCode } from "./gen/cove/v1/error-code";
import { Event } from "./gen/cove/v1/event";
import { Evidence } from "./gen/cove/v1/evidence";
import { FileRole } from "./gen/cove/v1/file-role";
import { Manifest } from "./gen/cove/v1/manifest";
import { ResultChunkRequest } from "./gen/cove/v1/result-chunk-request";
import { ResultReady } from "./gen/cove/v1/result-ready";
import { ResultRequest } from "./gen/cove/v1/result-request";
import { StatusRequest } from "./gen/cove/v1/status-request";
import { Tee } from "./gen/cove/v1/tee";
import { UploadBegin } from "./gen/cove/v1/upload-begin";
import { UploadReady } from "./gen/cove/v1/upload-ready";

const say = (line: string) => process.stdout.write(line + "\n");

// ---- command line ------------------------------------------------------------------------------

interface Args {
  bus: BusOptions;
  algo: string;
  algoType: cc.AlgoTypeName;
  datasets: string[];
  key?: string;
  policy?: string;
  out: string;
  ttl: number;
  deadline: number;
  keep: boolean;
  participantBus: boolean;
}

class UsageError extends globalThis.Error {}

function parseArgs(argv: string[]): Args {
  const a: Args = { bus: {}, algo: "", algoType: "bin", datasets: [], out: "result.zip", ttl: 600, deadline: 60, keep: false, participantBus: false };
  let command = "";
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new UsageError(`${flag} needs a value`);
      return argv[++i];
    };
    const seconds = () => {
      const v = value();
      if (!/^[0-9]+$/.test(v)) throw new UsageError(`${flag}: '${v}' is not a number of seconds`);
      return Number(v);
    };
    switch (flag) {
      case "--url": a.bus.url = value(); break;
      case "--state-dir": a.bus.stateDir = value(); break;
      case "--ca": a.bus.caFile = value(); break;
      case "--nkey-seed": a.bus.nkeyFile = value(); break;
      case "--algo": a.algo = value(); break;
      case "--algo-type": {
        const t = value();
        if (t !== "bin" && t !== "python" && t !== "wasm") throw new UsageError(`--algo-type: '${t}' is not bin, python or wasm`);
        a.algoType = t;
        break;
      }
      case "--dataset": a.datasets.push(value()); break;
      case "--key": a.key = value(); break;
      case "--policy": a.policy = value(); break;
      case "--out": a.out = value(); break;
      case "--ttl": a.ttl = seconds(); break;
      case "--deadline": a.deadline = seconds(); break;
      case "--keep": a.keep = true; break;
      case "--participant-bus": a.participantBus = true; break;
      case "-h":
      case "--help":
        throw new UsageError("");
      default:
        if (flag.startsWith("-") || command) throw new UsageError(`unknown argument '${flag}'`);
        command = flag;
    }
  }
  if (command !== "run") throw new UsageError(command ? `unknown command '${command}'` : "missing command 'run'");
  if (!a.algo) throw new UsageError("run needs --algo FILE");
  return a;
}

const usage = `usage: cove-client [--state-dir DIR] [--url URL] [--ca FILE] [--nkey-seed FILE] run
         --algo FILE [--algo-type bin|python|wasm] [--dataset FILE]... [--key ED25519.pem]
         [--policy FILE] [--out result.zip] [--ttl SECONDS] [--deadline SECONDS] [--keep]
         [--participant-bus]`;

// ---- events ------------------------------------------------------------------------------------

interface Ev {
  kind: string;
  cvm: string;
  state: string;
  message: string;
}

/** Every event seen on cove.v1.events.>, and waiting for one with a deadline. */
class EventLog {
  private events: Ev[] = [];
  private wake: (() => void)[] = [];
  cvm = "";

  follow(sub: Subscription): void {
    (async () => {
      for await (const m of sub) {
        let ev: Ev;
        try {
          const e = bodyAs(openEnvelope(m.data), Body.Event, () => new Event());
          ev = { kind: e.kind() ?? "", cvm: e.cvmId() ?? "", state: e.state() ?? "", message: e.message() ?? "" };
        } catch (err) {
          say(`event ? unreadable on ${m.subject}: ${err}`);
          continue;
        }
        this.events.push(ev);
        if (this.cvm && ev.cvm === this.cvm) say(`event ${ev.kind} ${ev.cvm} ${ev.state} ${ev.message}`);
        this.wake.splice(0).forEach((w) => w());
      }
    })();
  }

  /** Events of our CVM that arrived before we knew its id. */
  replay(): void {
    for (const ev of this.events)
      if (ev.cvm === this.cvm) say(`event ${ev.kind} ${ev.cvm} ${ev.state} ${ev.message}`);
  }

  async waitFor(pred: (e: Ev) => boolean, until: number, what: string): Promise<Ev> {
    for (;;) {
      const hit = this.events.find((e) => e.cvm === this.cvm && pred(e));
      if (hit) return hit;
      const left = until - Date.now();
      if (left <= 0) throw new CoveError(ErrorCode.timeout, `no event '${what}' before the deadline`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.wake.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }
}

// ---- the bus calls -----------------------------------------------------------------------------

async function createCvm(bus: Bus, ttl: number): Promise<string> {
  const payload = envelope(Body.CvmCreate, (b) => CvmCreate.createCvmCreate(b, Backend.process, Tee.sim, ttl, 0, false));
  const info = await request(bus, "cove.v1.manager.create", payload, Body.CvmInfo, () => new CvmInfo(), 30000);
  const id = info.id() ?? "";
  say(`cvm ${id} ${CvmState[info.state()]}`);
  return id;
}

async function removeCvm(bus: Bus, id: string): Promise<void> {
  const payload = envelope(Body.CvmRef, (b) => CvmRef.createCvmRef(b, b.createString(id)));
  const info = await request(bus, "cove.v1.manager.remove", payload, Body.CvmInfo, () => new CvmInfo(), 15000);
  say(`cvm ${id} ${CvmState[info.state()]}`);
}

function buildManifest(b: flatbuffers.Builder, m: cc.ManifestSpec): flatbuffers.Offset {
  const datasets = m.datasets.map((d) =>
    Dataset.createDataset(b, b.createString(d.filename), Dataset.createHashVector(b, d.hash), Dataset.createUserKeyVector(b, d.userKey)),
  );
  const args = m.algorithm.args.map((s) => b.createString(s));
  const algo = Algorithm.createAlgorithm(
    b,
    Algorithm.createHashVector(b, m.algorithm.hash),
    Algorithm.createUserKeyVector(b, m.algorithm.userKey),
    AlgoType[m.algorithm.algoType],
    Algorithm.createAlgoArgsVector(b, args),
  );
  const consumers = m.consumers.map((c) => Consumer.createConsumer(b, Consumer.createUserKeyVector(b, c)));
  const id = b.createString(m.id);
  const name = b.createString(m.name);
  const description = b.createString(m.description);
  const datasetVec = Manifest.createDatasetsVector(b, datasets);
  const consumerVec = Manifest.createResultConsumersVector(b, consumers);
  Manifest.startManifest(b);
  Manifest.addId(b, id);
  Manifest.addName(b, name);
  Manifest.addDescription(b, description);
  Manifest.addDatasets(b, datasetVec);
  Manifest.addAlgorithm(b, algo);
  Manifest.addResultConsumers(b, consumerVec);
  Manifest.addTimeoutSeconds(b, m.timeoutSeconds);
  return Manifest.endManifest(b);
}

async function startComputation(bus: Bus, cvm: string, m: cc.ManifestSpec): Promise<void> {
  const payload = envelope(
    Body.ComputationStart,
    (b) => {
      const manifest = buildManifest(b, m);
      const id = b.createString(cvm);
      ComputationStart.startComputationStart(b);
      ComputationStart.addCvmId(b, id);
      ComputationStart.addManifest(b, manifest);
      return ComputationStart.endComputationStart(b);
    },
    4096,
  );
  const st = await request(bus, "cove.v1.computation.start", payload, Body.ComputationStatus, () => new ComputationStatus());
  say(`computation ${m.id} ${AgentState[st.state()]}`);
}

async function status(bus: Bus, cvm: string): Promise<ComputationStatus> {
  const payload = envelope(Body.StatusRequest, (b) => StatusRequest.createStatusRequest(b, b.createString(cvm)));
  return request(bus, cvmSubject(cvm, "status"), payload, Body.ComputationStatus, () => new ComputationStatus());
}

/** docs/bus.md §7: a fresh nonce, the evidence, our own verification; returns the agent's kx key. */
async function attest(bus: Bus, cvm: string, policy: cc.Policy, policyDir: string): Promise<Uint8Array> {
  const nonce = new Uint8Array(crypto.randomBytes(32));
  const payload = envelope(Body.AttestationRequest, (b) =>
    AttestationRequest.createAttestationRequest(b, AttestationRequest.createNonceVector(b, nonce)),
  );
  const ev = await request(bus, cvmSubject(cvm, "attest"), payload, Body.Evidence, () => new Evidence());
  const report = ev.reportArray() ?? new Uint8Array();
  const chain = Buffer.from(ev.certChainArray() ?? new Uint8Array()).toString("utf8");
  const kx = ev.kxPublicKeyArray() ?? new Uint8Array();
  const signPk = ev.signPublicKeyArray() ?? new Uint8Array();
  let v: cc.Verified;
  try {
    v = cc.verifyEvidence(report, chain, kx, signPk, nonce, policy, policyDir);
  } catch (err) {
    throw new CoveError(ErrorCode.attestation_failed, (err as Error).message);
  }
  say(`attested ${cvm} report v${v.version} measurement ${v.measurement.slice(0, 16)}...`);
  return new Uint8Array(kx);  // copy: the reply buffer is not ours to keep
}

/** The agent must hold exactly our manifest before anything is sent (docs/bus.md §8.4 step 2). */
async function checkManifest(bus: Bus, cvm: string, id: string, digest: Uint8Array): Promise<void> {
  const st = await status(bus, cvm);
  const theirs = st.manifestSha3Array() ?? new Uint8Array();
  if (st.computationId() !== id || !Buffer.from(theirs).equals(Buffer.from(digest)))
    throw new CoveError(ErrorCode.attestation_failed, `CVM '${cvm}' holds another manifest than ours; nothing was sent`);
}

/** docs/bus.md §8: UploadBegin, then sealed chunks with at most `window` unacknowledged. */
async function upload(
  bus: Bus,
  cvm: string,
  role: "algorithm" | "dataset",
  file: string,
  owner: cc.Participant,
  m: cc.ManifestSpec,
  digest: Uint8Array,
  agentKx: Uint8Array,
): Promise<void> {
  const data = new Uint8Array(fs.readFileSync(file));
  const filename = role === "dataset" ? path.basename(file) : "algo";
  const sealer = new cc.Sealer(agentKx);
  const begin = envelope(Body.UploadBegin, (b) =>
    UploadBegin.createUploadBegin(
      b,
      b.createString(m.id),
      role === "algorithm" ? FileRole.algorithm : FileRole.dataset,
      b.createString(role === "dataset" ? filename : ""),
      BigInt(data.length),
      UploadBegin.createSenderPkVector(b, sealer.ephemeralPk),
      UploadBegin.createStreamHeaderVector(b, sealer.header),
      UploadBegin.createSignerKeyVector(b, owner.der),
    ),
  );
  const ready = await request(bus, cvmSubject(cvm, "upload"), begin, Body.UploadReady, () => new UploadReady());
  const streamId = ready.streamId() ?? "";
  const chunkSize = ready.chunkSize();
  const window = Math.min(Math.max(ready.window(), 1), 256);
  if (chunkSize === 0 || chunkSize > 768 * 1024) throw new CoveError(ErrorCode.invalid_request, "agent offered a bad chunk size");

  // docs/bus.md §8.2: sign the manifest's hash of the file, which the agent names in
  // UploadReady; the agent hashes what it decrypts and compares. Check it is our manifest's.
  const hash = ready.sha3256Array() ?? new Uint8Array();
  const ours = role === "algorithm" ? m.algorithm.hash : m.datasets.find((d) => d.filename === filename)?.hash;
  if (hash.length !== 32 || ours === undefined || !Buffer.from(hash).equals(Buffer.from(ours)))
    throw new CoveError(ErrorCode.attestation_failed, `${role} '${filename}': the agent expects another SHA3-256 than our manifest's`);
  const chunks = data.length === 0 ? 1 : Math.ceil(data.length / chunkSize);
  const signature = cc.sign(owner, cc.uploadStatement(m.id, digest, role, filename, hash, agentKx, sealer.ephemeralPk));
  const inFlight = new Set<Promise<void>>();
  let done = false;
  let failure: unknown = null;
  for (let seq = 0; seq < chunks && failure === null; seq++) {
    const last = seq === chunks - 1;
    const cipher = sealer.push(data.subarray(seq * chunkSize, Math.min(data.length, (seq + 1) * chunkSize)), last);
    const payload = envelope(
      Body.Chunk,
      (b) => {
        const sid = b.createString(streamId);
        const d = Chunk.createDataVector(b, cipher);
        const h = last ? Chunk.createSha3256Vector(b, hash) : 0;
        const s = last ? Chunk.createSignatureVector(b, signature) : 0;
        return Chunk.createChunk(b, sid, BigInt(seq), d, last, h, s);
      },
      cipher.length + 1024,
    );
    const p: Promise<void> = request(bus, cvmSubject(cvm, "chunk"), payload, Body.ChunkAck, () => new ChunkAck(), 30000)
      .then((ack) => {
        if (ack.done()) done = true;
      })
      .catch((err) => {
        failure ??= err;
      })
      .finally(() => inFlight.delete(p));
    inFlight.add(p);
    while (inFlight.size >= window) await Promise.race(inFlight);  // each ChunkAck returns one credit
  }
  await Promise.all(inFlight);
  if (failure !== null) throw failure;
  if (!done) throw new CoveError(ErrorCode.internal, "the agent did not confirm the upload");
  say(`uploaded ${role} ${filename} (${data.length} bytes, ${chunks} chunks)`);
}

/** docs/bus.md §9: signed ResultRequest, unwrap the stream key, pull every chunk in order. */
async function fetchResult(
  bus: Bus,
  cvm: string,
  consumer: cc.Participant,
  m: cc.ManifestSpec,
  digest: Uint8Array,
  agentKx: Uint8Array,
  out: string,
): Promise<void> {
  const signature = cc.sign(consumer, cc.resultStatement(m.id, digest, consumer.der, agentKx));
  const req = envelope(Body.ResultRequest, (b) =>
    ResultRequest.createResultRequest(
      b,
      b.createString(m.id),
      ResultRequest.createConsumerKeyVector(b, consumer.der),
      ResultRequest.createSignatureVector(b, signature),
    ),
  );
  const rr = await request(bus, cvmSubject(cvm, "result"), req, Body.ResultReady, () => new ResultReady());
  const key = cc.unwrapKey(consumer, rr.wrappedKeyArray() ?? new Uint8Array());
  const opener = new cc.Opener(key, new Uint8Array(rr.streamHeaderArray() ?? new Uint8Array()));
  const streamId = rr.streamId() ?? "";
  const chunks = Number(rr.chunks());
  const size = Number(rr.size());
  const window = Math.min(Math.max(rr.window(), 1), 256);
  if (chunks === 0) throw new CoveError(ErrorCode.invalid_request, "agent announced an empty result stream");

  const ask = (seq: number) => {
    const reply = request(
      bus,
      cvmSubject(cvm, "result.chunk"),
      envelope(Body.ResultChunkRequest, (b) => ResultChunkRequest.createResultChunkRequest(b, b.createString(streamId), BigInt(seq))),
      Body.Chunk,
      () => new Chunk(),
      30000,
    );
    reply.catch(() => {});  // awaited in order below; after a failure the rest are abandoned, not unhandled
    return reply;
  };
  // Requests go out in order, at most `window` outstanding; replies are consumed in order.
  const pending: Promise<Chunk>[] = [];
  let requested = 0;
  for (; requested < Math.min(window, chunks); requested++) pending.push(ask(requested));
  const parts: Uint8Array[] = [];
  for (let seq = 0; seq < chunks; seq++) {
    const chunk = await pending.shift()!;
    if (Number(chunk.seq()) !== seq) throw new CoveError(ErrorCode.invalid_request, "result chunks out of order");
    let opened;
    try {
      opened = opener.pull(chunk.dataArray() ?? new Uint8Array());
    } catch (err) {
      throw new CoveError(ErrorCode.crypto_failed, (err as Error).message);
    }
    if (opened.final !== (seq === chunks - 1)) throw new CoveError(ErrorCode.crypto_failed, "result stream ended early or late");
    parts.push(opened.plain);
    if (requested < chunks) pending.push(ask(requested++));
  }
  const result = Buffer.concat(parts);
  if (result.length !== size) throw new CoveError(ErrorCode.crypto_failed, `result is ${result.length} bytes, announced ${size}`);
  fs.writeFileSync(out, result);
  say(`result ${result.length} bytes -> ${out}`);
}

// ---- the journey -------------------------------------------------------------------------------

async function run(a: Args): Promise<number> {
  await cc.ready;
  const owner = a.key ? cc.loadParticipant(a.key) : cc.participantFrom(crypto.generateKeyPairSync("ed25519").privateKey);
  const stateDir = a.bus.stateDir ?? defaultStateDir();
  const policyFile = a.policy ?? path.join(stateDir, "sim", "policy.json");
  const policy = JSON.parse(fs.readFileSync(policyFile, "utf8")) as cc.Policy;

  const algo = new Uint8Array(fs.readFileSync(a.algo));
  const m: cc.ManifestSpec = {
    id: `node-${crypto.randomUUID()}`,
    name: "cove Node.js client example",
    description: "",
    datasets: a.datasets.map((f) => ({ filename: path.basename(f), hash: cc.sha3(new Uint8Array(fs.readFileSync(f))), userKey: owner.der })),
    algorithm: { hash: cc.sha3(algo), userKey: owner.der, algoType: a.algoType, args: [] },
    consumers: [owner.der],
    timeoutSeconds: 0,
  };
  const digest = cc.manifestDigest(m);

  const bus = await connectBus(a.bus);
  say(`connected ${bus.url}${bus.user ? ` as ${bus.user}` : ""}`);
  const until = Date.now() + a.deadline * 1000;
  const events = new EventLog();
  events.follow(bus.nc.subscribe("cove.v1.events.>"));
  await bus.nc.flush();  // the subscription is in place before anything happens

  let cvm = "";
  let pbus = bus;  // the data plane's connection
  try {
    cvm = await createCvm(bus, a.ttl);
    events.cvm = cvm;
    events.replay();
    await startComputation(bus, cvm, m);

    if (a.participantBus) pbus = await connectParticipant(a.bus, owner, until);
    let agentKx = await attest(pbus, cvm, policy, path.dirname(policyFile));
    await checkManifest(pbus, cvm, m.id, digest);
    await upload(pbus, cvm, "algorithm", a.algo, owner, m, digest, agentKx);
    for (const d of a.datasets) await upload(pbus, cvm, "dataset", d, owner, m, digest, agentKx);

    const end = await events.waitFor(
      (e) => e.kind === "computation" && (e.state === "ConsumingResults" || e.state === "Failed"),
      until,
      "ConsumingResults or Failed",
    );
    if (end.state === "Failed") {
      say(`computation ${m.id} Failed: ${end.message}`);
      return 3;
    }
    agentKx = await attest(pbus, cvm, policy, path.dirname(policyFile));  // a fresh nonce per session
    await checkManifest(pbus, cvm, m.id, digest);
    await fetchResult(pbus, cvm, owner, m, digest, agentKx, a.out);
    await events.waitFor((e) => e.kind === "computation" && e.state === "Complete", until, "Complete");
    say(`computation ${m.id} Complete`);
    return 0;
  } finally {
    if (cvm && !a.keep) {
      try {
        await removeCvm(bus, cvm);
      } catch (err) {
        say(`remove ${cvm}: ${err}`);
      }
    }
    if (pbus !== bus) await pbus.nc.close();
    await bus.nc.drain();
  }
}

/**
 * Connects with the participant's own key as its nkey. coved admits it once computation.start
 * accepted a manifest naming it, after reloading the server's configuration: until then the
 * server answers "Authorization Violation", so this retries until the deadline.
 */
async function connectParticipant(o: BusOptions, p: cc.Participant, until: number): Promise<Bus> {
  for (;;) {
    try {
      const b = await connectBus({ ...o, nkeyFile: undefined, nkeySeed: nkeySeedOf(p.key), name: "cove-node-participant" });
      say(`connected ${b.url} as participant ${b.user}`);
      return b;
    } catch (err) {
      const e = err as NatsError;
      if (e.code !== NatsErrorCode.AuthorizationViolation || Date.now() > until) throw err;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
}

async function main(): Promise<number> {
  let args: Args;
  try {
    args = parseArgs(process.argv.slice(2));
  } catch (err) {
    const msg = (err as Error).message;
    process.stderr.write((msg ? `cove-client: ${msg}\n` : "") + usage + "\n");
    return msg ? 2 : 0;
  }
  try {
    return await run(args);
  } catch (err) {
    const text = err instanceof CoveError ? err.toString() : String((err as Error)?.message ?? err);
    process.stderr.write(`cove-client: ${text}\n`);
    say(`error ${text}`);
    return 1;
  }
}

main().then((code) => process.exit(code));
