"""Times transformers' MambaForCausalLM on CPU, f32, greedy, for bench/decode.sh.

usage: python hf_decode.py DIR IDS TOKENS THREADS   ->  one JSON line

DIR is a Hugging Face directory (read offline, local files only), IDS the prompt's token ids
separated by commas (the ids `tantra run` fed, so both see the same prompt), THREADS the
torch thread count. Decode speed is (TOKENS - 1) new tokens over the time generate(TOKENS)
takes beyond generate(1), which is the prefill plus the first token; prefill speed is the
prompt length over generate(1)'s time. Both take the best of three runs.
"""
import json
import os
import resource
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import MambaForCausalLM  # noqa: E402


def main():
    d, ids, tokens, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(threads)
    model = MambaForCausalLM.from_pretrained(d, dtype=torch.float32, local_files_only=True).eval()
    ids = torch.tensor([[int(x) for x in ids.split(",")]])

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
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
        "prefill_tokens_per_second": ids.shape[1] / t1,
        "decode_tokens_per_second": (tokens - 1) / (tn - t1),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "input_ids": ids[0].tolist(),
        "output_ids": out[0].tolist(),
    }))


if __name__ == "__main__":
    main()
