"""Verification: a run's GGUF export run by llama.cpp answers as the merged model does.

Exports the run's merged model (`tunesmith export --merge`) and its GGUF files in f16 and q8_0
(`--gguf`), then answers the run's test prompts greedily three ways: transformers on the merged
folder, and llama.cpp (the `llama-cpp-python` package) on each GGUF file, with the same chat
template rendering. Prints how many answers agree with the merged model's for each file (goal:
all of them for f16, at least 95% for q8_0).

Needs `pip install llama-cpp-python` (built from source as pip does; several minutes on 2 cores).

Usage: python bench/gguf_llamacpp.py --run RUN [--runs-dir DIR] [--rows 50] [--max-new-tokens 16] [--json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def llama_worker(gguf_file: str, texts_file: str, out_file: str, max_tokens: int, n_ctx: int) -> None:
    """Answer the prompts with llama.cpp, in a process of its own: llama.cpp's OpenMP and PyTorch's do not
    share a process (loading both crashed with a segmentation fault)."""
    from llama_cpp import Llama

    llm = Llama(model_path=gguf_file, n_ctx=n_ctx, verbose=False, seed=0)
    texts = json.loads(Path(texts_file).read_text())
    got = [llm.create_completion(t, max_tokens=max_tokens, temperature=0.0, top_k=1)["choices"][0]["text"].strip()
           for t in texts]
    Path(out_file).write_text(json.dumps(got))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--llama-worker":
        llama_worker(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6]))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--runs-dir", type=Path, default=Path("runs"))
    ap.add_argument("--rows", type=int, default=50)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    import importlib.util

    if importlib.util.find_spec("llama_cpp") is None:
        print("llama-cpp-python is not installed: pip install llama-cpp-python", file=sys.stderr)
        raise SystemExit(2)
    sys.path.insert(0, str(ROOT / "src"))
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunesmith.data.encode import render_prompt_text
    from tunesmith.ops.export import export_gguf, export_merged
    from tunesmith.ops.reevaluate import load_run

    run, cfg, splits = load_run(args.run, args.runs_dir)
    examples = list(splits.test)[: args.rows]
    out = Path(tempfile.mkdtemp(prefix="gguf-verify-"))
    merged = Path(export_merged(run, cfg, out / "merged")["out"])
    tok = AutoTokenizer.from_pretrained(merged)
    model = AutoModelForCausalLM.from_pretrained(merged).eval()
    texts = [render_prompt_text(tok, ex, None) for ex in examples]  # the system prompt is in the template now
    want = []
    for text in texts:
        ids = tok(text, return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            gen = model.generate(**ids, max_new_tokens=args.max_new_tokens, do_sample=False)
        want.append(tok.decode(gen[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip())
    result = {"run": run.id, "rows": len(examples)}
    (out / "texts.json").write_text(json.dumps(texts))
    for quant in ("f16", "q8_0"):
        file = out / quant / "model.gguf"
        export_gguf(run, cfg, file, quant)
        done = subprocess.run([sys.executable, __file__, "--llama-worker", str(file), str(out / "texts.json"),
                               str(out / f"{quant}.json"), str(args.max_new_tokens),
                               str(max(cfg.model.max_seq_len * 2, 1024))])
        if done.returncode != 0:  # llama.cpp itself failed: say so rather than count it as disagreement
            result[quant] = {"llama_cpp_failed": done.returncode}
            continue
        got = json.loads((out / f"{quant}.json").read_text())
        same = sum(g == w for g, w in zip(got, want))
        result[quant] = {"agree": same, "share": round(same / len(texts), 4),
                         "examples": [(w, g) for w, g in zip(want, got) if w != g][:3]}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for quant in ("f16", "q8_0"):
        r = result[quant]
        if "llama_cpp_failed" in r:
            print(f"{quant}: llama.cpp exited with {r['llama_cpp_failed']} on this file")
            continue
        print(f"{quant}: {r['agree']}/{len(texts)} answers equal the merged model's ({r['share']:.1%})")


if __name__ == "__main__":
    main()
