#!/usr/bin/env python3
"""A PyTorch twin of `nopescope train`'s data mix and model, for finding a
recipe under which a small NoPE model learns pass-key retrieval, quickly,
on a GPU, before spending hours of CPU on it. Not used by CI or the Rust
tests; the bundled models are trained by `nopescope train` only.

The data follow src/lab/train.rs and src/lab/passkey.rs: every sequence
starts with <s>; a share of pass-key documents (the paper's format, key at a
random depth, length uniform in [min_doc_len, L]), a share of copy
documents (tokens drawn from the training text one by one, then repeated),
the rest windows of training text. Retrieval is measured as there: greedy,
every key digit exact, depths spread evenly, at L and beyond.

usage: recipe_probe.py --tokenizer tokenizer.json --text sotu-train.txt \
           --name A --hidden 128 --layers 4 --heads 4 --kv 2 --ffn 352 \
           --batch 8 --lr 4e-3 --steps 8000 [--rope] [--minutes 7]
"""
import argparse, math, time, random
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

INSTRUCTION = ("There is an important info hidden inside a lot of irrelevant text. "
               "Find it and memorize it. I will quiz you about the important information there.")
FILLER = " The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
QUESTION = " What is the pass key? The pass key is "


class Docs:
    def __init__(self, tok, train_ids, L, instruction):
        self.tok, self.train, self.L = tok, train_ids, L
        self.bos = tok.token_to_id("<s>")
        self.instr = tok.encode(instruction, add_special_tokens=False).ids
        self.filler = tok.encode(FILLER, add_special_tokens=False).ids
        self.question = tok.encode(QUESTION, add_special_tokens=False).ids

    def passkey(self, length, depth, key, rng, text_filler=False):
        sent = self.tok.encode(f" The pass key is {key}. Remember it. {key} is the pass key.", add_special_tokens=False).ids
        full = self.tok.encode(f"{QUESTION}{key}", add_special_tokens=False).ids
        common = 0
        while common < min(len(full), len(self.question)) and full[common] == self.question[common]:
            common += 1
        a = len(full) - common
        fixed = 1 + len(self.instr) + len(sent) + len(full)
        n = length - fixed
        assert n > 0, (length, fixed)
        pre = min(n, round(max(0.0, min(1.0, depth)) * n))
        post = n - pre

        def take(c):
            if text_filler and len(self.train) > c:
                s = rng.randrange(len(self.train) - c)
                return list(self.train[s:s + c])
            return [self.filler[i % len(self.filler)] for i in range(c)]
        toks = [self.bos] + self.instr + take(pre) + sent + take(post) + full
        assert len(toks) == length
        return toks, a


