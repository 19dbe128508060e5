#!/usr/bin/python3
"""A stand-in for AMD KDS for the collateral tests: serves the SEV-SNP fixtures of
FIXTURES_DIR (argv[1]) in the KDS URL layout (attest/include/cove/attest/collateral.hpp):

  /<mode>/vcek/v1/<Product>/cert_chain                          ask_ark_<product>.pem
  /<mode>/vcek/v1/<Product>/<chip id hex>/bl<B>-tee<T>-snp<S>-ucode<U>[-fmc<F>].der
                                                                 <name>-vcek.der

the chip id and TCB taken from each fixture report (<name>-report.bin). Anything else
is 404. <mode> is how to answer (per path, counting requests to that path):

  ok          the file
  429x2       429 with Retry-After: 1 for the first 2 requests, then the file
  429long     429 with Retry-After: 3600, always
  503         503 without Retry-After, always
  garbage     200 with a body that is no certificate
  truncated   200 with the first half of the file (an honest Content-Length)
  short       200 whose Content-Length promises more than is sent
  slow        waits 30 s before answering

With CERT and KEY (argv[2], argv[3]) it speaks https with that certificate. Binds
127.0.0.1 port 0, prints the port on the first line of stdout, then one line per
request ("GET <path>"). Runs until killed."""
import http.server
import os
import ssl
import struct
import sys
import threading
import time

FIX = sys.argv[1]
FILES = {}
for name, product in (("milan", "Milan"), ("milan2", "Milan"), ("genoa", "Genoa"), ("turin", "Turin")):
    report = open(os.path.join(FIX, name + "-report.bin"), "rb").read()
    tcb = struct.unpack_from("<Q", report, 0x180)[0].to_bytes(8, "little")
    chip = report[0x1A0:0x1A0 + 64]
    if product == "Turin":
        chip = chip[:8]
        spl = "bl%d-tee%d-snp%d-ucode%d-fmc%d" % (tcb[1], tcb[2], tcb[3], tcb[7], tcb[0])
    else:
        spl = "bl%d-tee%d-snp%d-ucode%d" % (tcb[0], tcb[1], tcb[6], tcb[7])
    FILES["/vcek/v1/%s/%s/%s.der" % (product, chip.hex(), spl)] = os.path.join(FIX, name + "-vcek.der")
    FILES["/vcek/v1/%s/cert_chain" % product] = os.path.join(FIX, "ask_ark_%s.pem" % name.rstrip("2"))

COUNTS = {}
LOCK = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, *args):
        pass

    def answer(self, status, body=b"", headers=()):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        with LOCK:
            COUNTS[self.path] = COUNTS.get(self.path, 0) + 1
            n = COUNTS[self.path]
            print("GET " + self.path, flush=True)
        parts = self.path.split("/", 2)
        mode, rel = (parts[1], "/" + parts[2]) if len(parts) == 3 else ("", self.path)
        if rel not in FILES:
            return self.answer(404, b"Not Found")
        body = open(FILES[rel], "rb").read()
        if mode == "ok" or (mode == "429x2" and n > 2):
            return self.answer(200, body)
        if mode in ("429x2", "429long"):
            return self.answer(429, b"", [("Retry-After", "1" if mode == "429x2" else "3600")])
        if mode == "503":
            return self.answer(503)
        if mode == "garbage":
            return self.answer(200, b"<html>this is not a certificate</html>")
        if mode == "truncated":
            return self.answer(200, body[: len(body) // 2])
        if mode == "short":
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[:10])
            return
        if mode == "slow":
            time.sleep(30)
            return self.answer(200, body)
        return self.answer(400, b"unknown mode")


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
if len(sys.argv) == 4:
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(sys.argv[2], sys.argv[3])
    server.socket = tls.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
