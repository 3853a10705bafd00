"""Benchmark: `tunesmith serve` under concurrent load against a one-request-at-a-time server.

Both servers run the embedded model with the same 4 LoRA adapters (written here with random
weights, r=16 on the attention and MLP projections, as a fine-tune would leave them) and are
driven the same way through the official `openai` client: N concurrent clients (default 32), each
request for one of the 4 adapters in turn, alternately a short answer (4 tokens, as a label is)
and a 64-token generation, greedy. For each server it prints requests/s, generated tokens/s,
p50/p95 latency and time to first token (streamed), and errors; then the ratios.

- (a) the baseline, the way a user would write it: FastAPI + uvicorn, one request at a time
  under a lock, `PeftModel.set_adapter` then `model.generate` per request, in fp32 (bf16 autocast
  would make it slower: it casts the frozen weights anew at every call; `--baseline-bf16` shows it);
- (b) `tunesmith serve`: continuous batching, rows of every adapter in one batch.

Goal: (b) at least 5x (a)'s throughput at 32 clients with p95 latency no worse.

Usage: python bench/serve_load.py [--clients 32] [--requests 128] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEY = "bench-key"
TEXTS = ["I still have not received my new card, it has been two weeks.", "How do I change my PIN?",
         "Why was I charged a fee for a transfer?", "Tell me about the exchange rate you use for euros.",
         "My top-up failed, what happened?", "Can I get a virtual card for online shopping?"]


def make_adapters(base: Path, out: Path, n: int = 4) -> list[Path]:
    """``n`` LoRA adapters with random weights on the embedded model."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    paths = []
    for i in range(n):
        torch.manual_seed(i)
        model = AutoModelForCausalLM.from_pretrained(base)
        cfg = LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                             "up_proj", "down_proj"], init_lora_weights=False)
        peft = get_peft_model(model, cfg)
        with torch.no_grad():
            for name, p in peft.named_parameters():
                if "lora_B" in name:
                    p.mul_(0.01)  # a trained adapter's size, not a random model's
        peft.save_pretrained(out / f"adapter{i}")
        paths.append(out / f"adapter{i}")
    return paths


