#pragma once
// The tokenizer as GGUF metadata (tokenizer.ggml.*), read from the files convert copies into an
// artifact: a SentencePiece .model (llama.cpp's "llama" tokenizer: pieces, scores, piece types
// and the special ids of its trainer spec) or GPT-2's vocab.json + merges.txt ("gpt2").
// SentencePiece's ModelProto is read with a small bounded protobuf walk (the fields llama.cpp
// takes), so the formats library does not depend on the tokenizers one.
#include <cstdint>
#include <string>
#include <vector>

namespace sf::gguf {

struct Vocab {
  std::string model;  // tokenizer.ggml.model: "llama" or "gpt2"
  std::string pre;    // tokenizer.ggml.pre, empty for none
  std::vector<std::string> tokens;
  std::vector<float> scores;     // empty when the kind has none (gpt2)
  std::vector<int32_t> types;    // TokenType values
  std::vector<std::string> merges;
  int64_t bos = -1, eos = -1, unk = -1, pad = -1;
  bool add_bos = false;
  bool add_space_prefix = true;  // SentencePiece's add_dummy_prefix
};

// From the artifact file names convert gives (tokenizer.model; vocab.json + merges.txt) and their
// source paths. Problems name the file.
Vocab read_sentencepiece_vocab(const std::string& path);
Vocab read_gpt2_vocab(const std::string& vocab_json, const std::string& merges_txt);

// llama.cpp takes n_vocab from the token list and requires the embedding to have that many rows:
// models padded past their tokenizer (nanoGPT's 50304, ChatGLM2's 65024) get unused "[PAD<id>]"
// tokens up to `rows`.
void pad_vocab(Vocab& v, int64_t rows);

}  // namespace sf::gguf