class Model(torch.nn.Module):
    def __init__(self, vocab, d, layers, heads, kv, ffn, rope):
        super().__init__()
        self.h, self.kv, self.dh, self.rope = heads, kv, d // heads, rope
        self.emb = torch.nn.Embedding(vocab, d)
        self.layers = torch.nn.ModuleList()
        for _ in range(layers):
            m = torch.nn.Module()
            m.n1 = torch.nn.RMSNorm(d, eps=1e-5)
            m.q = torch.nn.Linear(d, d, bias=False)
            m.k = torch.nn.Linear(d, kv * self.dh, bias=False)
            m.v = torch.nn.Linear(d, kv * self.dh, bias=False)
            m.o = torch.nn.Linear(d, d, bias=False)
            m.n2 = torch.nn.RMSNorm(d, eps=1e-5)
            m.g = torch.nn.Linear(d, ffn, bias=False)
            m.u = torch.nn.Linear(d, ffn, bias=False)
            m.dn = torch.nn.Linear(ffn, d, bias=False)
            self.layers.append(m)
        self.norm = torch.nn.RMSNorm(d, eps=1e-5)
        for p in self.parameters():
            if p.dim() == 2:
                torch.nn.init.normal_(p, std=0.02)

    def rot(self, x, T):
        half = self.dh // 2
        inv = 10000.0 ** (-torch.arange(half, device=x.device, dtype=torch.float32) / half)
        ang = torch.arange(T, device=x.device, dtype=torch.float32)[:, None] * inv[None]
        c, s = ang.cos(), ang.sin()
        x1, x2 = x[..., :half], x[..., half:]
        return torch.cat([x1 * c - x2 * s, x1 * s + x2 * c], -1)

    def forward(self, ids, scale=1.0):
        B, T = ids.shape
        x = self.emb(ids)
        for m in self.layers:
            h = m.n1(x)
            q = m.q(h).view(B, T, self.h, self.dh).transpose(1, 2)
            k = m.k(h).view(B, T, self.kv, self.dh).transpose(1, 2)
            v = m.v(h).view(B, T, self.kv, self.dh).transpose(1, 2)
            if self.rope:
                q, k = self.rot(q, T), self.rot(k, T)
            rep = self.h // self.kv
            k = k.repeat_interleave(rep, 1)
            v = v.repeat_interleave(rep, 1)
            a = F.scaled_dot_product_attention(q * scale, k, v, is_causal=True)
            x = x + m.o(a.transpose(1, 2).reshape(B, T, -1))
            h = m.n2(x)
            x = x + m.dn(F.silu(m.g(h)) * m.u(h))
        return self.norm(x) @ self.emb.weight.T


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--text", required=True)
    ap.add_argument("--name", default="run")
    ap.add_argument("--L", type=int, default=256)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv", type=int, default=2)
    ap.add_argument("--ffn", type=int, default=352)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=4e-3)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--steps", type=int, default=8000)
    ap.add_argument("--passkey", type=float, default=0.4)
    ap.add_argument("--hard", type=float, default=0.1)
    ap.add_argument("--copy", type=float, default=0.4)
    ap.add_argument("--min-doc", type=int, default=64)
    ap.add_argument("--copy-min", type=int, default=16)
    ap.add_argument("--instruction", default=INSTRUCTION)
    ap.add_argument("--rope", action="store_true")
    ap.add_argument("--minutes", type=float, default=7.0)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = True
    tok = Tokenizer.from_file(a.tokenizer)
    train = tok.encode(open(a.text).read(), add_special_tokens=False).ids
    docs = Docs(tok, train, a.L, a.instruction)
    torch.manual_seed(a.seed)
    model = Model(4096, a.hidden, a.layers, a.heads, a.kv, a.ffn, a.rope).to(dev)
    decay = [p for n, p in model.named_parameters() if p.dim() == 2]
    nodecay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": nodecay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95), eps=1e-8)
    rng = random.Random(a.seed)
    L = a.L
    _, _a = docs.passkey(4 * L, 0.5, 99999, rng)
    fixed = 4 * L - (4 * L - 1 - len(docs.instr)) + len(tok.encode(" The pass key is 99999. Remember it. 99999 is the pass key.", add_special_tokens=False).ids) + len(tok.encode(QUESTION + "99999", add_special_tokens=False).ids)
    min_doc = max(a.min_doc, fixed + 2)

    def batch():
        seqs = []
        for _ in range(a.batch):
            u = rng.random()
            if u < a.passkey:
                n = rng.randint(min_doc, L)
                s, _ = docs.passkey(n, rng.random(), rng.randint(10000, 99999), rng, rng.random() < a.hard)
            elif u < a.passkey + a.copy:
                n = rng.randint(a.copy_min, L)
                m = (n - 1) // 2
                span = [train[rng.randrange(len(train))] for _ in range(m)]
                s = [docs.bos] + span + span
            else:
                st = rng.randrange(len(train) - L)
                s = [docs.bos] + train[st:st + L - 1]
            seqs.append(s)
        T = max(len(s) for s in seqs)
        ids = torch.zeros(len(seqs), T, dtype=torch.long)
        tgt = torch.full((len(seqs), T), -100, dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, :len(s)] = torch.tensor(s)
            tgt[i, :len(s) - 1] = torch.tensor(s[1:])
        return ids.to(dev), tgt.to(dev)

    @torch.no_grad()
    def passkey_acc(length, trials=32, scale=1.0):
        r = random.Random(20240101)
        hits, loss = 0, 0.0
        ids, ans = [], []
        for k in range(trials):
            s, na = docs.passkey(length, k / (trials - 1), r.randint(10000, 99999), r)
            ids.append(s)
            ans.append(na)
        x = torch.tensor(ids, device=dev)
        logits = model(x, scale).float()
        for i in range(trials):
            na = ans[i]
            rows = logits[i, length - na - 1:length - 1]
            t = x[i, length - na:]
            hits += int((rows.argmax(-1) == t).all())
            loss += F.cross_entropy(rows, t).item()
        return hits / trials, loss / trials

    sched = lambda s: a.lr * (s + 1) / a.warmup if s < a.warmup else a.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, (s - a.warmup) / max(1, a.steps - a.warmup)))))
    t0 = time.time()
    tokens = 0
    for step in range(a.steps):
        for g in opt.param_groups:
            g["lr"] = sched(step)
        ids, tgt = batch()
        logits = model(ids)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), tgt.view(-1), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        tokens += int((tgt != -100).sum()) + a.batch
        done = step + 1
        if done % a.eval_every == 0 or time.time() - t0 > a.minutes * 60:
            model.eval()
            res = []
            for f in (1, 2, 4):
                acc, kl = passkey_acc(f * L)
                res.append(f"{f}L {acc:.2f}/{kl:.2f}")
            model.train()
            print(f"[{a.name}] step {done} tok {tokens/1e6:.1f}M {time.time()-t0:.0f}s loss {loss.item():.3f} | " + " ".join(res), flush=True)
            if time.time() - t0 > a.minutes * 60:
                break


if __name__ == "__main__":
    main()
