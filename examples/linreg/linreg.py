#!/usr/bin/env python3
"""Ordinary least squares on every CSV in datasets/: fits y = a + b*x.

cove runs this inside the CVM with the working directory holding datasets/
and results/. Only the standard library is used (the EOS image has no pip).
"""
import csv
import json
import os
import sys


def fit(rows):
    n = len(rows)
    if n < 2:
        raise ValueError("need at least two rows")
    sx = sum(x for x, _ in rows)
    sy = sum(y for _, y in rows)
    sxx = sum(x * x for x, _ in rows)
    sxy = sum(x * y for x, y in rows)
    den = n * sxx - sx * sx
    if den == 0:
        raise ValueError("x has no variance")
    slope = (n * sxy - sx * sy) / den
    intercept = (sy - slope * sx) / n
    mean_y = sy / n
    ss_tot = sum((y - mean_y) ** 2 for _, y in rows)
    ss_res = sum((y - (intercept + slope * x)) ** 2 for x, y in rows)
    r2 = 1.0 - ss_res / ss_tot if ss_tot else 1.0
    return {"n": n, "intercept": intercept, "slope": slope, "r2": r2}


def main():
    rows = []
    for name in sorted(os.listdir("datasets")):
        with open(os.path.join("datasets", name), newline="") as f:
            for rec in csv.DictReader(f):
                rows.append((float(rec["x"]), float(rec["y"])))
    model = fit(rows)
    if len(sys.argv) > 1:
        model["label"] = sys.argv[1]
    os.makedirs("results", exist_ok=True)
    with open(os.path.join("results", "model.json"), "w") as f:
        json.dump(model, f, indent=2, sort_keys=True)
        f.write("\n")
    print("fitted", model)


if __name__ == "__main__":
    main()
