#!/usr/bin/env python3
"""Run `nopescope bench` and the PyTorch twin (bench_torch.py) one after the
other on this machine and print a markdown table of both, for docs/BENCH.md.

Usage (from the repository root, with a venv holding torch):
  .venv/bin/python tests/reference/side_by_side.py [--long] [--out FILE.json]
Runs the Rust bench first, then PyTorch; nothing else should run meanwhile.
"""
import argparse, datetime, json, platform, subprocess, sys


def run_json(cmd):
    print("$", " ".join(cmd), file=sys.stderr, flush=True)
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--long", action="store_true", help="also the Rust forwards at 32768 and 65536")
    ap.add_argument("--out", help="write both JSON objects here")
    args = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "--quiet"], check=True)
    rust = run_json(["target/release/nopescope", "bench", "--backend", "cpu", "--json"] + (["--long"] if args.long else []))
    torch = run_json([sys.executable, "tests/reference/bench_torch.py", "--json"])
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.machine())
    print(f"Machine: {cpu}, {torch.get('threads')} threads; date {datetime.date.today()}; torch {torch.get('torch_version')}\n")
    rows = [
        ("forward tokens/s, T=1024 (logits)", "forward_tokens_per_s_t1024", "forward_tokens_per_s_t1024", "{:.0f}"),
        ("forward seconds, T=16384, no entropy", None, "forward_seconds_t16384", "{:.2f}"),
        ("forward + entropy seconds, T=16384", "entropy_forward_seconds_t16384", "entropy_forward_seconds_t16384", "{:.2f}"),
        ("forward + entropy peak RSS (MB), T=16384", "entropy_forward_peak_rss_bytes_t16384", "entropy_forward_peak_rss_bytes_t16384", "MB"),
        ("forward + entropy seconds, T=8192", None, "entropy_forward_seconds_t8192", "{:.2f}"),
        ("training step tokens/s, T=256", "train_tokens_per_s_t256", "train_tokens_per_s_t256", "{:.0f}"),
        ("head-scale step tokens/s, T=256", "scale_only_tokens_per_s_t256", "scale_only_tokens_per_s_t256", "{:.0f}"),
    ]

    def fmt(obj, key, f):
        if key is None or obj.get(key) is None:
            return "-"
        v = obj[key]
        return f"{v / 1e6:.0f}" if f == "MB" else f.format(v)

    print("| measurement | nopescope (CPU engine) | PyTorch eager |")
    print("|---|---:|---:|")
    for name, rk, tk, f in rows:
        print(f"| {name} | {fmt(rust, rk, f)} | {fmt(torch, tk, f)} |")
    for r in rust.get("long_entropy_forward", []):
        print(f"| nopescope forward + entropy, T={r['length']} | {r['seconds']:.2f} s, {r['peak_rss_bytes'] / 1e6:.0f} MB | - |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"nopescope": rust, "pytorch": torch}, f, indent=1)


if __name__ == "__main__":
    main()
