#!/usr/bin/python3
"""The cocos front door of a standalone cove-agent, driven from Python with python3-grpcio.

Stubs are generated at build time from proto/agent/agent.proto (protoc --python_out +
grpc_python_plugin). This client does what cocos-cli does: signs the role strings with
RSA PKCS#1 v1.5 / ECDSA / Ed25519 keys, streams 1 MiB chunks with cocos metadata, and
reads the file-size header. Run by ctest as integration.grpc_agent_python:

    /usr/bin/python3 grpc_agent_client.py --agent build/bin/cove-agent --stubs build/tests/python/stubs
"""
import argparse
import base64
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile

import grpc
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

CHUNK = 1 << 20
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what, file=sys.stderr)


def spki(key):
    return key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def sign(key, role):
    msg = role.encode()
    if isinstance(key, rsa.RSAPrivateKey):
        sig = key.sign(msg, padding.PKCS1v15(), hashes.SHA256())
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        sig = key.sign(msg, ec.ECDSA(hashes.SHA256()))
    else:
        sig = key.sign(msg)
    return base64.b64encode(sig).decode()


def sha3(data):
    return hashlib.sha3_256(data).digest()


class Agent:
    """cove-agent in its own session, killed by PID; its port comes from --grpc-port-file."""

    def __init__(self, binary, tmp, name, manifest, extra=()):
        self.tmp, self.name = tmp, name
        port_file = os.path.join(tmp, name + ".port")
        self.log_path = os.path.join(tmp, name + ".log")
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen([binary, "--tee", "sim", "--manifest", manifest, "--grpc-listen",
                                          "127.0.0.1:0", "--grpc-port-file", port_file,
                                          "--work-dir", os.path.join(tmp, name + "-work")] + list(extra),
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while not os.path.exists(port_file):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit("cove-agent did not start: " + open(self.log_path).read())
            time.sleep(0.02)
        self.port = int(open(port_file).read())

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(timeout=10)
                check(rc == 0, "%s exit status %d" % (self.name, rc))
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
                check(False, "%s did not stop on SIGTERM" % self.name)
        if failures:
            print("%s log:\n%s" % (self.name, open(self.log_path).read()), file=sys.stderr)


def code_of(call):
    try:
        call()
        return grpc.StatusCode.OK, ""
    except grpc.RpcError as e:
        return e.code(), e.details()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--agent", required=True)
    ap.add_argument("--stubs", required=True)
    ap.add_argument("--mode", choices=["journey", "tls"], default="journey")
    args = ap.parse_args()
    sys.path.insert(0, args.stubs)
    if args.mode == "tls":
        tls_modes(args)
    else:
        journey(args)
    if failures:
        print("%d check(s) failed" % len(failures), file=sys.stderr)
        return 1
    print("python3-grpcio %s: ok" % args.mode)
    return 0


def journey(args):
    import agent_pb2
    import agent_pb2_grpc

    algo_key = ec.generate_private_key(ec.SECP256R1())
    data_key = ed25519.Ed25519PrivateKey.generate()
    consumer_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    # A python algorithm: sums the value column of every dataset file, scaled by argv[1].
    algorithm = (b"import os, sys\n"
                 b"scale = int(sys.argv[1])\n"
                 b"total = 0\n"
                 b"for root, _, files in os.walk('datasets'):\n"
                 b"    for f in sorted(x for x in files if x.endswith('.csv')):\n"
                 b"        for line in open(os.path.join(root, f)):\n"
                 b"            total += int(line.split(',')[1])\n"
                 b"open('results/sum.txt', 'w').write(str(total * scale) + '\\n')\n")
    # The dataset is a directory, zipped (stored entries) and uploaded with decompress=true.
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("part1.csv", "a,1\nb,2\n")
        z.writestr("part2.csv", "c,3\n" * 400000)  # > 1 MiB: several messages
    dataset = buf.getvalue()
    # cocos-cli zips directories with deflate, which cove cannot unpack: refused with -d,
    # stored as the dataset file without it.
    dbuf = io.BytesIO()
    with zipfile.ZipFile(dbuf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("ignored.csv", "z,1000\n" * 100)
    deflated = dbuf.getvalue()
    expected_sum = (1 + 2 + 3 * 400000) * 7

    manifest = {
        "id": "python-journey",
        "name": "python3-grpcio client",
        "datasets": [{"hash": list(sha3(dataset)), "user_key": base64.b64encode(spki(data_key)).decode(),
                      "filename": "dataset.zip"},
                     {"hash": list(sha3(deflated)), "user_key": base64.b64encode(spki(data_key)).decode(),
                      "filename": "deflated.zip"}],
        "algorithm": {"hash": list(sha3(algorithm)), "user_key": base64.b64encode(spki(algo_key)).decode()},
        "result_consumers": [{"user_key": base64.b64encode(spki(consumer_key)).decode()}],
    }
    tmp = tempfile.mkdtemp(prefix="cove-grpc-py-")
    agent = None
    try:
        mpath = os.path.join(tmp, "manifest.json")
        with open(mpath, "w") as f:
            json.dump(manifest, f)
        agent = Agent(args.agent, tmp, "agent", mpath, ["--grpc-tls", "none"])
        port = agent.port
        channel = grpc.insecure_channel("127.0.0.1:%d" % port)
        grpc.channel_ready_future(channel).result(timeout=10)
        stub = agent_pb2_grpc.AgentServiceStub(channel)

        # Health: grpc.health.v1.Health/Check {service: "agent"} -> {status: SERVING}.
        check_health = channel.unary_unary("/grpc.health.v1.Health/Check")
        check(check_health(b"\x0a\x05agent", timeout=5) == b"\x08\x01", "health: agent SERVING")
        # Server reflection (list_services = field 7): grpcurl needs no .proto file.
        reflect = channel.stream_stream("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
        listed = list(reflect(iter([b"\x3a\x00"]), timeout=5))
        check(any(b"agent.AgentService" in r for r in listed), "reflection lists agent.AgentService")

        def algo_chunks(data):
            for off in range(0, len(data), CHUNK):
                yield agent_pb2.AlgoRequest(algorithm=data[off:off + CHUNK])

        def data_chunks(data, name):
            for off in range(0, len(data), CHUNK):
                yield agent_pb2.DataRequest(dataset=data[off:off + CHUNK], filename=name)

        algo_md = [("signature", sign(algo_key, "algorithm-provider")), ("user-id", "algorithm-provider"),
                   ("algo_type", "python"), ("algo_args", "7")]
        data_md = [("signature", sign(data_key, "data-provider")), ("decompress", "true")]
        consumer_md = [("signature", sign(consumer_key, "consumer"))]

        code, msg = code_of(lambda: stub.Data(data_chunks(dataset, "dataset.zip"), metadata=data_md))
        check(code == grpc.StatusCode.FAILED_PRECONDITION, "data before algo: %s %s" % (code, msg))
        code, msg = code_of(lambda: stub.Algo(algo_chunks(algorithm), metadata=[("algo_type", "python")]))
        check(code == grpc.StatusCode.UNAUTHENTICATED, "unsigned algo: %s %s" % (code, msg))
        code, msg = code_of(lambda: stub.Algo(algo_chunks(algorithm + b"#"), metadata=algo_md))
        check(code == grpc.StatusCode.INVALID_ARGUMENT and "does not match" in msg, "wrong hash: %s %s" % (code, msg))
        code, msg = code_of(lambda: stub.Algo(algo_chunks(algorithm), metadata=algo_md))
        check(code == grpc.StatusCode.OK, "algo: %s %s" % (code, msg))
        code, msg = code_of(lambda: stub.Data(data_chunks(b"x,1\n", "other.csv"), metadata=data_md))
        check(code == grpc.StatusCode.NOT_FOUND, "unknown dataset: %s %s" % (code, msg))
        code, msg = code_of(lambda: stub.Data(data_chunks(deflated, "deflated.zip"), metadata=data_md))
        check(code == grpc.StatusCode.INVALID_ARGUMENT and "only stored" in msg, "deflate -d: %s %s" % (code, msg))
        code, msg = code_of(lambda: stub.Data(data_chunks(deflated, "deflated.zip"),
                                              metadata=[("signature", sign(data_key, "data-provider"))]))
        check(code == grpc.StatusCode.OK, "deflated zip as a file: %s %s" % (code, msg))
        code, msg = code_of(lambda: stub.Data(data_chunks(dataset, "dataset.zip"), metadata=data_md))
        check(code == grpc.StatusCode.OK, "data: %s %s" % (code, msg))

        payload, size_header = None, None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            call = stub.Result(agent_pb2.ResultRequest(), metadata=consumer_md)
            try:
                chunks = [m.file for m in call]
                size_header = dict(call.initial_metadata()).get("file-size")
                payload = b"".join(chunks)
                break
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.FAILED_PRECONDITION or "not yet ready" not in e.details():
                    check(False, "result: %s %s" % (e.code(), e.details()))
                    break
                time.sleep(0.05)
        check(payload is not None, "result downloaded")
        if payload is not None:
            check(size_header == str(len(payload)), "file-size header %s for %d bytes" % (size_header, len(payload)))
            with zipfile.ZipFile(io.BytesIO(payload)) as z:
                got = z.read("sum.txt").decode().strip()
            check(got == str(expected_sum), "sum.txt = %s, expected %d" % (got, expected_sum))

        # Attestation: the SNP report inside the EAT carries the report data we asked for.
        tee, vtpm = os.urandom(64), os.urandom(32)
        call = stub.Attestation(agent_pb2.AttestationRequest(teeNonce=tee, vtpmNonce=vtpm, type=0))
        token = b"".join(m.file for m in call)
        check(dict(call.initial_metadata()).get("file-size") == str(len(token)), "attestation file-size")
        check(token[:1] == b"\xd2", "COSE_Sign1 tag 18")
        at = token.find(b"\x6araw_report\x59\x04\xa0")
        check(at >= 0 and token[at + 14 + 0x50:at + 14 + 0x90] == tee, "REPORT_DATA = teeNonce")
        check(vtpm in token, "eat_nonce = vtpmNonce")
        code, msg = code_of(lambda: list(stub.Attestation(agent_pb2.AttestationRequest(teeNonce=b"x" * 65))))
        check(code == grpc.StatusCode.INVALID_ARGUMENT, "65-byte teeNonce: %s %s" % (code, msg))
        code, msg = code_of(lambda: list(stub.IMAMeasurements(agent_pb2.IMAMeasurementsRequest())))
        check(code == grpc.StatusCode.FAILED_PRECONDITION, "IMA: %s %s" % (code, msg))
        channel.close()
    finally:
        if agent is not None:
            agent.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def tls_modes(args):
    """--grpc-tls tls with and without --client-ca (mTLS): who gets in, who does not."""
    import agent_pb2
    import agent_pb2_grpc
    import datetime
    from cryptography import x509
    from cryptography.x509.oid import NameOID, ExtendedKeyUsageOID
    import ipaddress

    now = datetime.datetime.now(datetime.timezone.utc)

    def cert(subject_cn, key, issuer_cn, issuer_key, ca=False, server=False):
        b = (x509.CertificateBuilder()
             .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)]))
             .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_cn)]))
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(minutes=5))
             .not_valid_after(now + datetime.timedelta(hours=1))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if server:
            b = b.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        elif not ca:
            b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        return b.sign(issuer_key, hashes.SHA256())

    def pem_key(k):
        return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption())

    def pem_cert(c):
        return c.public_bytes(serialization.Encoding.PEM)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = cert("cove test CA", ca_key, "cove test CA", ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = cert("cove-agent", server_key, "cove test CA", ca_key, server=True)
    client_ca_key = ec.generate_private_key(ec.SECP256R1())
    client_ca = cert("cove clients", client_ca_key, "cove clients", client_ca_key, ca=True)
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = cert("cocos-cli", client_key, "cove clients", client_ca_key)
    stranger_key = ec.generate_private_key(ec.SECP256R1())
    stranger = cert("stranger", stranger_key, "stranger", stranger_key)

    consumer_key = ed25519.Ed25519PrivateKey.generate()
    tmp = tempfile.mkdtemp(prefix="cove-grpc-tls-")
    agents = []
    try:
        files = {}
        for name, data in [("server.pem", pem_cert(server)), ("server.key", pem_key(server_key)),
                           ("clients.pem", pem_cert(client_ca))]:
            files[name] = os.path.join(tmp, name)
            with open(files[name], "wb") as f:
                f.write(data)
        manifest = {"id": "tls", "algorithm": {"hash": "00" * 32,
                                               "user_key": base64.b64encode(spki(consumer_key)).decode()},
                    "result_consumers": [{"user_key": base64.b64encode(spki(consumer_key)).decode()}]}
        mpath = os.path.join(tmp, "manifest.json")
        with open(mpath, "w") as f:
            json.dump(manifest, f)

        def attest_ok(channel):
            stub = agent_pb2_grpc.AgentServiceStub(channel)
            try:
                token = b"".join(m.file for m in stub.Attestation(agent_pb2.AttestationRequest(teeNonce=b"t" * 64),
                                                                    timeout=10))
                return token[:1] == b"\xd2"
            except grpc.RpcError as e:
                return e.code()

        tls = Agent(args.agent, tmp, "tls", mpath, ["--grpc-tls", "tls", "--cert", files["server.pem"],
                                                    "--key", files["server.key"]])
        agents.append(tls)
        addr = "127.0.0.1:%d" % tls.port
        creds = grpc.ssl_channel_credentials(root_certificates=pem_cert(ca))
        with grpc.secure_channel(addr, creds) as ch:
            check(attest_ok(ch) is True, "tls: attestation over TLS")
        with grpc.insecure_channel(addr) as ch:
            check(attest_ok(ch) == grpc.StatusCode.UNAVAILABLE, "tls: a plaintext client is refused")
        wrong_ca = grpc.ssl_channel_credentials(root_certificates=pem_cert(stranger))
        with grpc.secure_channel(addr, wrong_ca) as ch:
            check(attest_ok(ch) == grpc.StatusCode.UNAVAILABLE, "tls: a client trusting another CA fails")

        mtls = Agent(args.agent, tmp, "mtls", mpath, ["--grpc-tls", "tls", "--cert", files["server.pem"],
                                                      "--key", files["server.key"],
                                                      "--client-ca", files["clients.pem"]])
        agents.append(mtls)
        addr = "127.0.0.1:%d" % mtls.port
        good = grpc.ssl_channel_credentials(root_certificates=pem_cert(ca), private_key=pem_key(client_key),
                                            certificate_chain=pem_cert(client))
        with grpc.secure_channel(addr, good) as ch:
            check(attest_ok(ch) is True, "mtls: a client with a certificate from --client-ca gets in")
        with grpc.secure_channel(addr, creds) as ch:
            check(attest_ok(ch) == grpc.StatusCode.UNAVAILABLE, "mtls: a client without a certificate is refused")
        bad = grpc.ssl_channel_credentials(root_certificates=pem_cert(ca), private_key=pem_key(stranger_key),
                                           certificate_chain=pem_cert(stranger))
        with grpc.secure_channel(addr, bad) as ch:
            check(attest_ok(ch) == grpc.StatusCode.UNAVAILABLE, "mtls: a self-signed client certificate is refused")

        # Attested TLS with client certificates (cocos "maTLS"), spoken from Python's ssl
        # module from the reference alone: TLS 1.3 + ALPN h2, one type-1 frame with an RFC
        # 9261 ClientCertificateRequest offering 0xFF00, one type-2 frame back.
        import socket
        import ssl
        import struct
        matls = Agent(args.agent, tmp, "matls", mpath, ["--grpc-tls", "atls", "--client-ca", files["clients.pem"]])
        agents.append(matls)
        for name, data in [("client.pem", pem_cert(client)), ("client.key", pem_key(client_key))]:
            files[name] = os.path.join(tmp, name)
            with open(files[name], "wb") as f:
                f.write(data)
        exts = struct.pack(">HHHH", 0x000D, 4, 2, 0x0403) + struct.pack(">HH", 0xFF00, 0)
        body = bytes([32]) + os.urandom(32) + struct.pack(">H", len(exts)) + exts
        request = bytes([17]) + len(body).to_bytes(3, "big") + body

        def exchange(with_cert):
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            ctx.minimum_version = ssl.TLSVersion.TLSv1_3
            ctx.set_alpn_protocols(["h2"])
            if with_cert:
                ctx.load_cert_chain(files["client.pem"], files["client.key"])
            with socket.create_connection(("127.0.0.1", matls.port), timeout=10) as raw:
                try:
                    with ctx.wrap_socket(raw) as tls:
                        if tls.selected_alpn_protocol() != "h2" or tls.version() != "TLSv1.3":
                            return "negotiated %s %s" % (tls.version(), tls.selected_alpn_protocol())
                        tls.sendall(bytes([1]) + struct.pack(">I", len(request)) + request)
                        head = b""
                        while len(head) < 5:
                            more = tls.recv(5 - len(head))
                            if not more:
                                return "closed"
                            head += more
                        return "type %d" % head[0]
                except (ssl.SSLError, OSError) as e:
                    return "refused: %s" % e

        got = exchange(True)
        check(got == "type 2", "matls: a client with a certificate gets an authenticator (%s)" % got)
        got = exchange(False)
        check(got != "type 2", "matls: a client without a certificate gets nothing (%s)" % got)
    finally:
        for a in agents:
            a.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