BASELINE = r'''
import sys, threading, time, torch, uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer
base, port, adapters = sys.argv[1], int(sys.argv[2]), sys.argv[3:-1]
tok = AutoTokenizer.from_pretrained(base)
model = AutoModelForCausalLM.from_pretrained(base)
model = PeftModel.from_pretrained(model, adapters[0], adapter_name="adapter0")
for i, path in enumerate(adapters[1:], start=1):
    model.load_adapter(path, adapter_name=f"adapter{i}")
model.eval()
bf16 = sys.argv[-1] == "bf16"
lock = threading.Lock()
app = FastAPI()

def generate(body):
    ids = tok.apply_chat_template(body["messages"], add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with lock, torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        model.set_adapter(body["model"])
        out = model.generate(**ids, max_new_tokens=body.get("max_tokens", 16), do_sample=False)
    new = out[0, ids["input_ids"].shape[1]:]
    return tok.decode(new, skip_special_tokens=True), len(new)

@app.post("/v1/chat/completions")
async def chat(request: Request):
    import asyncio
    body = await request.json()
    text, n = await asyncio.to_thread(generate, body)
    return JSONResponse({"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                         "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                         "usage": {"prompt_tokens": 0, "completion_tokens": n, "total_tokens": n}})

uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(url: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read() if proc.stderr else ''}")
        try:
            httpx.post(url + "/chat/completions", json={}, timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.5)
    raise RuntimeError("server did not start")


def drive(url: str, clients: int, requests: int, names: list[str], stream: bool) -> dict:
    import openai

    client = openai.OpenAI(base_url=url, api_key=KEY, max_retries=0, timeout=900)
    lat, ttft, tokens, errors = [], [], [], []

    def one(i: int) -> None:
        kind = dict(max_tokens=4) if i % 2 == 0 else dict(max_tokens=64)
        msgs = [{"role": "user", "content": TEXTS[i % len(TEXTS)]}]
        start = time.perf_counter()
        try:
            if stream:
                first, n = None, 0
                for chunk in client.chat.completions.create(model=names[i % len(names)], messages=msgs, temperature=0,
                                                            stream=True, stream_options={"include_usage": True}, **kind):
                    if first is None and chunk.choices and chunk.choices[0].delta.content:
                        first = time.perf_counter() - start
                    if chunk.usage:
                        n = chunk.usage.completion_tokens
                ttft.append(first if first is not None else time.perf_counter() - start)
            else:
                n = client.chat.completions.create(model=names[i % len(names)], messages=msgs, temperature=0,
                                                   **kind).usage.completion_tokens
            lat.append(time.perf_counter() - start)
            tokens.append(n)
        except Exception as exc:  # noqa: BLE001 - counted, not fatal
            errors.append(repr(exc))

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, range(requests)))
    wall = time.perf_counter() - start
    q = statistics.quantiles(lat, n=20) if len(lat) > 1 else [lat[0]] * 19
    out = {"requests": requests, "seconds": round(wall, 2), "requests_per_s": round(len(lat) / wall, 3),
           "tokens_per_s": round(sum(tokens) / wall, 2), "p50_latency_s": round(statistics.median(lat), 3),
           "p95_latency_s": round(q[18], 3), "errors": len(errors), "error_examples": errors[:3]}
    if ttft:
        out["p50_ttft_s"] = round(statistics.median(ttft), 3)
        out["p95_ttft_s"] = round(statistics.quantiles(ttft, n=20)[18], 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--requests", type=int, default=128)
    ap.add_argument("--baseline-bf16", action="store_true", help="run the baseline under bf16 autocast")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    from tunesmith.models.resolve import resolve_base

    base = resolve_base("smollm2-135m-instruct")
    tmp = Path(tempfile.mkdtemp(prefix="serve-load-"))
    adapters = make_adapters(base, tmp)
    names = [f"adapter{i}" for i in range(len(adapters))]
    env = {**os.environ, "TUNESMITH_API_KEY": KEY}
    results = {}

    port = free_port()
    script = tmp / "baseline_server.py"
    script.write_text(BASELINE)
    precision = ["bf16"] if args.baseline_bf16 else ["fp32"]
    proc = subprocess.Popen([sys.executable, str(script), str(base), str(port), *map(str, adapters), *precision], env=env,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_up(f"http://127.0.0.1:{port}/v1", proc)
        results["one_at_a_time"] = drive(f"http://127.0.0.1:{port}/v1", args.clients, args.requests, names, stream=False)
    finally:
        proc.terminate()
        proc.wait(60)

    cmd = [sys.executable, "-m", "tunesmith", "serve", "--port", "0", "--json", "--base", "smollm2-135m-instruct"]
    for name, path in zip(names, adapters):
        cmd += ["--adapter", f"{name}={path}"]
    (tmp / "tunesmith.yaml").write_text("serve: {limits: {max_batch: 64}, log: {path: requests.sqlite}}\n")
    proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        info = json.loads(proc.stdout.readline())
        results["tunesmith_serve"] = drive(info["url"], args.clients, args.requests, names, stream=False)
        results["tunesmith_serve_streamed"] = drive(info["url"], args.clients, args.requests, names, stream=True)
    finally:
        proc.terminate()
        proc.wait(120)

    a, b = results["one_at_a_time"], results["tunesmith_serve"]
    results["throughput_ratio"] = round(b["tokens_per_s"] / a["tokens_per_s"], 2)
    results["requests_ratio"] = round(b["requests_per_s"] / a["requests_per_s"], 2)
    results["p95_latency_ratio"] = round(b["p95_latency_s"] / a["p95_latency_s"], 3)
    results["clients"] = args.clients
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for name in ("one_at_a_time", "tunesmith_serve", "tunesmith_serve_streamed"):
        r = results[name]
        ttft = f", TTFT p50 {r['p50_ttft_s']} s p95 {r['p95_ttft_s']} s" if "p50_ttft_s" in r else ""
        print(f"{name:26s} {r['requests_per_s']:.2f} req/s, {r['tokens_per_s']:.1f} tokens/s, latency p50 "
              f"{r['p50_latency_s']} s p95 {r['p95_latency_s']} s{ttft}, errors {r['errors']}")
    print(f"{args.clients} clients, 4 adapters: tunesmith serve / one at a time: throughput "
          f"{results['throughput_ratio']}x (goal >= 5x), requests {results['requests_ratio']}x, p95 latency "
          f"{results['p95_latency_ratio']}x (goal <= 1)")


if __name__ == "__main__":
    main()
