#!/usr/bin/env python3
"""PyTorch (eager, float32; CPU or CUDA) reference timings for `nopescope bench`.

Times the same work as src/lab/bench.rs on the same bench model shape
(random weights): Llama-style NoPE decoder, vocab 4096, hidden 192, 6 layers,
6 heads (head dim 32), SwiGLU 512, RMSNorm eps 1e-5, untied lm_head, a
per-(layer, head) attention scale s_h (logits scaled by s_h / sqrt(32)).

Measurements (field names match the JSON printed with --json):
  forward_tokens_per_s_t1024     SDPA forward with logits, T=1024
  forward_seconds_t16384         SDPA forward with logits, T=16384
  entropy_forward_seconds_t8192 / _t16384
  entropy_forward_peak_rss_bytes_t8192 / _t16384
                                 forward that materializes every head's
                                 attention matrix to get per-head
                                 per-position entropy in bits (no logits, as
                                 in the Rust bench); each runs in a child
                                 process under a 16 GiB address-space limit
  train_tokens_per_s_t256        full training step, one sequence of 256
  scale_only_tokens_per_s_t256   frozen weights, only head scales trained

With --device cuda the model and inputs live on the GPU, every timing is
bracketed by torch.cuda.synchronize(), matrix products stay full f32 (TF32
off, as PyTorch defaults), and:
  - the entropy forwards run in this process (CUDA does not work under the
    address-space limit), one untimed warm-up at the same length, then the
    median of 3; entropy_forward_first_seconds_t* is the cold first call;
    entropy_forward_peak_gpu_bytes_t* is torch.cuda.max_memory_allocated()
    over the timed calls (model included); the *_peak_rss_bytes_* fields
    stay null
  - the forwards with logits get 3 warm-ups, then the median of 21 (T=1024)
    or 1 warm-up and the median of 3 (T=16384)
  - training and head-scale steps are as on the CPU (2 warm-up steps, median
    of 10)

Usage:
  python tests/reference/bench_torch.py [--json] [--quick] [--device cpu|cuda]
    --json    print one JSON object on stdout (the table always goes to stderr)
    --quick   skip the T=16384 runs
    --device  cpu (default) or cuda
"""

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

VOCAB = 4096
HIDDEN = 192
LAYERS = 6
HEADS = 6
HEAD_DIM = 32
FFN = 512
EPS = 1e-5
INIT_STD = 0.02
THREADS = 2

GIB = 1 << 30
CHILD_AS_LIMIT = 16 * GIB  # address-space limit of each entropy child
PARENT_AS_SOFT_LIMIT = 8 * GIB  # soft only, so children may raise theirs
OOM_REASON = "out of memory under a 16 GiB limit"

