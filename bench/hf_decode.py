"""Times transformers' MambaForCausalLM on CPU, f32, greedy, for bench/decode.sh.

usage: python hf_decode.py DIR PROMPT_LEN TOKENS   ->  one JSON line

The prompt is the same as the Rust helper's: ids (i * 7 + 3) % min(vocab, 256). Decode speed
is (TOKENS - 1) new tokens over the time generate(TOKENS) takes beyond generate(1), which is
the prefill plus the first token; both take the best of three runs.
"""
import json
import resource
import sys
import time

import torch
from transformers import MambaForCausalLM


def main():
    d, prompt_len, tokens = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    torch.set_num_threads(torch.get_num_threads())
    model = MambaForCausalLM.from_pretrained(d, torch_dtype=torch.float32).eval()
    vocab = model.config.vocab_size
    ids = torch.tensor([[(i * 7 + 3) % min(vocab, 256) for i in range(prompt_len)]])

    def timed(n):
        best = float("inf")
        out = None
        for _ in range(3):
            t = time.perf_counter()
            with torch.no_grad():
                out = model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                     use_cache=True, pad_token_id=0)
            best = min(best, time.perf_counter() - t)
        return best, out

    t1, _ = timed(1)
    tn, out = timed(tokens)
    print(json.dumps({
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "prefill_tokens_per_second": prompt_len / t1,
        "decode_tokens_per_second": (tokens - 1) / (tn - t1),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "output_ids": out[0].tolist(),
    }))


if __name__ == "__main__":
    main()
