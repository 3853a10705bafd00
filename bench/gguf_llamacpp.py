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
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--runs-dir", type=Path, default=Path("runs"))
    ap.add_argument("--rows", type=int, default=50)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    try:
        from llama_cpp import Llama
    except ImportError:
        print("llama-cpp-python is not installed: pip install llama-cpp-python", file=sys.stderr)
        raise SystemExit(2) from None
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
    for quant in ("f16", "q8_0"):
        file = out / quant / "model.gguf"
        export_gguf(run, cfg, file, quant)
        llm = Llama(model_path=str(file), n_ctx=max(cfg.model.max_seq_len * 2, 1024), verbose=False, seed=0)
        got = [llm.create_completion(text, max_tokens=args.max_new_tokens, temperature=0.0, top_k=1)["choices"][0]["text"].strip()
               for text in texts]
        same = sum(g == w for g, w in zip(got, want))
        result[quant] = {"agree": same, "share": round(same / len(texts), 4),
                         "examples": [(w, g) for w, g in zip(want, got) if w != g][:3]}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for quant in ("f16", "q8_0"):
        r = result[quant]
        print(f"{quant}: {r['agree']}/{len(texts)} answers equal the merged model's ({r['share']:.1%})")


if __name__ == "__main__":
    main()
