#!/usr/bin/env python3
"""Writes a cove computation manifest (cocos's JSON shape) for local files.

usage: make-manifest.py ID ALGO ALGO_TYPE ALGO_KEY.pub CONSUMER.pub \
           [DATASET DATASET_KEY.pub]... [--arg ARG]... [--timeout SECONDS]
Hashes are SHA3-256 of the plaintext (hex); keys are base64 DER SPKI.
"""
import base64
import hashlib
import json
import sys


def spki_b64(pub_pem_path):
    text = open(pub_pem_path).read()
    body = "".join(l for l in text.splitlines() if l and not l.startswith("-----"))
    base64.b64decode(body, validate=True)
    return body


def sha3(path):
    h = hashlib.sha3_256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def main(argv):
    args, timeout, rest = [], None, []
    i = 0
    while i < len(argv):
        if argv[i] == "--arg":
            args.append(argv[i + 1]); i += 2
        elif argv[i] == "--timeout":
            timeout = int(argv[i + 1]); i += 2
        else:
            rest.append(argv[i]); i += 1
    if len(rest) < 5 or (len(rest) - 5) % 2:
        sys.exit(__doc__)
    cid, algo, algo_type, algo_key, consumer = rest[:5]
    datasets = [{"filename": rest[j].rsplit("/", 1)[-1], "hash": sha3(rest[j]), "user_key": spki_b64(rest[j + 1])}
                for j in range(5, len(rest), 2)]
    manifest = {
        "id": cid,
        "name": "linear regression across hospitals",
        "description": "fits y = a + b*x on the union of the datasets; nobody sees the others' rows",
        "datasets": datasets,
        "algorithm": {"hash": sha3(algo), "user_key": spki_b64(algo_key), "algo_type": algo_type, "algo_args": args},
        "result_consumers": [{"user_key": spki_b64(consumer)}],
    }
    if timeout:
        manifest["timeout_seconds"] = timeout
    json.dump(manifest, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main(sys.argv[1:])