DEVICE = "cpu"  # set from --device in main()


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def peak_rss_bytes():
    """VmHWM of this process (peak resident set), in bytes, or None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


# ---------------------------------------------------------------------------
# model (torch is imported lazily so a child can set its rlimit first)


def setup_torch():
    import torch

    torch.set_num_threads(THREADS)
    return torch


def sync(torch):
    """Waits for queued GPU work (no-op on the CPU), so timings are whole."""
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def build_model(torch, seed=0):
    nn = torch.nn

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn_norm = nn.Parameter(torch.ones(HIDDEN))
            self.wq = nn.Parameter(torch.empty(HEADS * HEAD_DIM, HIDDEN))
            self.wk = nn.Parameter(torch.empty(HEADS * HEAD_DIM, HIDDEN))
            self.wv = nn.Parameter(torch.empty(HEADS * HEAD_DIM, HIDDEN))
            self.wo = nn.Parameter(torch.empty(HIDDEN, HEADS * HEAD_DIM))
            self.mlp_norm = nn.Parameter(torch.ones(HIDDEN))
            self.wg = nn.Parameter(torch.empty(FFN, HIDDEN))
            self.wu = nn.Parameter(torch.empty(FFN, HIDDEN))
            self.wd = nn.Parameter(torch.empty(HIDDEN, FFN))

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Parameter(torch.empty(VOCAB, HIDDEN))
            self.layers = nn.ModuleList([Layer() for _ in range(LAYERS)])
            self.final_norm = nn.Parameter(torch.ones(HIDDEN))
            self.lm_head = nn.Parameter(torch.empty(VOCAB, HIDDEN))
            self.head_scales = nn.Parameter(torch.ones(LAYERS, HEADS))

    gen = torch.Generator().manual_seed(seed)
    model = Model()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2 and name != "head_scales":
                p.normal_(0.0, INIT_STD, generator=gen)
    # Initialised on the CPU generator, so both devices get the same weights.
    return model.to(DEVICE)


def random_tokens(torch, gen, n):
    return torch.randint(0, VOCAB, (n,), generator=gen).to(DEVICE)


def mlp(torch, layer, x):
    F = torch.nn.functional
    h = F.rms_norm(x, (HIDDEN,), layer.mlp_norm, EPS)
    return F.linear(F.silu(F.linear(h, layer.wg)) * F.linear(h, layer.wu), layer.wd)


def qkv(torch, layer, x):
    """(H, T, hd) each, from x (T, HIDDEN)."""
    F = torch.nn.functional
    T = x.shape[0]
    h = F.rms_norm(x, (HIDDEN,), layer.attn_norm, EPS)
    q = F.linear(h, layer.wq).view(T, HEADS, HEAD_DIM).transpose(0, 1)
    k = F.linear(h, layer.wk).view(T, HEADS, HEAD_DIM).transpose(0, 1)
    v = F.linear(h, layer.wv).view(T, HEADS, HEAD_DIM).transpose(0, 1)
    return q, k, v


def forward_sdpa(torch, model, tokens):
    """Logits (T, VOCAB) with fused causal attention (SDPA)."""
    F = torch.nn.functional
    T = tokens.shape[0]
    x = model.embed[tokens]
    for li, layer in enumerate(model.layers):
        q, k, v = qkv(torch, layer, x)
        # head scale: multiply q by s_h; SDPA applies 1/sqrt(hd)
        q = q * model.head_scales[li].view(HEADS, 1, 1)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + F.linear(a.transpose(0, 1).reshape(T, HEADS * HEAD_DIM), layer.wo)
        x = x + mlp(torch, layer, x)
    x = F.rms_norm(x, (HIDDEN,), model.final_norm, EPS)
    return F.linear(x, model.lm_head)


def forward_entropy(torch, model, tokens):
    """Per-head per-position attention entropy in bits, (LAYERS, HEADS, T).

    Materializes every head's (T, T) attention matrix: scores, causal mask
    (in place), softmax, entropy via xlogy, then p @ v. No logits are made,
    as in the Rust bench's entropy forward.
    """
    F = torch.nn.functional
    T = tokens.shape[0]
    ln2 = 0.6931471805599453
    future = torch.ones(T, T, dtype=torch.bool, device=tokens.device).triu_(1)
    ent = torch.empty(LAYERS, HEADS, T, device=tokens.device)
    x = model.embed[tokens]
    for li, layer in enumerate(model.layers):
        q, k, v = qkv(torch, layer, x)
        scale = (model.head_scales[li] / HEAD_DIM**0.5).view(HEADS, 1, 1)
        scores = torch.matmul(q * scale, k.transpose(1, 2))  # (H, T, T)
        scores.masked_fill_(future, float("-inf"))
        p = torch.softmax(scores, dim=-1)
        del scores
        ent[li] = torch.special.xlogy(p, p).sum(dim=-1).mul_(-1.0 / ln2)
        a = torch.matmul(p, v)  # (H, T, hd)
        del p
        x = x + F.linear(a.transpose(0, 1).reshape(T, HEADS * HEAD_DIM), layer.wo)
        x = x + mlp(torch, layer, x)
    return ent


# ---------------------------------------------------------------------------
# entropy child process


def entropy_child(length):
    """Runs in a fresh process: limit address space, time one entropy forward,
    print one JSON line on stdout."""
    resource.setrlimit(resource.RLIMIT_AS, (CHILD_AS_LIMIT, CHILD_AS_LIMIT))
    result = {"length": length, "seconds": None, "peak_rss_bytes": None, "error": None}
    try:
        torch = setup_torch()
        model = build_model(torch)
        gen = torch.Generator().manual_seed(1000 + length)
        tokens = random_tokens(torch, gen, length)
        with torch.inference_mode():
            t0 = time.perf_counter()
            ent = forward_entropy(torch, model, tokens)
            seconds = time.perf_counter() - t0
        if not bool(torch.isfinite(ent).all()):
            raise RuntimeError("non-finite entropy")
        result["seconds"] = seconds
        result["peak_rss_bytes"] = peak_rss_bytes()
    except MemoryError as e:
        result["error"] = "MemoryError: %s" % (str(e)[:200],)
    except RuntimeError as e:
        result["error"] = "RuntimeError: %s" % (str(e).splitlines()[0][:300] if str(e) else "",)
    print(json.dumps(result), flush=True)


def is_oom_text(text):
    t = text.lower()
    return any(
        s in t
        for s in ("memoryerror", "can't allocate memory", "cannot allocate memory", "out of memory", "bad_alloc", "std::bad_alloc")
    )


def run_entropy_child(length, timeout_s):
    cmd = [sys.executable, os.path.abspath(__file__), "--entropy-child", str(length)]
    log("forward + entropy, T=%d: child process, %d GiB address-space limit ..." % (length, CHILD_AS_LIMIT // GIB))
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return None, None, "timed out after %d s" % timeout_s
    wall = time.perf_counter() - t0
    result = None
    for line in proc.stdout.splitlines()[::-1]:
        line = line.strip()
        if line.startswith("{"):
            try:
                result = json.loads(line)
                break
            except ValueError:
                pass
    if result is not None and result.get("seconds") is not None:
        return result["seconds"], result.get("peak_rss_bytes"), None
    err = (result or {}).get("error") or ""
    text = err + "\n" + proc.stderr
    if is_oom_text(text):
        reason = OOM_REASON
    elif proc.returncode < 0:
        reason = "child killed by signal %d after %.1f s" % (-proc.returncode, wall)
    else:
        last = (err or proc.stderr.strip().splitlines()[-1:] or ["no output"])
        reason = "child failed (exit %d): %s" % (proc.returncode, last if isinstance(last, str) else last[0])
    log("  child stderr tail: %s" % proc.stderr.strip()[-400:].replace("\n", " | "))
    return None, None, reason


def time_entropy_in_process(torch, model, length, reps=3):
    """Entropy forward in this process (the CUDA path): one untimed warm-up
    at the same length, then the median of `reps`. Returns (median seconds,
    first-call seconds, peak GPU bytes over the timed calls or None, reason)."""
    gen = torch.Generator().manual_seed(1000 + length)
    tokens = random_tokens(torch, gen, length)
    log("forward + entropy, T=%d: in process on %s ..." % (length, DEVICE))
    try:
        with torch.inference_mode():
            sync(torch)
            t0 = time.perf_counter()
            ent = forward_entropy(torch, model, tokens)
            sync(torch)
            first = time.perf_counter() - t0
            del ent
            if DEVICE == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            times = []
            for _ in range(reps):
                sync(torch)
                t0 = time.perf_counter()
                ent = forward_entropy(torch, model, tokens)
                sync(torch)
                times.append(time.perf_counter() - t0)
                finite = bool(torch.isfinite(ent).all())
                del ent
                if not finite:
                    raise RuntimeError("non-finite entropy")
        peak = torch.cuda.max_memory_allocated() if DEVICE == "cuda" else None
        return statistics.median(times), first, peak, None
    except (MemoryError, RuntimeError) as e:  # torch.cuda.OutOfMemoryError is a RuntimeError
        text = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
        if DEVICE == "cuda":
            torch.cuda.empty_cache()
        reason = ("out of memory: " if is_oom_text(text) else "failed: ") + text
        return None, None, None, reason


# ---------------------------------------------------------------------------
# timed parts in the main process


def time_forward(torch, model, gen, length, reps, slow_s=None):
    tokens = random_tokens(torch, gen, length)
    times = []
    with torch.inference_mode():
        for _ in range(reps):
            sync(torch)
            t0 = time.perf_counter()
            logits = forward_sdpa(torch, model, tokens)
            sync(torch)
            times.append(time.perf_counter() - t0)
            assert logits.shape == (length, VOCAB)
            del logits
            if slow_s is not None and times[-1] > slow_s:
                break
    return statistics.median(times), len(times)


def train_loss(torch, model, tokens):
    logits = forward_sdpa(torch, model, tokens)
    return torch.nn.functional.cross_entropy(logits[:-1], tokens[1:])


def time_train(torch, model, gen, length=256, steps=12, warmup=2):
    """Full step: forward, mean next-token CE, backward for every weight
    (and the head scales), clip to 1.0, AdamW, zero_grad."""
    params = [p for p in model.parameters()]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
    times = []
    for step in range(steps):
        tokens = random_tokens(torch, gen, length)
        sync(torch)
        t0 = time.perf_counter()
        loss = train_loss(torch, model, tokens)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(torch)
        dt = time.perf_counter() - t0
        if not torch.isfinite(loss):
            raise RuntimeError("non-finite training loss")
        if step >= warmup:
            times.append(dt)
    return statistics.median(times), len(times)


def time_scale_only(torch, model, gen, length=256, steps=12, warmup=2):
    """Frozen weights; only the (LAYERS, HEADS) head scales get gradients and
    their own AdamW (as in the Rust bench: start at 1.6, no weight decay,
    clip 1.0, clamp s >= 1 after the step)."""
    for p in model.parameters():
        p.requires_grad_(False)
    hs = model.head_scales
    with torch.no_grad():
        hs.fill_(1.6)
    hs.requires_grad_(True)
    opt = torch.optim.AdamW([hs], lr=0.1, betas=(0.9, 0.95), weight_decay=0.0)
    times = []
    for step in range(steps):
        tokens = random_tokens(torch, gen, length)
        sync(torch)
        t0 = time.perf_counter()
        loss = train_loss(torch, model, tokens)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([hs], 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            hs.clamp_(min=1.0)
        sync(torch)
        dt = time.perf_counter() - t0
        if not torch.isfinite(loss):
            raise RuntimeError("non-finite training loss")
        if step >= warmup:
            times.append(dt)
    return statistics.median(times), len(times)


def fmt_bytes(b):
    return "n/a" if b is None else "%.0f MB" % (b / 1e6)


def fmt(v, spec):
    return "n/a" if v is None else format(v, spec)


def table(r):
    sec = ".4f" if r.get("device") == "cuda" else ".2f"
    rows = [
        ("forward tokens/s, T=1024 (SDPA)", fmt(r["forward_tokens_per_s_t1024"], ".0f")),
        ("forward seconds, T=16384 (SDPA)", fmt(r["forward_seconds_t16384"], sec)),
        ("forward + entropy seconds, T=8192", fmt(r["entropy_forward_seconds_t8192"], sec)),
        ("forward + entropy peak RSS, T=8192", fmt_bytes(r["entropy_forward_peak_rss_bytes_t8192"])),
        ("forward + entropy peak GPU memory, T=8192", fmt_bytes(r.get("entropy_forward_peak_gpu_bytes_t8192"))),
        ("forward + entropy seconds, T=16384", fmt(r["entropy_forward_seconds_t16384"], sec)),
        ("forward + entropy peak RSS, T=16384", fmt_bytes(r["entropy_forward_peak_rss_bytes_t16384"])),
        ("forward + entropy peak GPU memory, T=16384", fmt_bytes(r.get("entropy_forward_peak_gpu_bytes_t16384"))),
        ("training step tokens/s, T=256", fmt(r["train_tokens_per_s_t256"], ".0f")),
        ("head-scale step tokens/s, T=256", fmt(r["scale_only_tokens_per_s_t256"], ".0f")),
    ]
    s = "backend: %s\n" % r["backend"]
    s += "%-44s %14s\n" % ("measurement", "value")
    for name, val in rows:
        s += "%-44s %14s\n" % (name, val)
    for key in ("entropy_forward_t8192_reason", "entropy_forward_t16384_reason"):
        if r.get(key):
            s += "note: %s: %s\n" % (key, r[key])
    for key in ("entropy_forward_first_seconds_t8192", "entropy_forward_first_seconds_t16384"):
        if r.get(key) is not None:
            s += "note: %s: %.4f\n" % (key, r[key])
    if r.get("skipped"):
        s += "skipped: %s\n" % ", ".join(r["skipped"])
    return s


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    ap.add_argument("--quick", action="store_true", help="skip the T=16384 runs")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where the model runs (default cpu)")
    ap.add_argument("--entropy-child", type=int, metavar="T", help=argparse.SUPPRESS)
    ap.add_argument("--child-timeout", type=int, default=1800, help="seconds per entropy child (default 1800)")
    args = ap.parse_args()

    if args.entropy_child:
        entropy_child(args.entropy_child)
        return

    global DEVICE
    DEVICE = args.device
    cuda = DEVICE == "cuda"

    # Guard this process too (soft limit only, so the children can set 16 GiB).
    # Not on CUDA: its driver reserves far more address space than that.
    if not cuda:
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard == resource.RLIM_INFINITY or hard > PARENT_AS_SOFT_LIMIT:
            resource.setrlimit(resource.RLIMIT_AS, (PARENT_AS_SOFT_LIMIT, hard))

    started = time.perf_counter()
    torch = setup_torch()
    if cuda and not torch.cuda.is_available():
        log("--device cuda: torch %s sees no CUDA device" % torch.__version__)
        sys.exit(2)
    r = {
        "backend": "pytorch-cuda-eager-f32" if cuda else "pytorch-cpu-eager-f32",
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_model": cpu_model(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python_version": platform.python_version(),
        "quick": bool(args.quick),
        "device": DEVICE,
        "forward_tokens_per_s_t1024": None,
        "forward_seconds_t16384": None,
        "entropy_forward_seconds_t8192": None,
        "entropy_forward_peak_rss_bytes_t8192": None,
        "entropy_forward_t8192_reason": None,
        "entropy_forward_seconds_t16384": None,
        "entropy_forward_peak_rss_bytes_t16384": None,
        "entropy_forward_t16384_reason": None,
        "entropy_forward_peak_gpu_bytes_t8192": None,
        "entropy_forward_peak_gpu_bytes_t16384": None,
        "train_tokens_per_s_t256": None,
        "scale_only_tokens_per_s_t256": None,
        "skipped": [],
    }
    if cuda:
        props = torch.cuda.get_device_properties(0)
        r["gpu_name"] = props.name
        r["gpu_memory_bytes"] = props.total_memory
        r["cuda_version"] = torch.version.cuda
        r["tf32_matmul"] = bool(torch.backends.cuda.matmul.allow_tf32)
        log("torch %s, CUDA %s, %s, TF32 matmul %s" % (r["torch_version"], r["cuda_version"], r["gpu_name"], r["tf32_matmul"]))
    else:
        log("torch %s, %d threads, %s" % (r["torch_version"], r["threads"], r["cpu_model"]))

    lengths = [8192] if args.quick else [8192, 16384]
    if cuda:
        # Entropy forwards in this process (no address-space limit on CUDA).
        model = build_model(torch)
        for length in lengths:
            sec, first, peak, reason = time_entropy_in_process(torch, model, length)
            r["entropy_forward_seconds_t%d" % length] = sec
            r["entropy_forward_first_seconds_t%d" % length] = first
            r["entropy_forward_peak_gpu_bytes_t%d" % length] = peak
            r["entropy_forward_t%d_reason" % length] = reason
            if reason:
                log("forward + entropy, T=%d: %s" % (length, reason))
            else:
                log(
                    "forward + entropy, T=%d: %.4f s (median of 3; first call %.4f s), peak GPU memory %s"
                    % (length, sec, first, fmt_bytes(peak))
                )
        del model
        torch.cuda.empty_cache()
    else:
        # Entropy forwards first, each in its own limited child process.
        for length in lengths:
            sec, rss, reason = run_entropy_child(length, args.child_timeout)
            r["entropy_forward_seconds_t%d" % length] = sec
            r["entropy_forward_peak_rss_bytes_t%d" % length] = rss
            r["entropy_forward_t%d_reason" % length] = reason
            if reason:
                log("forward + entropy, T=%d: failed: %s" % (length, reason))
            else:
                log("forward + entropy, T=%d: %.2f s, peak RSS %s" % (length, sec, fmt_bytes(rss)))
    if args.quick:
        r["skipped"] += ["forward_seconds_t16384", "entropy_forward_t16384"]
        r["entropy_forward_t16384_reason"] = "skipped (--quick)"

    model = build_model(torch)
    gen = torch.Generator().manual_seed(2024)

    # Forward with logits, T=1024: one warm-up, median of 7 (CUDA: 3 and 21).
    time_forward(torch, model, gen, 1024, 3 if cuda else 1)
    sec, n = time_forward(torch, model, gen, 1024, 21 if cuda else 7)
    r["forward_tokens_per_s_t1024"] = 1024 / sec
    log("forward (logits, SDPA), T=1024: %.0f tokens/s (median of %d)" % (r["forward_tokens_per_s_t1024"], n))

    if not args.quick:
        if cuda:
            time_forward(torch, model, gen, 16384, 1)  # warm-up
        sec, n = time_forward(torch, model, gen, 16384, 3, slow_s=60.0)
        r["forward_seconds_t16384"] = sec
        log("forward (logits, SDPA), T=16384: %.2f s (median of %d)" % (sec, n))

    sec, n = time_train(torch, model, gen)
    r["train_tokens_per_s_t256"] = 256 / sec
    log("training step, T=256: %.0f tokens/s (median of %d)" % (r["train_tokens_per_s_t256"], n))

    sec, n = time_scale_only(torch, model, gen)
    r["scale_only_tokens_per_s_t256"] = 256 / sec
    log("head-scale step, T=256: %.0f tokens/s (median of %d)" % (r["scale_only_tokens_per_s_t256"], n))

    r["total_seconds"] = round(time.perf_counter() - started, 1)
    r["main_peak_rss_bytes"] = peak_rss_bytes()
    if cuda:
        r["main_peak_gpu_bytes"] = torch.cuda.max_memory_allocated()
    log("")
    log(table(r).rstrip())
    if args.json:
        print(json.dumps(r, indent=2))


if __name__ == "__main__":
    main()
