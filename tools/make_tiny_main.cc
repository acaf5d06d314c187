// vlcache-make-tiny: writes a random tiny LLaVA checkpoint (see tools/make_tiny.h).
#include <CLI/CLI.hpp>
#include <cstdint>
#include <iostream>
#include <string>

#include "tools/make_tiny.h"

int main(int argc, char** argv) {
  CLI::App app{"Writes a random tiny LLaVA checkpoint in the Hugging Face layout."};
  std::string out_dir;
  vlc::tools::TinyOptions opts;
  app.add_option("--out", out_dir, "output directory (created when missing)")->required();
  app.add_option("--seed", opts.seed, "seed of the random weights")->required();
  app.add_option("--text-model", opts.text_model_type, "language model type")
      ->check(CLI::IsMember({"llama", "mistral"}))
      ->capture_default_str();
  app.add_flag("--new-layout", opts.new_key_layout,
               "write model.language_model.* keys (transformers >= 4.52) instead of "
               "language_model.model.*");
  app.add_option("--dtype", opts.dtype, "weight dtype on disk")
      ->check(CLI::IsMember({"F32", "F16", "BF16"}))
      ->capture_default_str();
  app.add_option("--shards", opts.num_shards, "number of safetensors shards")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--strategy", opts.vision_feature_select_strategy,
                 "vision_feature_select_strategy")
      ->check(CLI::IsMember({"default", "full"}))
      ->capture_default_str();
  app.add_option("--text-hidden", opts.text_hidden_size,
                 "language model hidden size (4 heads, 2 KV heads)")
      ->capture_default_str();
  app.add_option("--text-intermediate", opts.text_intermediate_size, "language model MLP size")
      ->capture_default_str();
  app.add_option("--text-layers", opts.text_layers, "language model layers")
      ->capture_default_str();
  app.add_option("--text-heads", opts.text_heads, "language model query heads")
      ->capture_default_str();
  app.add_option("--text-kv-heads", opts.text_kv_heads, "language model KV heads")
      ->capture_default_str();
  app.add_option("--text-vocab", opts.text_vocab_size,
                 "embedding rows; 0 = the tokenizer's pieces plus the image token. A larger size "
                 "pads the tokenizer with unused control pieces and puts the image token last")
      ->capture_default_str();
  app.add_option("--vision-hidden", opts.vision_hidden_size, "vision tower hidden size")
      ->capture_default_str();
  app.add_option("--vision-intermediate", opts.vision_intermediate_size, "vision tower MLP size")
      ->capture_default_str();
  app.add_option("--vision-layers", opts.vision_layers, "vision tower layers")
      ->capture_default_str();
  app.add_option("--vision-heads", opts.vision_heads, "vision tower heads")
      ->capture_default_str();
  app.add_option("--image-size", opts.image_size, "vision tower input side in pixels")
      ->capture_default_str();
  app.add_option("--patch-size", opts.patch_size, "vision tower patch side in pixels")
      ->capture_default_str();
  app.footer(
      "A LLaVA-1.5-7B-shaped checkpoint (random weights, 14 GB in bfloat16):\n"
      "  vlcache-make-tiny --out DIR --seed 1 --dtype BF16 --shards 4 --text-hidden 4096\n"
      "    --text-intermediate 11008 --text-layers 32 --text-heads 32 --text-kv-heads 32\n"
      "    --text-vocab 32064 --vision-hidden 1024 --vision-intermediate 4096 --vision-layers 24\n"
      "    --vision-heads 16 --image-size 336 --patch-size 14");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help is a ParseError too, with exit code 0; every real error exits 1.
    return app.exit(e) == 0 ? 0 : 1;
  }

  const auto status = vlc::tools::MakeTinyCheckpoint(out_dir, opts);
  if (!status.ok()) {
    std::cerr << "vlcache-make-tiny: " << status.message() << "\n";
    return 1;
  }
  std::cout << "wrote tiny llava checkpoint dir=" << out_dir << " seed=" << opts.seed
            << " text_model=" << opts.text_model_type
            << " layout=" << (opts.new_key_layout ? "new" : "old") << " dtype=" << opts.dtype
            << " shards=" << opts.num_shards << " strategy=" << opts.vision_feature_select_strategy
            << "\n";
  return 0;
}
