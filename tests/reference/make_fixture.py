#!/usr/bin/env python3
"""Write the reference fixtures used by the Rust tests.

Builds a tiny Llama-style decoder (random weights, fixed seeds) in two
variants, NoPE (no position encoding) and RoPE, and writes for each:

  tests/fixtures/tiny-<variant>/config.json
  tests/fixtures/tiny-<variant>/model.safetensors     float32 weights, HF Llama names
  tests/fixtures/tiny-<variant>/head_scales.json      per-(layer, head) attention scales
  tests/fixtures/tiny-<variant>/expected.safetensors  float64 reference outputs

Weights are created in float32 (that is what is saved) and every computation
runs in float64 on the float32 values, so the reference is an exact function
of the saved weights.

Run from the repository root:
  python tests/reference/make_fixture.py
"""

import json
import math
import struct
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

# ---------------------------------------------------------------------------
# Sizes and settings
# ---------------------------------------------------------------------------
N_LAYERS = 2  # L
N_HEADS = 4  # H
N_KV_HEADS = 2  # KV
HIDDEN = 64  # C
HEAD_DIM = HIDDEN // N_HEADS  # hd = 16
INTERMEDIATE = 96  # F
VOCAB = 97  # V
SEQ_LEN = 37  # T
RMS_EPS = 1e-5
ROPE_THETA = 10000.0

MATRIX_STD = 0.15  # std of every weight matrix
NORM_STD = 0.1  # norm weights are 1 + N(0, NORM_STD^2)
HEAD_SCALE_RANGE = (0.5, 2.0)  # head scales uniform in this range

WEIGHT_SEED = 1234  # same weights for both variants
TOKEN_SEED = 5678
HEAD_SCALE_SEED = 91011

# AdamW settings for the short training trajectory.
ADAMW_STEPS = 3
ADAMW_LR = 0.01
ADAMW_BETAS = (0.9, 0.95)
ADAMW_EPS = 1e-8
ADAMW_WEIGHT_DECAY = 0.1  # 2-D matrices only; norm weights get 0
ADAMW_CLIP_NORM = 1.0

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = REPO_ROOT / "tests" / "fixtures"


# ---------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------
def weight_shapes():
    """Ordered list of (HF name, shape) for every weight tensor."""
    C, F_, V = HIDDEN, INTERMEDIATE, VOCAB
    q_out = N_HEADS * HEAD_DIM  # H*hd
    kv_out = N_KV_HEADS * HEAD_DIM  # KV*hd
    shapes = [("model.embed_tokens.weight", (V, C))]
    for layer in range(N_LAYERS):
        p = f"model.layers.{layer}."
        shapes += [
            (p + "input_layernorm.weight", (C,)),
            (p + "self_attn.q_proj.weight", (q_out, C)),
            (p + "self_attn.k_proj.weight", (kv_out, C)),
            (p + "self_attn.v_proj.weight", (kv_out, C)),
            (p + "self_attn.o_proj.weight", (C, q_out)),
            (p + "post_attention_layernorm.weight", (C,)),
            (p + "mlp.gate_proj.weight", (F_, C)),
            (p + "mlp.up_proj.weight", (F_, C)),
            (p + "mlp.down_proj.weight", (C, F_)),
        ]
    shapes += [("model.norm.weight", (C,)), ("lm_head.weight", (V, C))]
    return shapes


def make_weights():
    """Random float32 weights: matrices N(0, 0.15^2), norms 1 + N(0, 0.1^2)."""
    gen = torch.Generator().manual_seed(WEIGHT_SEED)
    weights = {}
    for name, shape in weight_shapes():
        noise = torch.randn(shape, generator=gen, dtype=torch.float32)
        if len(shape) == 1:  # RMSNorm weight, shape (C,)
            weights[name] = 1.0 + NORM_STD * noise
        else:  # nn.Linear / embedding weight, shape (out, in)
            weights[name] = MATRIX_STD * noise
    return weights


def make_head_scales():
    """(L, H) float32 head scales, uniform in HEAD_SCALE_RANGE."""
    gen = torch.Generator().manual_seed(HEAD_SCALE_SEED)
    lo, hi = HEAD_SCALE_RANGE
    u = torch.rand((N_LAYERS, N_HEADS), generator=gen, dtype=torch.float32)
    return lo + (hi - lo) * u


def make_tokens():
    """(T,) int64 tokens uniform in [0, V)."""
    gen = torch.Generator().manual_seed(TOKEN_SEED)
    return torch.randint(0, VOCAB, (SEQ_LEN,), generator=gen, dtype=torch.int64)


# ---------------------------------------------------------------------------
# Model (float64, functional: params is a dict name -> tensor)
# ---------------------------------------------------------------------------
def rmsnorm(x, w):
    """x: (T, C), w: (C,) -> x / sqrt(mean(x^2) + eps) * w."""
    return x / torch.sqrt((x * x).mean(dim=-1, keepdim=True) + RMS_EPS) * w


