// Logits and greedy tokens of a GGUF model run by llama.cpp, for bench/accuracy.sh: the
// llama.cpp half of the side-by-side accuracy measurement (tantra's half is
// `runtime_bench score|greedy`, which takes the same arguments and writes the same files).
//
//   llama_logits MODEL.gguf score  IDS_FILE OUT.f32 THREADS   logits of every position
//   llama_logits MODEL.gguf greedy IDS_FILE TOKENS  THREADS   TOKENS greedy tokens per line
//
// IDS_FILE holds one sequence per line, token ids separated by spaces. Ids are fed as they
// are (no tokenizer, no BOS): both sides must see the same ids, and tantra's GGUF export
// gives token i the byte i. `score` feeds each line as one batch asking for the logits of
// every position, from an empty state, and appends them to OUT.f32 (f32, little-endian,
// [positions, vocab] row-major, lines one after the other); it prints {"vocab": V,
// "positions": N}. `greedy` feeds each line as one batch, then takes the argmax (lowest id on
// ties) and feeds it back one token at a time, TOKENS times, never stopping at an end token;
// it prints {"vocab": V, "generated": [[ids of line 1], ...]}. Errors go to stderr, exit 1.
//
// Built by bench/accuracy.sh against LLAMA_CPP_DIR (libllama) and LLAMA_CPP_SRC (headers).

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "llama.h"

namespace {

[[noreturn]] void die(const std::string &msg) {
    std::fprintf(stderr, "llama_logits: %s\n", msg.c_str());
    std::exit(1);
}

void quiet(enum ggml_log_level level, const char *text, void *) {
    if (level >= GGML_LOG_LEVEL_ERROR) {
        std::fputs(text, stderr);
    }
}

std::vector<std::vector<llama_token>> read_ids(const std::string &path, int32_t vocab) {
    std::ifstream in(path);
    if (!in) {
        die(path + ": cannot open");
    }
    std::vector<std::vector<llama_token>> lines;
    std::string line;
    size_t n = 0;
    while (std::getline(in, line)) {
        ++n;
        std::istringstream words(line);
        std::vector<llama_token> ids;
        std::string w;
        while (words >> w) {
            char *end = nullptr;
            long v = std::strtol(w.c_str(), &end, 10);
            if (end == w.c_str() || *end != '\0' || v < 0 || v >= vocab) {
                die(path + ":" + std::to_string(n) + ": " + w + " is not a token id below " +
                    std::to_string(vocab));
            }
            ids.push_back(static_cast<llama_token>(v));
        }
        if (!ids.empty()) {
            lines.push_back(std::move(ids));
        }
    }
    if (lines.empty()) {
        die(path + ": no sequences");
    }
    return lines;
}

// Feeds `ids` as one batch from an empty state; asks for every position's logits when `all`,
// else the last one's.
void feed(llama_context *ctx, const std::vector<llama_token> &ids, bool all) {
    llama_memory_clear(llama_get_memory(ctx), true);
    llama_batch batch = llama_batch_init(static_cast<int32_t>(ids.size()), 0, 1);
    for (size_t i = 0; i < ids.size(); ++i) {
        batch.token[i] = ids[i];
        batch.pos[i] = static_cast<llama_pos>(i);
        batch.n_seq_id[i] = 1;
        batch.seq_id[i][0] = 0;
        batch.logits[i] = all || i + 1 == ids.size();
    }
    batch.n_tokens = static_cast<int32_t>(ids.size());
    int32_t rc = llama_decode(ctx, batch);
    llama_batch_free(batch);
    if (rc != 0) {
        die("llama_decode of a " + std::to_string(ids.size()) + "-token batch returned " +
            std::to_string(rc));
    }
}

llama_token argmax(const float *logits, int32_t vocab) {
    llama_token best = 0;
    for (int32_t i = 1; i < vocab; ++i) {
        if (logits[i] > logits[best]) {
            best = i;
        }
    }
    return best;
}

const float *logits_at(llama_context *ctx, int32_t i) {
    const float *l = llama_get_logits_ith(ctx, i);
    if (l == nullptr) {
        die("no logits at output " + std::to_string(i));
    }
    return l;
}

}  // namespace

int main(int argc, char **argv) {
    if (argc != 6) {
        die("usage: llama_logits MODEL.gguf score IDS_FILE OUT.f32 THREADS | "
            "llama_logits MODEL.gguf greedy IDS_FILE TOKENS THREADS");
    }
    const std::string model_path = argv[1], mode = argv[2], ids_path = argv[3], arg = argv[4];
    const int threads = std::atoi(argv[5]);
    if (mode != "score" && mode != "greedy") {
        die("mode must be score or greedy, not " + mode);
    }
    if (threads < 1) {
        die("THREADS must be at least 1");
    }
    llama_log_set(quiet, nullptr);
    llama_backend_init();
    llama_model_params mp = llama_model_default_params();
    mp.progress_callback = [](float, void *) { return true; };  // no progress dots
    llama_model *model = llama_model_load_from_file(model_path.c_str(), mp);
    if (model == nullptr) {
        die(model_path + ": llama.cpp could not load it");
    }
    const int32_t vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
    const auto lines = read_ids(ids_path, vocab);
    const int tokens = mode == "greedy" ? std::atoi(arg.c_str()) : 0;
    if (mode == "greedy" && tokens < 1) {
        die("TOKENS must be at least 1");
    }
    size_t longest = 0;
    for (const auto &l : lines) {
        longest = std::max(longest, l.size());
    }
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = static_cast<uint32_t>(longest + tokens + 16);
    cp.n_batch = cp.n_ctx;
    cp.n_ubatch = cp.n_ctx;
    cp.n_seq_max = 1;
    cp.n_threads = threads;
    cp.n_threads_batch = threads;
    llama_context *ctx = llama_init_from_model(model, cp);
    if (ctx == nullptr) {
        die("llama_init_from_model failed");
    }

    if (mode == "score") {
        FILE *out = std::fopen(arg.c_str(), "wb");
        if (out == nullptr) {
            die(arg + ": cannot create");
        }
        size_t positions = 0;
        for (const auto &ids : lines) {
            feed(ctx, ids, true);
            for (size_t i = 0; i < ids.size(); ++i) {
                const float *l = logits_at(ctx, static_cast<int32_t>(i));
                if (std::fwrite(l, sizeof(float), vocab, out) != static_cast<size_t>(vocab)) {
                    die(arg + ": write failed");
                }
            }
            positions += ids.size();
        }
        if (std::fclose(out) != 0) {
            die(arg + ": write failed");
        }
        std::printf("{\"vocab\": %d, \"positions\": %zu}\n", vocab, positions);
    } else {
        std::printf("{\"vocab\": %d, \"generated\": [", vocab);
        for (size_t k = 0; k < lines.size(); ++k) {
            feed(ctx, lines[k], false);
            std::vector<llama_token> gen;
            llama_token next = argmax(logits_at(ctx, -1), vocab);
            for (int t = 0; t < tokens; ++t) {
                gen.push_back(next);
                if (t + 1 == tokens) {
                    break;
                }
                llama_batch one = llama_batch_get_one(&next, 1);
                if (llama_decode(ctx, one) != 0) {
                    die("llama_decode of a generated token failed");
                }
                next = argmax(logits_at(ctx, -1), vocab);
            }
            std::printf("%s[", k ? ", " : "");
            for (size_t i = 0; i < gen.size(); ++i) {
                std::printf("%s%d", i ? ", " : "", gen[i]);
            }
            std::printf("]");
        }
        std::printf("]}\n");
    }
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