def rope_cos_sin(T, hd, dtype):
    """cos, sin of shape (T, hd), HF layout (the hd/2 angles repeated twice)."""
    i = torch.arange(hd // 2, dtype=dtype)  # (hd/2,)
    inv_freq = ROPE_THETA ** (-2.0 * i / hd)  # (hd/2,)
    pos = torch.arange(T, dtype=dtype)  # (T,)
    angle = pos[:, None] * inv_freq[None, :]  # (T, hd/2)
    angle = torch.cat([angle, angle], dim=-1)  # (T, hd)
    return angle.cos(), angle.sin()


def apply_rope(x, cos, sin):
    """x: (N, T, hd). HF rotate_half: cat(x1*cos - x2*sin, x2*cos + x1*sin)."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    rotated = torch.cat([-x2, x1], dim=-1)  # rotate_half(x)
    return x * cos + rotated * sin


def forward(params, head_scales, tokens, use_rope, rule=None, loss_weights=None):
    """Returns logits (T, V), loss (scalar), entropy_bits (L, H, T).

    params: dict of float64 tensors; head_scales: (L, H) float64;
    tokens: (T,) int64; rule: None or (T,) float64 factors r(i) (the query
    at position i uses s_h * r(i)); loss_weights: None or (T-1,) float64,
    the loss then being sum w l / sum w.
    """
    T = tokens.shape[0]
    H, KV, hd = N_HEADS, N_KV_HEADS, HEAD_DIM
    group = H // KV  # query heads per KV head
    dtype = params["model.embed_tokens.weight"].dtype

    x = params["model.embed_tokens.weight"][tokens]  # (T, C)
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))  # (T, T), j <= i
    if use_rope:
        cos, sin = rope_cos_sin(T, hd, dtype)  # (T, hd) each

    entropies = []
    for layer in range(N_LAYERS):
        p = f"model.layers.{layer}."
        # --- attention ---
        xn = rmsnorm(x, params[p + "input_layernorm.weight"])  # (T, C)
        q = xn @ params[p + "self_attn.q_proj.weight"].T  # (T, H*hd)
        k = xn @ params[p + "self_attn.k_proj.weight"].T  # (T, KV*hd)
        v = xn @ params[p + "self_attn.v_proj.weight"].T  # (T, KV*hd)
        q = q.view(T, H, hd).transpose(0, 1)  # (H, T, hd)
        k = k.view(T, KV, hd).transpose(0, 1)  # (KV, T, hd)
        v = v.view(T, KV, hd).transpose(0, 1)  # (KV, T, hd)
        if use_rope:
            q = apply_rope(q, cos, sin)
            k = apply_rope(k, cos, sin)
        # Grouped-query attention: query head h uses KV head h // group.
        k = k.repeat_interleave(group, dim=0)  # (H, T, hd)
        v = v.repeat_interleave(group, dim=0)  # (H, T, hd)

        scale = head_scales[layer].view(H, 1, 1) / math.sqrt(hd)  # (H, 1, 1)
        if rule is not None:
            scale = scale * rule.view(1, T, 1)  # (H, T, 1): per query row
        scores = scale * (q @ k.transpose(1, 2))  # (H, T, T)
        scores = scores.masked_fill(~causal, float("-inf"))
        a = torch.softmax(scores, dim=-1)  # (H, T, T), zero where j > i

        # Entropy in bits, skipping a_ij == 0 terms: (H, T).
        with torch.no_grad():
            safe = torch.where(a > 0, a, torch.ones_like(a))
            entropies.append(0.0 - (a * torch.log2(safe)).sum(dim=-1))  # 0.0 - x: no -0.0

        o = a @ v  # (H, T, hd)
        att = o.transpose(0, 1).reshape(T, H * hd)  # (T, H*hd)
        x = x + att @ params[p + "self_attn.o_proj.weight"].T  # (T, C)

        # --- SwiGLU MLP ---
        xn2 = rmsnorm(x, params[p + "post_attention_layernorm.weight"])  # (T, C)
        gate = xn2 @ params[p + "mlp.gate_proj.weight"].T  # (T, F)
        up = xn2 @ params[p + "mlp.up_proj.weight"].T  # (T, F)
        x = x + (F.silu(gate) * up) @ params[p + "mlp.down_proj.weight"].T  # (T, C)

    xf = rmsnorm(x, params["model.norm.weight"])  # (T, C)
    logits = xf @ params["lm_head.weight"].T  # (T, V)
    # Mean next-token cross-entropy over the T-1 predictions.
    if loss_weights is None:
        loss = F.cross_entropy(logits[:-1], tokens[1:], reduction="mean")
    else:
        each = F.cross_entropy(logits[:-1], tokens[1:], reduction="none")  # (T-1,)
        loss = (loss_weights * each).sum() / loss_weights.sum()
    entropy_bits = torch.stack(entropies)  # (L, H, T)
    return logits, loss, entropy_bits


# ---------------------------------------------------------------------------
# Reference computations
# ---------------------------------------------------------------------------
def to_f64_leaves(weights):
    return {n: w.to(torch.float64).clone().requires_grad_(True) for n, w in weights.items()}


def rule_factors(rule, T):
    """(T,) r(i) of a scale rule (as nopescope's ScaleRule::factor)."""
    i = torch.arange(T, dtype=torch.float64) + 1.0
    L = float(rule["training_length"])
    if rule["rule"] == "log-n":
        r = torch.log(i) / math.log(L)
    else:  # fitted
        r = 1.0 + rule["a"] * torch.log(i / L)
    return torch.clamp(r, min=1.0)


def fixture_loss_weights(T):
    """(T-1,) loss weights: 0 for every third prediction, the rest 0.5..1.5."""
    return torch.tensor([0.0 if i % 3 == 0 else 0.5 + 0.25 * (i % 5) for i in range(T - 1)], dtype=torch.float64)


def gradients(weights32, head_scales32, tokens, use_rope, rule=None, loss_weights=None):
    params = to_f64_leaves(weights32)
    hs = head_scales32.to(torch.float64).clone().requires_grad_(True)  # (L, H)
    logits, loss, entropy = forward(params, hs, tokens, use_rope, rule, loss_weights)
    loss.backward()
    grads = {f"grad.{n}": p.grad.detach().clone() for n, p in params.items()}
    grads["grad.head_scales"] = hs.grad.detach().clone()
    return logits.detach(), loss.detach(), entropy, grads


def adamw_losses(weights32, head_scales32, tokens, use_rope):
    """Loss at the start of each of ADAMW_STEPS AdamW steps (head scales fixed)."""
    params = to_f64_leaves(weights32)
    hs = head_scales32.to(torch.float64)  # (L, H), not trained
    decay = [p for p in params.values() if p.dim() == 2]
    no_decay = [p for p in params.values() if p.dim() != 2]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": ADAMW_WEIGHT_DECAY},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=ADAMW_LR,
        betas=ADAMW_BETAS,
        eps=ADAMW_EPS,
    )
    losses = []
    for _ in range(ADAMW_STEPS):
        opt.zero_grad(set_to_none=True)
        _, loss, _ = forward(params, hs, tokens, use_rope)
        losses.append(loss.item())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(params.values()), ADAMW_CLIP_NORM)
        opt.step()
    return torch.tensor(losses, dtype=torch.float64)  # (ADAMW_STEPS,)


# ---------------------------------------------------------------------------
# Self-checks
# ---------------------------------------------------------------------------
def check_head_scale_grad(weights32, head_scales32, tokens, use_rope, grad_hs):
    """Central finite differences of the loss w.r.t. a few head scales."""
    params = {n: w.to(torch.float64) for n, w in weights32.items()}
    base = head_scales32.to(torch.float64)
    step = 1e-6
    with torch.no_grad():
        for layer, head in [(0, 0), (0, 3), (1, 1), (1, 2)]:
            plus, minus = base.clone(), base.clone()
            plus[layer, head] += step
            minus[layer, head] -= step
            lp = forward(params, plus, tokens, use_rope)[1].item()
            lm = forward(params, minus, tokens, use_rope)[1].item()
            fd = (lp - lm) / (2 * step)
            ad = grad_hs[layer, head].item()
            err = abs(fd - ad)
            assert err <= 1e-7 + 1e-5 * abs(ad), (layer, head, fd, ad)
            print(f"    d loss / d s[{layer},{head}]: autograd {ad:+.10e}  fd {fd:+.10e}  |diff| {err:.1e}")


def check_entropy(entropy):
    """0 <= H[l, h, i] <= log2(i + 1)."""
    T = entropy.shape[-1]
    upper = torch.log2(torch.arange(1, T + 1, dtype=torch.float64))  # (T,)
    assert (entropy >= -1e-12).all(), "negative entropy"
    assert (entropy <= upper + 1e-12).all(), "entropy above log2(i+1)"
    # Attention should be far from uniform with these weight scales.
    frac = (entropy[..., 1:] / upper[1:]).mean().item()
    print(f"    entropy within [0, log2(i+1)]; mean fraction of max {frac:.3f}")


# ---------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------
def save_safetensors(tensors, path, metadata):
    """save_file, then rewrite the JSON header with its metadata keys sorted.

    safetensors stores __metadata__ in a hash map, so its key order (and hence
    the file bytes) can change between runs; sorting it makes output
    byte-for-byte reproducible. Tensor data and offsets are left untouched.
    """
    save_file(tensors, str(path), metadata=metadata)
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    meta = header.pop("__metadata__", {})
    ordered = {"__metadata__": dict(sorted(meta.items()))}
    ordered.update(header)  # tensor entries in the order safetensors wrote them
    text = json.dumps(ordered, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # keep the data section 8-byte aligned
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n :])


def config_for(use_rope):
    cfg = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": HIDDEN,
        "intermediate_size": INTERMEDIATE,
        "num_hidden_layers": N_LAYERS,
        "num_attention_heads": N_HEADS,
        "num_key_value_heads": N_KV_HEADS,
        "vocab_size": VOCAB,
        "rms_norm_eps": RMS_EPS,
        "tie_word_embeddings": False,
        "max_position_embeddings": SEQ_LEN,
        "hidden_act": "silu",
        "position_encoding": "rope" if use_rope else "none",
    }
    if use_rope:
        cfg["rope_theta"] = ROPE_THETA
    return cfg


def write_variant(name, use_rope, weights32, head_scales32, tokens):
    out = FIXTURES / name
    out.mkdir(parents=True, exist_ok=True)
    print(f"{name}:")

    logits, loss, entropy, grads = gradients(weights32, head_scales32, tokens, use_rope)
    check_head_scale_grad(weights32, head_scales32, tokens, use_rope, grads["grad.head_scales"])
    check_entropy(entropy)
    losses = adamw_losses(weights32, head_scales32, tokens, use_rope)
    assert losses[0].item() == loss.item(), (losses[0].item(), loss.item())
    print(f"    loss {loss.item():.12f}  adamw_losses {[round(v, 6) for v in losses.tolist()]}")

    (out / "config.json").write_text(json.dumps(config_for(use_rope), indent=2) + "\n")

    save_safetensors({n: w.contiguous() for n, w in weights32.items()}, out / "model.safetensors",
                     metadata={"format": "pt"})

    # Float32-rounded values as float64 (Python floats).
    hs_list = head_scales32.to(torch.float64).tolist()
    (out / "head_scales.json").write_text(json.dumps({"head_scales": hs_list}, indent=2) + "\n")

    expected = {
        "tokens": tokens.contiguous(),  # (T,) int64
        "logits": logits.contiguous(),  # (T, V)
        "loss": loss.reshape(1).contiguous(),  # (1,)
        "entropy_bits": entropy.contiguous(),  # (L, H, T)
        "adamw_losses": losses.contiguous(),  # (ADAMW_STEPS,)
    }
    expected.update({n: g.contiguous() for n, g in grads.items()})
    # Engine contract v2: loss weights per prediction and a per-position
    # scale rule (log-n for NoPE, fitted for RoPE, both relative to L = 8
    # so most positions of the sequence are past it).
    rule = {"rule": "fitted", "a": 0.3, "training_length": 8} if use_rope else {"rule": "log-n", "training_length": 8}
    w = fixture_loss_weights(tokens.shape[0])
    _, wloss, _, wgrads = gradients(weights32, head_scales32, tokens, use_rope, rule_factors(rule, tokens.shape[0]), w)
    print(f"    weighted loss under {rule}: {wloss.item():.12f}")
    expected["weighted.loss_weights"] = w.contiguous()
    expected["weighted.loss"] = wloss.reshape(1).contiguous()
    expected.update({f"weighted.{n}": g.contiguous() for n, g in wgrads.items()})
    metadata = {
        "weighted_rule": json.dumps(rule, sort_keys=True),
        "format": "pt",
        "position_encoding": "rope" if use_rope else "none",
        "torch_version": torch.__version__,
        "lr": repr(ADAMW_LR),
        "beta1": repr(ADAMW_BETAS[0]),
        "beta2": repr(ADAMW_BETAS[1]),
        "eps": repr(ADAMW_EPS),
        "weight_decay": repr(ADAMW_WEIGHT_DECAY),
        "weight_decay_norms": "0.0",
        "grad_clip_norm": repr(ADAMW_CLIP_NORM),
        "adamw_steps": str(ADAMW_STEPS),
    }
    save_safetensors(expected, out / "expected.safetensors", metadata=metadata)
    for f in sorted(out.iterdir()):
        print(f"    wrote {f.relative_to(REPO_ROOT)} ({f.stat().st_size} bytes)")
    return loss.item()


def main():
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)  # keep float64 reductions in a fixed order
    weights32 = make_weights()
    head_scales32 = make_head_scales()
    tokens = make_tokens()
    write_variant("tiny-nope", False, weights32, head_scales32, tokens)
    write_variant("tiny-rope", True, weights32, head_scales32, tokens)


if __name__ == "__main__":
    main()
